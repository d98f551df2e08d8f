"""Checkpoints that load without running pickled code, atomic saving, model rebuilding.

``torch.load(weights_only=False)`` executes whatever the pickle asks for, and a plain
``weights_only=True`` refuses the upstream files, which also pickle training options and objects of
the authors' own classes (REFERENCE §2). ``safe_load`` unpickles with PyTorch's own weights-only
unpickler (the one behind ``torch.load(weights_only=True)``), under
``torch.serialization.safe_globals`` with:

* a few inert standard types on top of torch's defaults: ``argparse.Namespace`` (upstream's
  options), numpy arrays / dtypes / scalars (no object dtype), pure paths, dates, ``frozenset``,
  ``slice``, ``defaultdict``; none of them allocates more than the pickle already holds;
* for the foreign classes upstream's files are known to pickle (:data:`FOREIGN_CLASSES`, by class
  name, in any module that does not exist to run code): an inert ``Placeholder`` that is never
  imported. Creating one (pickle's NEWOBJ) records the arguments and the state; *calling* it
  (REDUCE) raises ``UnsafeCheckpointError``.

Every other global is refused before anything is unpickled
(``torch.serialization.get_unsafe_globals_in_checkpoint``), so nothing outside this list runs.

The archive is read through :mod:`zipfile`, not torch's reader, so that every record is
bounded and checked as it streams: ``data.pkl`` at most :data:`MAX_PICKLE_BYTES`; each storage
record must hold exactly the bytes its tensor declares (checked on the zip header before
anything is inflated, then while reading) and match its CRC. Memory is therefore bounded by the
sizes the tensors declare. Every failure (not a zip, bad CRC, truncated pickle, a tensor outside
its storage, a record of the wrong size) is one :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import io
import logging
import os
import pathlib
import pickle
import pickletools
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch import _weights_only_unpickler as weights_only

from anatcl_core.atomic import atomic_write

logger = logging.getLogger(__name__)

# Keys of checkpoint["config"] that describe the network (kwargs of models.build_model).
MODEL_CONFIG_KEYS = ("depth", "base_width", "norm", "projection_dim", "hidden_dim", "in_channels")
#: Classes of the authors' own modules that upstream checkpoints pickle (REFERENCE §2).
FOREIGN_CLASSES = frozenset({"AgeEstimator"})
#: Largest pickle (``data.pkl``, inflated) read: the structure, never the tensors' bytes.
MAX_PICKLE_BYTES = 64 * 2**20
_CHUNK = 2**20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely: corrupt, truncated or inconsistent."""


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle names or calls a global outside the allow-list."""


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the network (missing / unexpected keys, other shapes, bad values)."""


class _PlaceholderMeta(type):
    def __call__(cls, *args, **kwargs):  # pickle REDUCE with arguments: a call
        raise UnsafeCheckpointError(
            f"{cls._source}: refusing to load: the pickle calls {cls.pickled_module}."
            f"{cls.pickled_name}{args!r:.80}, which is not on the allow-list; nothing was executed")


class Placeholder(metaclass=_PlaceholderMeta):
    """Inert stand-in for an object of a class that was not imported.

    Attributes:
        pickled_module, pickled_name: where the original class lives.
        pickled_args: arguments given to ``__new__`` by the pickle.
        pickled_state: the state the original ``__setstate__`` would have received.
    Attribute access falls back to a dict state, so ``opts.lr`` works on a pickled options object.
    """

    pickled_module = pickled_name = _source = ""

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        for name, value in (("pickled_args", args), ("pickled_kwargs", kwargs), ("pickled_state", None)):
            object.__setattr__(self, name, value)
        return self

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "pickled_state", state)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name.startswith("pickled_"):
            raise AttributeError(name)
        state = object.__getattribute__(self, "pickled_state")
        for part in state if isinstance(state, tuple) else (state,):
            if isinstance(part, dict) and name in part:
                return part[name]
        raise AttributeError(f"placeholder for {self.pickled_module}.{self.pickled_name} "
                             f"has no pickled attribute {name!r}")

    def __repr__(self) -> str:
        return f"<Placeholder {self.pickled_module}.{self.pickled_name}>"


def _np_dtype(spec, align=False, copy=False) -> np.dtype:
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject:  # object arrays would hold arbitrary Python objects
        raise UnsafeCheckpointError(f"numpy dtype {spec!r} holds Python objects; refused")
    return dtype


def _np_reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray or tuple(shape) != (0,):  # numpy pickles (0,), then sets the real data
        raise UnsafeCheckpointError(f"numpy array reconstruction of {cls!r} with shape {shape!r:.40} refused")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"numpy scalar of dtype {dtype!r} refused")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _defaultdict(factory=None, *args):
    return collections.defaultdict(factory if factory in (set,) else None)


def _safe_globals() -> list:
    """What ``safe_load`` allows on top of torch's defaults: (object, name as pickled) pairs."""
    pairs: list[tuple[Any, str]] = [
        (argparse.Namespace, "argparse.Namespace"), (_defaultdict, "collections.defaultdict"),
        (np.ndarray, "numpy.ndarray"), (_np_dtype, "numpy.dtype"),
        (pathlib.PurePosixPath, "pathlib.PosixPath"), (pathlib.PurePosixPath, "pathlib.PurePosixPath"),
        (pathlib.PureWindowsPath, "pathlib.WindowsPath"), (pathlib.PureWindowsPath, "pathlib.PureWindowsPath"),
    ]
    # Not list, range, str, ...: a REDUCE of an allowed callable is a call, and list(range(10**12))
    # would allocate what it asks for. frozenset and slice only take what the pickle already holds.
    pairs += [(t, f"builtins.{t.__name__}") for t in (frozenset, slice)]
    pairs += [(t, f"datetime.{t.__name__}") for t in (datetime.datetime, datetime.date, datetime.time,
                                                       datetime.timedelta, datetime.timezone)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        pairs += [(_np_reconstruct, f"{module}._reconstruct"), (_np_scalar, f"{module}.scalar")]
    dtype_classes = {type(np.dtype(c)) for c in np.typecodes["All"] if c != "O"}
    pairs += [(c, f"numpy.dtypes.{c.__name__}") for c in dtype_classes]
    return pairs


_SAFE_GLOBALS = _safe_globals()

# Modules whose globals exist to run code, touch files or processes: never a placeholder.
_DENIED_MODULES = frozenset("""
    os posix nt posixpath ntpath sys subprocess _posixsubprocess builtins __builtin__ shutil
    importlib runpy pty socket ctypes _ctypes pickle _pickle marshal types code codeop webbrowser
    multiprocessing signal io _io pathlib tempfile operator _operator functools inspect pdb bdb
    timeit asyncio threading _thread platform gc site sysconfig zipimport glob urllib http ftplib
    smtplib xmlrpc shelve dbm sqlite3 logging unittest doctest trace cProfile profile distutils
    setuptools pip venv ensurepip zipfile tarfile copyreg copy_reg codecs _codecs dill cloudpickle
    joblib yaml torch numpy
""".split())


def _placeholder(qualified: str, source: str) -> tuple[type, str] | None:
    """A stand-in class for ``module.Name`` if it is a known foreign class, else None."""
    module, _, name = qualified.rpartition(".")
    parts = module.split(".")
    if name not in FOREIGN_CLASSES or any(".".join(parts[:i]) in _DENIED_MODULES for i in range(1, len(parts) + 1)):
        return None
    stand_in = _PlaceholderMeta(name, (Placeholder,), {"pickled_module": module, "pickled_name": name,
                                                        "_source": source})
    return stand_in, qualified


def _archive_prefix(archive: zipfile.ZipFile, path: Path) -> str:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: expected one <archive>/data.pkl record, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder")[:16].decode(errors="replace")
        if byteorder != sys.byteorder:
            raise CheckpointError(f"{path}: {byteorder}-endian archive on a {sys.byteorder} machine")
    return prefix


def _read_exactly(archive: zipfile.ZipFile, name: str, nbytes: int, path: Path) -> bytearray:
    """Record ``name``, which must inflate to exactly ``nbytes`` bytes (CRC checked on the way)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: record {name} is missing") from None
    if info.file_size != nbytes:
        raise CheckpointError(f"{path}: record {name} holds {info.file_size} bytes; its tensor "
                              f"storage declares {nbytes}")
    buffer = bytearray(nbytes)
    view, done = memoryview(buffer), 0
    with archive.open(info) as record:
        while done < nbytes:
            n = record.readinto(view[done:done + _CHUNK])
            if not n:
                raise CheckpointError(f"{path}: record {name} is truncated ({done} of {nbytes} bytes)")
            done += n
        if record.read(1):
            raise CheckpointError(f"{path}: record {name} inflates beyond its declared {nbytes} bytes")
    return buffer


class _StorageLoader:
    """``persistent_load`` of the weights-only unpickler: storages read from the zip, bounded."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path):
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def __call__(self, pid: Any) -> torch.storage.TypedStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r:.100}")
        _, storage_type, key, _location, numel = pid
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else getattr(storage_type, "dtype", None)
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.path}: persistent id names no storage type ({storage_type!r:.60})")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self.storages:
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            raw = _read_exactly(self.archive, f"{self.prefix}data/{key}", nbytes, self.path)
            untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if nbytes else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


#: Globals torch's weights-only unpickler allows that are refused here anyway:
#: ``bytearray(10**13)`` would allocate the memory it asks for (tests/test_bad_inputs_checkpoints.py).
_REFUSED_DEFAULTS = frozenset({"builtins.bytearray"})


def _refused_globals(path: Path, pickle_bytes: bytes, extra: list) -> list[str]:
    """Globals of the pickle outside torch's defaults + ``extra``, and :data:`_REFUSED_DEFAULTS`."""
    with torch.serialization.safe_globals(extra):
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    named = {arg.replace("__builtin__ ", "builtins ").replace(" ", ".")  # protocol 2 names Python 2's
             for op, arg, _ in pickletools.genops(pickle_bytes) if op.name == "GLOBAL"}
    return sorted(unsafe | (named & _REFUSED_DEFAULTS))


def _unpickle(pickle_bytes: bytes, archive: zipfile.ZipFile, prefix: str, path: Path) -> Any:
    data = io.BytesIO(pickle_bytes)
    unpickler = weights_only.Unpickler(data, encoding="utf-8")
    unpickler.persistent_load = _StorageLoader(archive, prefix, path)
    obj = unpickler.load()
    if data.read(1):
        raise CheckpointError(f"{path}: data.pkl has bytes after the pickle's end")
    return obj


def safe_load(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` zip checkpoint without executing pickled code; tensors on CPU.

    Args:
        path: file written by ``torch.save`` (torch >= 1.6 zip format).

    Returns:
        The saved object; objects of :data:`FOREIGN_CLASSES` come back as ``Placeholder``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references or calls a global outside the allow-list.
        CheckpointError: anything else wrong with the file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a torch zip checkpoint (legacy torch<1.6 files are not "
                              "supported; re-save with a current torch)")
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            size = archive.getinfo(prefix + "data.pkl").file_size
            if size > MAX_PICKLE_BYTES:  # checked before anything is inflated
                raise CheckpointError(f"{path}: data.pkl inflates to {size} bytes; at most "
                                      f"{MAX_PICKLE_BYTES} expected (tensors live in their own records)")
            pickle_bytes = bytes(_read_exactly(archive, prefix + "data.pkl", size, path))  # CRC checked
            unsafe = _refused_globals(path, pickle_bytes, _SAFE_GLOBALS)
            stand_ins = [p for p in (_placeholder(g, str(path)) for g in unsafe) if p is not None]
            refused = [g for g in unsafe if g not in {name for _, name in stand_ins}]
            if refused:
                raise UnsafeCheckpointError(
                    f"{path}: refusing to load: the pickle references {', '.join(refused)}, which is "
                    "not on the allow-list (it could run code or exhaust memory); nothing was executed")
            with torch.serialization.safe_globals(_SAFE_GLOBALS + stand_ins):
                return _unpickle(pickle_bytes, archive, prefix, path)
    except CheckpointError:
        raise
    except UnsafeCheckpointError as err:  # raised by an allowed callable: name the file if it does not
        if str(path) in str(err):
            raise
        raise UnsafeCheckpointError(f"{path}: refusing to load: {err}; nothing was executed") from None
    except MemoryError:
        raise CheckpointError(f"{path}: the pickle asks for more memory than there is; refused") from None
    except (pickle.UnpicklingError, EOFError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({_one_line(err)})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, ValueError, TypeError,
            KeyError, IndexError, AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {_one_line(err)})") from None


def _one_line(err: BaseException, width: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` atomically (:func:`anatcl_core.atomic.atomic_write`).

    Our checkpoints are {"model": state dict, "config": {key: value for MODEL_CONFIG_KEYS},
    "normalizer": plain dict, "epoch": int, "optimizer": state dict, ...}; keep them to tensors,
    numpy arrays and plain containers so ``safe_load`` reads them back.
    """
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)  # a handle, not a name: the archive's inner name stays "archive"


def load_state_dict_checked(module: nn.Module, state_dict: dict, source: str = "state dict") -> None:
    """``module.load_state_dict`` after checking keys and shapes, with a readable error.

    A ``module.`` prefix on every key (``nn.DataParallel``) is stripped.

    Raises:
        CheckpointMismatchError: lists missing keys, unexpected keys and shape mismatches.
    """
    if state_dict and all(str(k).startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k}: {tuple(getattr(state_dict[k], 'shape', ()))} != {tuple(v.shape)}"
             for k, v in expected.items()
             if k in state_dict and (not isinstance(state_dict[k], torch.Tensor)
                                     or state_dict[k].shape != v.shape)]
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(
            f"{source} does not fit {type(module).__name__}: missing keys {missing}; "
            f"unexpected keys {unexpected}; wrong shapes or types {wrong}")
    check_weight_values(state_dict, expected, source)
    module.load_state_dict(state_dict, strict=True)


def check_weight_values(state_dict: dict, expected: dict, source: str) -> None:
    """Floating weights must be stored as floating point and be finite (no NaN / Inf).

    ``load_state_dict`` would silently cast int32 weights (all-zero features) and keep NaNs
    (features of empty cells).

    Raises:
        CheckpointMismatchError: naming the first offending entries.
    """
    not_float = [f"{k} ({state_dict[k].dtype})" for k, v in expected.items()
                 if v.is_floating_point() and not state_dict[k].is_floating_point()]
    if not_float:
        raise CheckpointMismatchError(f"{source}: non-floating-point weights {not_float[:3]}"
                                      f"{' ...' if len(not_float) > 3 else ''}; expected float tensors")
    bad = [k for k, v in expected.items() if v.is_floating_point()
           and not bool(torch.isfinite(state_dict[k]).all())]
    if bad:
        raise CheckpointMismatchError(f"{source}: NaN or infinite values in {len(bad)} weight tensor(s), "
                                      f"e.g. {bad[:3]}; expected finite weights")


def model_config(model: nn.Module) -> dict:
    """The ``checkpoint["config"]`` entries that rebuild ``model`` (a models.ContrastiveModel)."""
    encoder, head = model.encoder, model.head
    return {"depth": encoder.depth, "base_width": encoder.base_width, "norm": encoder.norm,
            "in_channels": encoder.conv1.in_channels, "hidden_dim": head[0].out_features,
            "projection_dim": head[2].out_features}


def load_model(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a ``ContrastiveModel`` from a checkpoint written by our trainer, in eval mode.

    Reads ``checkpoint["config"]`` keys in ``MODEL_CONFIG_KEYS`` (depth, base_width, norm,
    projection_dim, hidden_dim, in_channels; others, e.g. training settings, are ignored; absent
    ones take ``build_model``'s defaults), applies ``overrides`` (same keys), builds the network and
    loads ``checkpoint["model"]``.
    """
    return model_from_checkpoint(safe_load(path), str(path), **overrides)


def model_from_checkpoint(checkpoint: Any, source: str, **overrides: Any) -> nn.Module:
    """:func:`load_model` on a checkpoint already read by :func:`safe_load` (``source`` names it in errors)."""
    from anatcl_core.model.network import build_model  # models imports this module

    unknown = sorted(set(overrides) - set(MODEL_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"load_model: unknown overrides {unknown}; expected {MODEL_CONFIG_KEYS}")
    if not isinstance(checkpoint, dict) or not {"model", "config"} <= set(checkpoint):
        raise KeyError(f"{source}: expected a dict with 'model' and 'config' entries")
    config = {k: v for k, v in dict(checkpoint["config"]).items() if k in MODEL_CONFIG_KEYS}
    config.update(overrides)
    model = build_model(**config)
    load_state_dict_checked(model, checkpoint["model"], source=source)
    return model.eval()
