"""Checkpoints that load without running pickled code, atomic saving, model rebuilding.

``torch.load(weights_only=False)`` executes whatever the pickle asks for, and
``weights_only=True`` refuses the upstream files, which also pickle objects of the authors' own
classes. ``safe_load`` reads the torch zip format itself (``<archive>/data.pkl`` plus one raw
record ``<archive>/data/<key>`` per storage) with an unpickler whose ``find_class`` hands out:

* allow-listed globals: tensor rebuild functions, dtypes, plain containers, ``OrderedDict``,
  numpy arrays / dtypes / scalars (no object dtype), ``argparse.Namespace``, pure paths, datetime;
* for globals from modules that exist to run code (``os``, ``subprocess``, ``builtins`` beyond
  plain types, ``importlib``, ...): an ``UnsafeCheckpointError`` before anything is called;
* for every other global: an inert ``Placeholder`` subclass that is never imported. Creating an
  instance (pickle's NEWOBJ, how ordinary objects are stored) only records the arguments and the
  state; *calling* it (pickle's REDUCE, how functions and custom reducers are invoked) raises
  ``UnsafeCheckpointError``. So nothing outside the allow-list is ever executed.
"""

from __future__ import annotations

import argparse
import codecs
import collections
import copyreg
import datetime
import logging
import os
import pathlib
import pickle
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

# Keys of checkpoint["config"] that describe the network (kwargs of models.build_model).
MODEL_CONFIG_KEYS = ("depth", "base_width", "norm", "projection_dim", "hidden_dim", "in_channels")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle names or calls a global outside the allow-list."""


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the network (missing / unexpected keys, other shapes)."""


class _PlaceholderMeta(type):
    def __call__(cls, *args, **kwargs):  # pickle REDUCE / INST with arguments: a call
        raise UnsafeCheckpointError(
            f"{cls._source}: refusing to load: the pickle calls {cls.pickled_module}."
            f"{cls.pickled_name}{args!r:.80}, which is not on the allow-list; nothing was executed")


class Placeholder(metaclass=_PlaceholderMeta):
    """Inert stand-in for an object of a class that was not imported.

    Attributes:
        pickled_module, pickled_name: where the original class lives.
        pickled_args: arguments given to ``__new__`` by the pickle.
        pickled_state: the state the original ``__setstate__`` would have received.
        pickled_items, pickled_entries: list items / dict entries (list or dict subclasses).
    Attribute access falls back to a dict state, so ``opts.lr`` works on a pickled options object.
    """

    pickled_module = pickled_name = _source = ""

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        for name, value in (("pickled_args", args), ("pickled_kwargs", kwargs),
                            ("pickled_state", None), ("pickled_items", []),
                            ("pickled_entries", {})):
            object.__setattr__(self, name, value)
        return self

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "pickled_state", state)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.pickled_entries[key] = value

    def append(self, item: Any) -> None:
        self.pickled_items.append(item)

    def extend(self, items: Any) -> None:
        self.pickled_items.extend(items)

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


class _StorageType:
    """What ``torch.FloatStorage`` etc. resolve to: just the dtype, nothing callable."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


class _LoadedStorage:
    """A storage read from the archive, as a flat tensor of its dtype."""

    def __init__(self, flat: torch.Tensor):
        self.flat = flat


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None) -> torch.Tensor:
    if not isinstance(storage, _LoadedStorage):
        raise pickle.UnpicklingError(f"tensor rebuild got {type(storage).__name__}, not a storage")
    tensor = storage.flat.as_strided(tuple(size), tuple(stride), int(storage_offset))
    return tensor.detach().requires_grad_(bool(requires_grad))


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None) -> nn.Parameter:
    return nn.Parameter(data, requires_grad=bool(requires_grad))


def _np_dtype(spec, align=False, copy=False) -> np.dtype:
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject:  # object arrays would hold arbitrary Python objects
        raise UnsafeCheckpointError(f"numpy dtype {spec!r} holds Python objects; refused")
    return dtype


def _np_reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise UnsafeCheckpointError(f"numpy array reconstruction of {cls!r} refused")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"numpy scalar of dtype {dtype!r} refused")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _encode(text, encoding="utf-8"):  # how protocol-2 pickles store bytes
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafeCheckpointError(f"_codecs.encode({type(text).__name__}, {encoding!r}) refused")
    return codecs.encode(text, encoding)


def _reconstructor(cls, base, state):  # protocol 0/1 objects
    if isinstance(cls, _PlaceholderMeta) or cls is argparse.Namespace:
        obj = cls.__new__(cls)
        if isinstance(obj, Placeholder):
            obj.__setstate__(state)
        elif state is not None:
            obj.__dict__.update(state)
        return obj
    raise UnsafeCheckpointError(f"copyreg._reconstructor of {cls!r} refused")


def _defaultdict(factory=None, *args):
    return collections.defaultdict(factory if factory in (list, dict, set, int, float) else None)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "device"): torch.device,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _np_dtype,
    ("pathlib", "PosixPath"): pathlib.PurePosixPath,
    ("pathlib", "PurePosixPath"): pathlib.PurePosixPath,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
    ("pathlib", "PureWindowsPath"): pathlib.PureWindowsPath,
}
_ALLOWED.update({("torch", name): getattr(torch, name) for name in dir(torch)
                 if isinstance(getattr(torch, name, None), torch.dtype)})
_ALLOWED.update({("builtins", t.__name__): t for t in (
    set, frozenset, list, dict, tuple, slice, complex, bytes, bytearray, int, float, str, bool,
    range, object)})
_ALLOWED.update({("datetime", t.__name__): t for t in (
    datetime.datetime, datetime.date, datetime.time, datetime.timedelta, datetime.timezone)})
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_module, "scalar")] = _np_scalar

# Modules whose globals exist to run code, touch files or processes: refused outright.
_DENIED_MODULES = frozenset("""
    os posix nt posixpath ntpath sys subprocess _posixsubprocess builtins __builtin__ shutil
    importlib runpy pty socket ctypes _ctypes pickle _pickle marshal types code codeop webbrowser
    multiprocessing signal io _io pathlib tempfile operator _operator functools inspect pdb bdb
    timeit asyncio threading _thread platform gc site sysconfig zipimport glob urllib http ftplib
    smtplib xmlrpc shelve dbm sqlite3 logging unittest doctest trace cProfile profile distutils
    setuptools pip venv ensurepip zipfile tarfile copyreg copy_reg codecs _codecs dill cloudpickle
    joblib
    yaml torch.hub torch.jit torch.serialization torch.utils.cpp_extension numpy.testing
    numpy.lib.npyio numpy.f2py numpy.distutils
""".split())


def _is_denied(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in _DENIED_MODULES for i in range(1, len(parts) + 1))


_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, read_record):
        super().__init__(file)
        self._source, self._read_record = source, read_record
        self._placeholders: dict[tuple[str, str], type] = {}
        self._storages: dict[str, _LoadedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)  # protocol-2 pickles name Python 2 modules
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if _is_denied(module):
            raise UnsafeCheckpointError(
                f"{self._source}: refusing to load: the pickle references {module}.{name}, which "
                "is not on the allow-list and can run code; nothing was executed")
        if key not in self._placeholders:
            logger.debug("%s: %s.%s becomes a placeholder", self._source, module, name)
            self._placeholders[key] = _PlaceholderMeta(
                name.rpartition(".")[2], (Placeholder,),
                {"pickled_module": module, "pickled_name": name, "_source": self._source})
        return self._placeholders[key]

    def persistent_load(self, pid: Any) -> _LoadedStorage:
        # pid = ("storage", storage type, key, location, numel), as torch.save writes it
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"{self._source}: unexpected persistent id {pid!r:.100}")
        _, storage_type, key, _location, numel = pid
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            raw = self._read_record(key)
            nbytes = numel * storage_type.dtype.itemsize
            if len(raw) < nbytes:
                raise pickle.UnpicklingError(f"{self._source}: storage {key} is truncated")
            flat = (torch.frombuffer(bytearray(raw[:nbytes]), dtype=storage_type.dtype)
                    if nbytes else torch.empty(0, dtype=storage_type.dtype))
            self._storages[key] = _LoadedStorage(flat)
        return self._storages[key]


def safe_load(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` zip checkpoint without executing pickled code; tensors on CPU.

    Args:
        path: file written by ``torch.save`` (torch >= 1.6 zip format).

    Returns:
        The saved object; objects of classes outside the allow-list come back as ``Placeholder``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch zip archive (legacy format) or a big-endian archive.
        UnsafeCheckpointError: the pickle references or calls a global outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch zip checkpoint (legacy torch<1.6 files are not "
                         "supported; re-save with a current torch)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one <archive>/data.pkl record, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in archive.namelist():
            byteorder = archive.read(prefix + "byteorder").decode()
            if byteorder != sys.byteorder:
                raise ValueError(f"{path}: {byteorder}-endian archive on a {sys.byteorder} machine")
        with archive.open(pickles[0]) as data:
            unpickler = _SafeUnpickler(data, str(path), lambda key: archive.read(f"{prefix}data/{key}"))
            return unpickler.load()


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` atomically: temp file in the same folder, then rename.

    Our checkpoints are {"model": state dict, "config": {key: value for MODEL_CONFIG_KEYS},
    "normalizer": plain dict, "epoch": int, "optimizer": state dict, ...}; keep them to tensors,
    numpy arrays and plain containers so ``safe_load`` reads them back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    module.load_state_dict(state_dict, strict=True)


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
    from anatcl_core.models import build_model  # models imports this module

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
