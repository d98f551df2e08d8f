"""Trained models end to end: saving one, loading any (ours or upstream's), inspecting a file.

Our trained model's file (``checkpoint.pt``, :func:`save_trained`) holds ``{"model": state dict,
"config": Run.to_config(), ...the trainer's state...}``; ``config`` comes back as a typed
:class:`~anatcl_core.model.run.Run` (files whose ``config`` holds only the network's keys give
``run=None``). Upstream's released files are ``{"model": state dict, ...}`` without ``config``:
their network is the ResNet of :data:`~anatcl_core.model.network.RESNET_SPECS` whose shapes they
fit. :func:`load_trained` is the one function that loads a trained model (every other loader goes
through it); :func:`inspect_checkpoint` checks a file against the architecture it claims without
building one (on the meta device). Files are read only through
:func:`~anatcl_core.model.checkpoint.safe_load`, so no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anatcl_core.model.checkpoint import check_weight_values, load_state_dict_checked, safe_load, save_checkpoint
from anatcl_core.model.network import RESNET_SPECS, ContrastiveModel
from anatcl_core.model.run import ModelSpec, Run

FORMATS = ("upstream", "anatcl")
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """A registry, download or checkpoint does not meet what was expected."""


@dataclass(frozen=True)
class TrainedModel:
    """A trained network and what its file says about it.

    Attributes:
        model: the network with the file's weights (a fresh one in eval mode, or the module given
            to :func:`load_trained` as ``into``).
        format: ``"anatcl"`` (ours: a ``config`` entry) or ``"upstream"``.
        run: the run that trained it (None: upstream's file, or ours without a run record).
        checkpoint: everything the file holds (normaliser, epoch, history, ...).
    """

    model: nn.Module
    format: str
    run: Run | None
    checkpoint: dict


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found: format, architecture and hash of a local file."""

    path: Path
    sha256: str
    format: str
    depth: str
    feature_dim: int
    n_tensors: int


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def model_config(model: ContrastiveModel) -> dict:
    """The ``checkpoint["config"]`` entries that rebuild ``model`` (its :class:`ModelSpec`)."""
    return asdict(ModelSpec.of(model))


def _unshared(obj: Any) -> Any:
    """A copy whose plain values are new objects shared with nothing (tensors kept as they are).

    Pickle writes an object seen twice as a back-reference, so which floats the optimiser and
    the scheduler happen to share would change the bytes of a checkpoint; after a resume they share
    different ones. Rebuilding every scalar (tuples become lists, as JSON would make them) makes
    an interrupted-and-resumed run write the same bytes as an uninterrupted one. Device tensors
    are copied to the CPU (CPU tensors are kept as they are).
    """
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.cpu()  # GPU runs write CPU checkpoints
    if isinstance(obj, dict):
        return {_unshared(k): _unshared(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_unshared(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return json.loads(json.dumps(obj))
    raise TypeError(f"unexpected {type(obj).__name__} in a checkpoint")


def save_trained(path: str | os.PathLike, model: nn.Module, run: Run, **state: Any) -> None:
    """Write ``model``'s weights, ``run``'s record and the trainer's ``state`` atomically, bytes reproducible.

    Args:
        path: the file (``checkpoint.pt``). model: the trained network (device tensors are copied
            to the CPU). run: its record, stored as ``config``.
        state: the trainer's entries (``normalizer``, ``epoch``, ``optimizer``, ``history``, ...):
            plain values and tensors only.
    """
    save_checkpoint(_unshared({"model": model.state_dict(), "config": run.to_config(), **state}), path)


def _model_state(checkpoint: Any, source: str) -> dict:
    """The ``"model"`` state dict of a loaded file, ``module.`` prefixes (DataParallel) kept.

    Raises:
        KeyError: the file holds no ``"model"`` state dict.
    """
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise KeyError(f"{source}: expected a dict with a 'model' state dict, found {found}")
    return checkpoint["model"]


def _unprefixed(state: dict) -> dict:
    """``state`` with the ``module.`` prefix of ``nn.DataParallel`` keys dropped."""
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _candidates(checkpoint: dict) -> tuple[str, dict[str, ModelSpec]]:
    """The file's format and the network(s) it may hold: ours names one, upstream's any depth."""
    config = checkpoint.get("config")
    if isinstance(config, dict):
        spec = ModelSpec.from_config(config)
        return "anatcl", {spec.depth: spec}
    return "upstream", {depth: ModelSpec(depth=depth) for depth in RESNET_SPECS}


def _fit(state: dict, fmt: str, candidates: dict[str, ModelSpec], source: str) -> ModelSpec:
    """The candidate network whose state dict has exactly ``state``'s keys and shapes.

    Raises:
        WeightsError: none fits (a few missing / unexpected keys and wrong shapes named).
        CheckpointMismatchError: it fits but holds non-float or non-finite weights.
    """
    state = _unprefixed(state)
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    for spec in candidates.values():
        with torch.device("meta"):  # shapes and dtypes only, no memory, no init cost
            meta = spec.build().state_dict()
        expected = {k: tuple(v.shape) for k, v in meta.items()}
        if shapes == expected and len(state) == len(expected):
            check_weight_values(state, meta, source)  # no int32 / NaN weights
            return spec
    missing = sorted(set(expected) - set(shapes))[:5]
    unexpected = sorted(set(state) - set(expected))[:5]
    wrong = [f"{k} {shapes[k]} != {v}" for k, v in expected.items() if k in shapes and shapes[k] != v][:3]
    raise WeightsError(f"{source}: {fmt}-format state dict of {len(state)} entries fits no "
                       f"{'/'.join(candidates)} network (e.g. missing {missing}, unexpected "
                       f"{unexpected}, wrong shapes {wrong})")


def load_trained(path: str | os.PathLike, *, into: nn.Module | None = None, **overrides: Any) -> TrainedModel:
    """Load a trained model from our checkpoint or upstream's file (read once, with ``safe_load``).

    Ours: the network of ``config`` (its :data:`~anatcl_core.model.run.MODEL_CONFIG_KEYS`, absent
    ones at build_model's defaults) with ``overrides`` applied; upstream's: the depth whose shapes
    the weights fit.

    Args:
        path: the file. into: load the weights into this module instead (upstream's ``AnatCL``);
            nothing is built and its mode is left as it is. overrides: network keys (ours).

    Raises:
        KeyError: no ``"model"`` state dict. ValueError: an override that is not a network key,
            or a run record that does not read back. WeightsError: upstream weights that fit no
            depth. CheckpointMismatchError: weights that do not fit the network.
        UnsafeCheckpointError, CheckpointError: see ``safe_load``.
    """
    source = str(path)
    checkpoint = safe_load(path)
    state = _model_state(checkpoint, source)
    config = checkpoint.get("config")
    run = Run.from_config(config, source) if isinstance(config, dict) and "method" in config else None
    fmt, candidates = _candidates(checkpoint)
    if into is None:
        spec = next(iter(candidates.values())) if fmt == "anatcl" else _fit(state, fmt, candidates, source)
        into = ModelSpec.from_config(asdict(spec), **overrides).build().eval()
    load_state_dict_checked(into, state, source=source)
    return TrainedModel(into, fmt, run, checkpoint)


def load_model(path: str | os.PathLike, **overrides: Any) -> ContrastiveModel:
    """The network of a trained model's file, in eval mode (:func:`load_trained`)."""
    return load_trained(path, **overrides).model


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Load ``path`` with ``safe_load`` and check its state dict fits the architecture it claims.

    Upstream format (``{"model": state dict}``, no ``"config"``): keys and shapes must be those of
    ``AnatCL(model=depth)`` for one depth of ``RESNET_SPECS``. Ours (``"config"`` present): those of
    its :class:`~anatcl_core.model.run.ModelSpec`.

    Raises:
        UnsafeCheckpointError: the pickle references code (nothing is run).
        WeightsError: no ``"model"`` state dict, or keys / shapes that fit no architecture.
    """
    path = Path(path)
    checkpoint = safe_load(path)
    try:
        state = _model_state(checkpoint, str(path))
    except KeyError as err:
        raise WeightsError(err.args[0]) from None
    fmt, candidates = _candidates(checkpoint)
    spec = _fit(state, fmt, candidates, str(path))
    feature_dim = int(_unprefixed(state)["head.0.weight"].shape[1])  # the projection head's input
    return CheckpointInfo(path, sha256_file(path), fmt, spec.depth, feature_dim, len(state))
