"""The rules of the commands' arguments, checked before any file is read or model built.

The same declared constraints as ``params.yaml`` (:mod:`anatcl_core.config`): each command's
arguments are a pydantic dataclass (:class:`EmbedArgs`, :class:`ValidateArgs`) whose fields carry
their rule, and :func:`parse` turns a violation into one line naming the option
(``anatcl embed: --batch-size = 0: expected >= 1``). :func:`check_output` refuses an output path
that is not a regular file (a folder, a device, a FIFO), an input or the weights, and one whose
folder cannot be written, up front; every command that writes a file checks its output with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from anatcl_core.config import PARAMS_CONFIG, Positive, PositiveInt, format_error

T = TypeVar("T")


class ArgumentError(ValueError):
    """A command-line argument breaks its rule; the message names the option."""


def check_device(text: str) -> str:
    """``auto``, ``cpu`` or ``cuda[:N]`` with that GPU present; returns the text unchanged.

    Raises:
        ValueError: anything else (``tpu``, ``meta``, ``''``, ``cpu:7``, ``cuda:99``, no CUDA).
    """
    import torch  # only when a device is really checked

    expected = "expected auto, cpu, cuda or cuda:N"
    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"not a device; {expected}") from None
    if device.type == "cpu" and device.index not in (None, 0):
        raise ValueError(f"there is one CPU device; {expected}")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device type {device.type!r} cannot run the model; {expected}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError("CUDA is not available here; expected cpu or auto")
        if device.index is not None and device.index >= count:
            raise ValueError(f"this machine has {count} CUDA device(s): cuda:0..cuda:{count - 1}")
    return text


Device = Annotated[str, AfterValidator(check_device)]
NonEmptyPaths = Annotated[tuple[str, ...], Field(min_length=1)]


@pydantic.dataclasses.dataclass(frozen=True, config=PARAMS_CONFIG)
class EmbedArgs:
    """``anatcl embed`` options with their rules."""

    inputs: NonEmptyPaths
    weights: Annotated[str, Field(min_length=1)]
    out: Annotated[str, Field(min_length=1)]
    batch_size: PositiveInt = 4
    device: Device = "cpu"


@pydantic.dataclasses.dataclass(frozen=True, config=PARAMS_CONFIG)
class ValidateArgs:
    """``anatcl validate`` options with their rules."""

    paths: NonEmptyPaths
    voxel_mm: Positive | None = None


def parse(cls: type[T], args: argparse.Namespace, command: str) -> T:
    """The fields of ``cls`` taken from ``args``, every rule checked.

    Raises:
        ArgumentError: ``<command>: --option = value: expected ...``.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {name: getattr(args, name) for name in names}
    try:
        return TypeAdapter(cls).validate_python(values)
    except ValidationError as err:
        text = format_error(err, "\0")
        for name in names:  # ".batch_size" -> "--batch-size" (positional arguments keep their name)
            option = f"--{name.replace('_', '-')}" if name not in ("inputs", "paths") else name
            text = text.replace(f"\0.{name}", f"{command}: {option}")
        raise ArgumentError(text.replace("\0", f"{command}: ")) from None


def _writable_folder(folder: Path) -> str | None:
    """Why ``folder`` (created if missing) cannot receive a file, or None."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"folder {probe} is not writable"
    return None


def _special_kind(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file (a link is followed), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # not there yet (or a dangling link, which the rename replaces)
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def check_output(out: str | Path, inputs: Sequence[str | Path], suffixes: Sequence[str],
                 command: str) -> Path:
    """Refuse an output that is not a regular file, one of ``inputs``, the wrong kind, or not writable.

    The output is written beside itself and renamed over (:func:`anatcl_core.atomic.atomic_write`),
    so a device such as ``/dev/full`` would be replaced by a file (as root) and a FIFO by a file
    nobody reads: only a regular file, or a name not taken yet, is accepted.

    Args:
        out: the output file.
        inputs: every path the command reads (input files and folders, weights).
        suffixes: the accepted output suffixes, e.g. ``(".csv", ".parquet")``.

    Raises:
        ArgumentError: naming ``--out`` and the reason.
    """
    out = Path(out)
    where = f"{command}: --out {str(out)!r}"
    kind = _special_kind(out)
    if kind == "a folder":
        raise ArgumentError(f"{where}: is a folder; expected a file name ending in {'/'.join(suffixes)}")
    if kind:
        raise ArgumentError(f"{where}: is {kind}; expected a regular file or a new file name")
    resolved = out.resolve()
    for item in map(Path, inputs):
        if item.exists() and (item.resolve() == resolved or (out.exists() and os.path.samefile(item, out))):
            raise ArgumentError(f"{where}: is also an input ({item}); refusing to overwrite it")
    if out.suffix.lower() not in suffixes:
        raise ArgumentError(f"{where}: unknown output format; expected one of {tuple(suffixes)}")
    problem = _writable_folder(out.parent if str(out.parent) else Path("."))
    if problem:
        raise ArgumentError(f"{where}: cannot be written: {problem}")
    return out


def count_argument(option: str, zero: bool = False) -> Any:
    """An argparse ``type`` for ``auto`` or a positive count (``--jobs``; ``zero``: or 0), naming ``option``.

    ASCII digits, at most 18 (``int`` would also take ``"²"``-like digits and 5,000-digit numbers); the
    function carries a ``__name__``, so argparse never says "invalid <lambda> value".
    """
    from anatcl_core.cores import parse_count

    def count(text: str) -> int | str:
        if text == "auto":
            return text
        if zero and text == "0":
            return 0
        value = parse_count(text)
        if value is None:
            kind = "a non-negative" if zero else "a positive"
            raise argparse.ArgumentTypeError(f"{option} must be 'auto' or {kind} integer of at most 18 digits, "
                                             f"got {text[:40]!r}")
        return value

    count.__name__ = option.lstrip("-").replace("-", "_")
    return count


def gigabytes_argument(option: str) -> Any:
    """An argparse ``type`` for a positive, finite number of GB (``--memory-per-job``)."""

    def gigabytes(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{option} must be a positive number of GB, got {text[:40]!r}")
        return value

    gigabytes.__name__ = option.lstrip("-").replace("-", "_")
    return gigabytes
