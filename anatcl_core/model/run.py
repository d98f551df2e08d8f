"""The run record: the recipe of one pretraining run (one method, one seed), resolved once and typed.

A :class:`Run` is built once from params.yaml's ``pretrain`` section, the method and the seed
(:meth:`anatcl_core.train.recipe.PretrainConfig.resolve`), consumed by the trainer and stored in
the checkpoint as ``checkpoint["config"]``: one flat plain dict (:meth:`Run.to_config`) holding the
network's keys (:data:`MODEL_CONFIG_KEYS`), the recipe's keys, ``method``, ``seed`` and
``method_config``. Every reader gets it back typed (:meth:`Run.from_config`), checkpoints written
before the record was typed included (their ``method_config`` spells ``denominator`` as
``method`` and ``anat_denominator`` as ``anat_method``).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, fields
from typing import Any

from anatcl_core.config import ConfigError, from_mapping
from anatcl_core.contrastive.objectives import MethodConfig
from anatcl_core.model.network import ContrastiveModel, build_model

#: Keys of ``checkpoint["config"]`` that describe the network (keyword arguments of build_model).
MODEL_CONFIG_KEYS = ("depth", "base_width", "norm", "projection_dim", "hidden_dim", "in_channels")
#: ``method_config`` keys of checkpoints written before the denominator fields were renamed.
_RENAMED_METHOD_KEYS = {"method": "denominator", "anat_method": "anat_denominator"}


#: build_model's keyword defaults: ModelSpec's, so that the network's defaults live in one place.
_BUILD_DEFAULTS = {name: p.default for name, p in inspect.signature(build_model).parameters.items()}


def _tuple_or_value(value: Any) -> Any:
    """JSON gives lists where the recipe holds tuples (``crop``, ``channels``)."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ModelSpec:
    """The network of a run: :func:`~anatcl_core.model.network.build_model`'s arguments.

    The defaults are read from build_model's signature (the paper's ResNet-18, one home), taken by a
    checkpoint that omits a key.
    """

    depth: str = _BUILD_DEFAULTS["depth"]
    base_width: int = _BUILD_DEFAULTS["base_width"]
    norm: str = _BUILD_DEFAULTS["norm"]
    projection_dim: int = _BUILD_DEFAULTS["projection_dim"]
    hidden_dim: int | None = _BUILD_DEFAULTS["hidden_dim"]
    in_channels: int = _BUILD_DEFAULTS["in_channels"]

    @classmethod
    def from_config(cls, config: dict, **overrides: Any) -> "ModelSpec":
        """The :data:`MODEL_CONFIG_KEYS` of a ``checkpoint["config"]`` (others ignored), then ``overrides``.

        Raises:
            ValueError: an override that is not a network key.
        """
        unknown = sorted(set(overrides) - set(MODEL_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown network overrides {unknown}; expected keys of {MODEL_CONFIG_KEYS}")
        return cls(**{**{k: v for k, v in config.items() if k in MODEL_CONFIG_KEYS}, **overrides})

    @classmethod
    def of(cls, model: ContrastiveModel) -> "ModelSpec":
        """The spec that rebuilds ``model`` (hidden_dim read from the head, so never None)."""
        encoder, head = model.encoder, model.head
        return cls(depth=encoder.depth, base_width=encoder.base_width, norm=encoder.norm,
                   projection_dim=head[2].out_features, hidden_dim=head[0].out_features,
                   in_channels=encoder.conv1.in_channels)

    def build(self) -> ContrastiveModel:
        """A freshly initialised network (from torch's global generator)."""
        return build_model(**asdict(self))


@dataclass(frozen=True)
class ObjectiveSpec:
    """The shared settings of the objectives: tau, the age RBF width, the anatomical mapping."""

    temperature: float
    sigma_years: float
    mapping: str


@dataclass(frozen=True)
class OptimiserSpec:
    """Adam, the step schedule and the budget (REFERENCE §1.4)."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    lr_step_epochs: int
    lr_gamma: float


@dataclass(frozen=True)
class DataSpec:
    """How the train split is read: the centre crop, the descriptor channels, the stored image dtype."""

    crop: str | tuple[int, int, int] | None
    channels: tuple[str, ...]
    image_dtype: str


@dataclass(frozen=True)
class Run:
    """One pretraining run, every setting resolved (the method's overrides applied).

    Attributes:
        method: the key of ``pretrain.methods``; seed: the run's seed.
        method_config: the method's own settings (objective, lambdas, denominators, augmentation).
        model, objective, optimiser, data: the recipe, by concern.
        num_threads: torch intra-op threads (``"auto"`` or a count).
    """

    method: str
    seed: int
    method_config: MethodConfig
    model: ModelSpec
    objective: ObjectiveSpec
    optimiser: OptimiserSpec
    data: DataSpec
    num_threads: int | str

    @property
    def epochs(self) -> int:
        """Epochs to train: the budget, or 0 for the untrained ``random`` baseline."""
        return 0 if self.method_config.objective == "random" else self.optimiser.epochs

    def to_config(self) -> dict:
        """The flat plain dict stored as ``checkpoint["config"]`` (tuples as lists, as JSON gives them)."""
        out: dict[str, Any] = {}
        for part in (self.model, self.data, self.objective, self.optimiser):
            out.update({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(part).items()})
        method_config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.method_config).items()}
        out.update(num_threads=self.num_threads, method=self.method, seed=int(self.seed), method_config=method_config)
        return out

    @classmethod
    def from_config(cls, config: dict, source: str = "checkpoint") -> "Run":
        """Read back :meth:`to_config`'s dict (also that of checkpoints written before ``Run`` existed).

        Raises:
            ValueError: a key of the record is missing (named, with ``source``), or the
                ``method_config`` entry does not validate.
        """
        parts = {ObjectiveSpec: "objective", OptimiserSpec: "optimiser", DataSpec: "data"}
        required = [f.name for part in parts for f in fields(part)] + ["num_threads", "method", "seed", "method_config"]
        missing = [k for k in required if k not in config]
        if missing:
            raise ValueError(f"{source}: config lacks the run record's key(s) {missing}")
        raw = {_RENAMED_METHOD_KEYS.get(k, k): v for k, v in dict(config["method_config"]).items()}
        try:
            method_config = from_mapping(MethodConfig, raw, f"{source}: config.method_config")
        except ConfigError as err:
            raise ValueError(str(err)) from None
        specs = {name: part(**{f.name: _tuple_or_value(config[f.name]) for f in fields(part)})
                 for part, name in parts.items()}
        return cls(method=str(config["method"]), seed=int(config["seed"]), method_config=method_config,
                   model=ModelSpec.from_config(config), num_threads=config["num_threads"], **specs)
