"""What kind of file a path names, before anything reads it, and the readers' guarded reads.

A FIFO given as a map or a table would block the reader forever, and a character device such as
``/dev/zero`` would feed it without end; both must be refused from their ``stat``, never opened.

numpy, pandas, json and the decoders raise their own exceptions for a damaged file (a truncated
``.npy``: ``EOFError``; a latin-1 table: ``UnicodeDecodeError``; an empty CSV: pandas'
``EmptyDataError``), none naming the file. :func:`read_text`, :func:`read_json`, :func:`read_npy`
and :func:`read_csv` turn them into the caller's own error class, one line naming the file and
what was expected.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
#: What numpy raises for a damaged ``.npy`` / ``.npz`` (bad header, truncated data, broken zip records).
NUMPY_ERRORS = (ValueError, OSError, EOFError, SyntaxError, MemoryError, KeyError, NotImplementedError,
                RuntimeError, zipfile.BadZipFile, zlib.error,
                OverflowError, TypeError, tokenize.TokenError)  # memmap past int64; odd header dicts; a cut header
#: What pandas raises for a damaged table (ParserError / EmptyDataError / UnicodeDecodeError are ValueErrors).
PANDAS_ERRORS = (ValueError, TypeError, OSError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError)


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` (symbolic links followed) is not a regular file, or None if it is one.

    Returns:
        ``"missing file"`` when nothing is there (a dangling link included), ``"not a regular file
        (a FIFO)"`` and the like for any other kind, None for a regular file.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing file"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"not a regular file ({kind})"


def one_line(err: BaseException) -> str:
    """``Type: message`` of a library's exception on one line."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


def check_regular(path: Path, what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming ``path`` unless it is a regular file (:func:`not_regular`)."""
    reason = not_regular(path)
    if reason:
        raise error(f"{path}: {reason}; expected {what}")


def read_text(path: str | Path, what: str, error: type[Exception] = ValueError) -> str:
    """A regular file's UTF-8 text (a BOM dropped), or ``error`` naming it and ``what`` it should be."""
    path = Path(path)
    check_regular(path, what, error)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                    f"expected {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({one_line(err)}); expected {what}") from None


def read_json(path: str | Path, what: str, error: type[Exception] = ValueError):
    """A JSON file's value (:func:`read_text`); invalid or absurdly nested JSON raises ``error``."""
    text = read_text(path, what, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({one_line(err)}); expected {what}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply; expected {what}") from None


def read_npy(path: str | Path, what: str, error: type[Exception] = ValueError, mmap_mode: str | None = None):
    """A ``.npy`` array (or a ``.npz``'s arrays as a dict, read whole), never a pickle.

    Raises:
        error: not a regular file, or numpy cannot read it (truncated, bad header, broken zip),
            one line naming the file and ``what`` was expected.
    """
    path = Path(path)
    check_regular(path, what, error)
    try:
        loaded = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {key: loaded[key] for key in loaded.files}
        return loaded
    except NUMPY_ERRORS as err:
        raise error(f"{path}: cannot read ({one_line(err)}); expected {what}") from None


def read_csv(path: str | Path, what: str, error: type[Exception] = ValueError, **options) -> pd.DataFrame:
    """``pandas.read_csv(path, **options)`` of a regular file; what pandas refuses raises ``error``."""
    path = Path(path)
    check_regular(path, what, error)
    try:
        return pd.read_csv(path, **options)
    except PANDAS_ERRORS as err:
        raise error(f"{path}: cannot read ({one_line(err)}); expected {what}") from None
