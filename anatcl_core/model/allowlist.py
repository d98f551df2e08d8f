"""What :func:`anatcl_core.model.checkpoint.safe_load` lets a pickle name: the allow-list and its stand-ins.

On top of torch's weights-only defaults: a few inert standard types (``argparse.Namespace``,
numpy arrays / dtypes / scalars without object dtype, pure paths, dates, ``frozenset``, ``slice``,
``defaultdict``), none of which allocates more than the pickle already holds; and for the foreign
classes upstream's files are known to pickle (:data:`FOREIGN_CLASSES`), an inert
:class:`Placeholder` that is never imported. Everything else is refused before anything is unpickled.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import pathlib
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Classes of the authors' own modules that upstream checkpoints pickle (REFERENCE §2).
FOREIGN_CLASSES = frozenset({"AgeEstimator"})


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle names or calls a global outside the allow-list."""


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


SAFE_GLOBALS = _safe_globals()

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


def placeholder(qualified: str, source: str) -> tuple[type, str] | None:
    """A stand-in class for ``module.Name`` if it is a known foreign class, else None."""
    module, _, name = qualified.rpartition(".")
    parts = module.split(".")
    if name not in FOREIGN_CLASSES or any(".".join(parts[:i]) in _DENIED_MODULES for i in range(1, len(parts) + 1)):
        return None
    stand_in = _PlaceholderMeta(name, (Placeholder,), {"pickled_module": module, "pickled_name": name,
                                                        "_source": source})
    return stand_in, qualified


#: Globals torch's weights-only unpickler allows that are refused here anyway:
#: ``bytearray(10**13)`` would allocate the memory it asks for (tests/test_bad_inputs_checkpoints.py).
REFUSED_DEFAULTS = frozenset({"builtins.bytearray"})


def refused_globals(path: Path, pickle_bytes: bytes, extra: list) -> list[str]:
    """Globals of the pickle outside torch's defaults + ``extra``, and :data:`REFUSED_DEFAULTS`."""
    with torch.serialization.safe_globals(extra):
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    named = {arg.replace("__builtin__ ", "builtins ").replace(" ", ".")  # protocol 2 names Python 2's
             for op, arg, _ in pickletools.genops(pickle_bytes) if op.name == "GLOBAL"}
    return sorted(unsafe | (named & REFUSED_DEFAULTS))
