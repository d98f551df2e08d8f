"""Checkpoint files: loading without running pickled code, atomic saving, state-dict checks.

``torch.load(weights_only=False)`` executes whatever the pickle asks for, and a plain
``weights_only=True`` refuses the upstream files, which also pickle training options and objects of
the authors' own classes (REFERENCE §2). ``safe_load`` unpickles with PyTorch's own weights-only
unpickler (the one behind ``torch.load(weights_only=True)``), under
``torch.serialization.safe_globals`` with (:mod:`anatcl_core.model.allowlist`):

* a few inert standard types on top of torch's defaults: ``argparse.Namespace`` (upstream's
  options), numpy arrays / dtypes / scalars (no object dtype), pure paths, dates, ``frozenset``,
  ``slice``, ``defaultdict``; none of them allocates more than the pickle already holds;
* for the foreign classes upstream's files are known to pickle (``allowlist.FOREIGN_CLASSES``, by class
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

import io
import logging
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch import _weights_only_unpickler as weights_only

from anatcl_core.atomic import atomic_write
from anatcl_core.model.allowlist import SAFE_GLOBALS, UnsafeCheckpointError, placeholder, refused_globals

logger = logging.getLogger(__name__)

#: Largest pickle (``data.pkl``, inflated) read: the structure, never the tensors' bytes.
MAX_PICKLE_BYTES = 64 * 2**20
_CHUNK = 2**20


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely: corrupt, truncated or inconsistent."""


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the network (missing / unexpected keys, other shapes, bad values)."""


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
        The saved object; objects of ``allowlist.FOREIGN_CLASSES`` come back as ``Placeholder``.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references or calls a global outside the allow-list.
        CheckpointError: anything else wrong with the file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if not zipfile.is_zipfile(path):  # which lets BadZipFile out (a ZIP64 locator naming several disks)
            raise CheckpointError(f"{path}: not a torch zip checkpoint (legacy torch<1.6 files are not "
                                  "supported; re-save with a current torch)")
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            size = archive.getinfo(prefix + "data.pkl").file_size
            if size > MAX_PICKLE_BYTES:  # checked before anything is inflated
                raise CheckpointError(f"{path}: data.pkl inflates to {size} bytes; at most "
                                      f"{MAX_PICKLE_BYTES} expected (tensors live in their own records)")
            pickle_bytes = bytes(_read_exactly(archive, prefix + "data.pkl", size, path))  # CRC checked
            unsafe = refused_globals(path, pickle_bytes, SAFE_GLOBALS)
            stand_ins = [p for p in (placeholder(g, str(path)) for g in unsafe) if p is not None]
            refused = [g for g in unsafe if g not in {name for _, name in stand_ins}]
            if refused:
                raise UnsafeCheckpointError(
                    f"{path}: refusing to load: the pickle references {', '.join(refused)}, which is "
                    "not on the allow-list (it could run code or exhaust memory); nothing was executed")
            with torch.serialization.safe_globals(SAFE_GLOBALS + stand_ins):
                return _unpickle(pickle_bytes, archive, prefix, path)
    except CheckpointError:
        raise
    except UnsafeCheckpointError as err:  # raised by an allowed callable: name the file if it does not
        if str(path) in str(err):
            raise
        raise UnsafeCheckpointError(f"{path}: refusing to load: {err}; nothing was executed") from None
    except MemoryError:
        raise CheckpointError(f"{path}: the pickle asks for more memory than there is; refused") from None
    except (pickle.UnpicklingError, EOFError, struct.error) as err:  # struct: a cut BININT in torch's unpickler
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({_one_line(err)})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, RuntimeError, ValueError, TypeError,
            KeyError, IndexError, AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {_one_line(err)})") from None


def _one_line(err: BaseException, width: int = 200) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


def save_checkpoint(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` with ``torch.save`` atomically (:func:`anatcl_core.atomic.atomic_write`).

    What a trained model's file holds is :mod:`anatcl_core.model.trained`'s; keep ``obj`` to
    tensors, numpy arrays and plain containers so ``safe_load`` reads it back.
    """
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(obj, handle)  # a handle, not a name: the archive's inner name stays "archive"
        except RuntimeError as err:
            # a full disk inside torch's zip writer surfaces as "unexpected pos 30 vs 0" (its __exit__
            # fails too); the OSError it hides is what atomic_write names after the checkpoint
            if isinstance(err.__context__, OSError):
                raise err.__context__ from None
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
