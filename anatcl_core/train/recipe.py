"""The ``pretrain`` section of params.yaml: every method's definition and the recipe they share."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Annotated, Literal

from pydantic import Field

from anatcl_core.config import NonNegative, NonNegativeInt, Positive, PositiveInt, Threads, section
from anatcl_core.contrastive.objectives import Depth, MethodConfig
from anatcl_core.data.freesurfer import Channels

#: A centre crop: ``upstream`` (121x128x121 at the data's voxel size), ``[x, y, z]`` or null.
Crop = Literal["upstream"] | tuple[PositiveInt, PositiveInt, PositiveInt] | None


@section
class PretrainConfig:
    """params.yaml ``pretrain`` (field = yaml key = keyword argument).

    ``run`` x ``seeds`` are the stage instances; ``methods`` defines every method, run or not
    (the ablation set stays defined). Every other key is the recipe shared by all methods.
    """

    methods: Annotated[dict[str, MethodConfig], Field(min_length=1)]
    run: Annotated[tuple[str, ...], Field(min_length=1)]
    seeds: Annotated[tuple[NonNegativeInt, ...], Field(min_length=1)] = (0, 1, 2)
    depth: Depth = "resnet18"
    base_width: PositiveInt = 64
    norm: Literal["batch", "instance", "group", "none"] = "batch"
    projection_dim: PositiveInt = 128
    hidden_dim: PositiveInt | None = None
    crop: Crop = "upstream"
    channels: Channels = ("CT", "GMV", "SA")
    mapping: Literal["affine", "relu"] = "affine"
    temperature: Positive = 0.1
    sigma_years: Positive = 2.0
    epochs: NonNegativeInt = 300
    batch_size: Annotated[int, Field(ge=2)] = 32
    learning_rate: Positive = 1e-4
    weight_decay: NonNegative = 5e-5
    lr_step_epochs: PositiveInt = 10
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = 0.9
    image_dtype: Literal["float32", "float16"] = "float32"
    num_threads: Threads = "auto"

    def __post_init__(self) -> None:
        missing = [m for m in self.run if m not in self.methods]
        if missing:
            raise ValueError(f"run lists {missing}, not defined under methods ({sorted(self.methods)})")

    def for_method(self, method: str) -> "PretrainConfig":
        """This config with ``method``'s own recipe overrides applied (idempotent).

        Raises:
            KeyError: if ``method`` is not defined under ``methods``.
        """
        if method not in self.methods:
            raise KeyError(f"unknown method {method!r}; defined: {sorted(self.methods)}")
        return replace(self, **self.methods[method].overrides())

    def recipe(self, method: str, seed: int) -> dict:
        """Plain dict of everything that determines a run (saved in the checkpoint)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("methods", "run", "seeds")}
        out.update(method=method, seed=int(seed), method_config=asdict(self.methods[method]))
        return json.loads(json.dumps(out))  # tuples -> lists, plain types only
