"""The ``pretrain`` section of params.yaml: every method's definition and the recipe they share."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Annotated, Literal

from pydantic import Field

from anatcl_core.config import NonNegative, NonNegativeInt, Positive, PositiveInt, Threads, section
from anatcl_core.contrastive.objectives import Depth, MethodConfig
from anatcl_core.data.freesurfer import Channels
from anatcl_core.model.run import Run

#: A centre crop: ``upstream`` (121x128x121 at the data's voxel size), ``[x, y, z]`` or null.
Crop = Literal["upstream"] | tuple[PositiveInt, PositiveInt, PositiveInt] | None


@section
class PretrainConfig:
    """params.yaml ``pretrain`` (field = yaml key = keyword argument).

    ``run`` x ``seeds`` are the stage instances; ``methods`` defines every method, run or not
    (the ablation set stays defined). Every other key is the recipe shared by all methods.
    Every field is required: params.yaml is the one home of their values (a missing key is an
    error naming it).
    """

    methods: Annotated[dict[str, MethodConfig], Field(min_length=1)]
    run: Annotated[tuple[str, ...], Field(min_length=1)]
    seeds: Annotated[tuple[NonNegativeInt, ...], Field(min_length=1)]
    depth: Depth
    base_width: PositiveInt
    norm: Literal["batch", "instance", "group", "none"]
    projection_dim: PositiveInt
    hidden_dim: PositiveInt | None
    crop: Crop
    channels: Channels
    mapping: Literal["affine", "relu"]
    temperature: Positive
    sigma_years: Positive
    epochs: NonNegativeInt
    batch_size: Annotated[int, Field(ge=2)]
    learning_rate: Positive
    weight_decay: NonNegative
    lr_step_epochs: PositiveInt
    lr_gamma: Annotated[float, Field(gt=0, le=1)]
    image_dtype: Literal["float32", "float16"]
    num_threads: Threads

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

    def resolve(self, method: str, seed: int) -> Run:
        """The typed record of one run: ``method``'s overrides applied once, ``seed`` set.

        Raises:
            KeyError: if ``method`` is not defined under ``methods``.
        """
        recipe = {k: v for k, v in asdict(self.for_method(method)).items() if k not in ("methods", "run", "seeds")}
        return Run.from_config({**recipe, "method": method, "seed": int(seed),
                                "method_config": asdict(self.methods[method])}, f"pretrain.methods.{method}")
