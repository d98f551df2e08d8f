"""Every output file is written one way: a temp file beside it, then one rename.

A whole folder (the synthetic cohort) is written the same way: :func:`atomic_dir`.

:func:`atomic_write` yields a temporary path in the target's folder; when the block ends
without an exception the file is flushed to disk, given the mode a plain ``open(path, "w")``
would give (``0o666 & ~umask``: 0644 under the usual 022, so a results folder shared with a group
stays readable to it; ``mkstemp``'s private 0600 would not) and renamed over the target in one
step. On any exception (``KeyboardInterrupt`` included, and SIGTERM once
:func:`exit_on_signals` turned it into one) the temp file is removed and the target is untouched.

A process killed outright (SIGKILL, power loss) can leave a temp file behind. Temp names carry
the writer's pid (``.<name>.<pid>.<random>.tmp``); the next write of the same target removes those
whose process no longer runs, so a leftover is ignored and then replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible, so it is never changed even briefly)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove temp files of ``path`` left by writers that no longer run; returns them."""
    path = Path(path)
    removed = []
    for candidate in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        parts = candidate.name[len(path.name) + 2:].split(".")
        if len(parts) == 3 and parts[0].isdigit() and not _alive(int(parts[0])):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


class WriteError(OSError):
    """An ``OSError`` while writing an output (ENOSPC, EIO, EROFS...), its message naming the output.

    A full disk reports ``[Errno 28] No space left on device`` with no file name (or the temp
    file's, which is gone by then); this names the file the user asked for.
    """

    def __str__(self) -> str:
        code = errno.errorcode.get(self.errno, self.errno)
        return f"{self.filename}: cannot write ({self.strerror}, {code}); the previous file, if any, is unchanged"


def _write_error(path: Path, err: OSError, temporary: Path | None = None) -> OSError:
    """``err`` as a :class:`WriteError` of ``path``, unless it names another file (an input)."""
    if err.filename not in (None, str(temporary), str(path), str(path.parent)) or isinstance(err, WriteError):
        return err
    return WriteError(err.errno, err.strerror or str(err), str(path))


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Context manager: write to the yielded temp path; it replaces ``path`` on success.

    Args:
        path: the final file; its folder is created if needed.
        mode: file mode (default ``0o666 & ~umask``).

    Yields:
        The temporary path (same folder, so the rename is atomic).

    Raises:
        WriteError: an ``OSError`` while creating, filling, syncing or renaming the temp file,
            named after ``path`` (an ``OSError`` naming another file, an input, passes unchanged).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
        os.close(fd)
    except OSError as err:
        raise _write_error(path, err) from err
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, (0o666 & ~current_umask()) if mode is None else mode)
        os.replace(tmp, path)
    except OSError as err:
        raise _write_error(path, err, tmp) from err
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """:func:`atomic_write`, opened: yields the temp file's handle (``mode`` ``"wb"`` or ``"w"``).

    For writers that take a handle (``np.save``, ``np.savez``, ``Figure.savefig`` with
    ``format=``): given the temp path they would add their own suffix or guess the format from it.
    The handle is closed before the file is synced and renamed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"{path}: atomic_open mode {mode!r}; expected 'w' or 'wb'")
    with atomic_write(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`); returns ``path``."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Context manager: fill the yielded temp folder; it becomes ``path`` on success.

    The temp folder (``.<name>.partial-<pid>``, a sibling, so the rename is atomic) is removed on any
    exception; ``path`` is never half-written. One left by a writer killed outright (SIGKILL) is
    removed by the next call for the same ``path``.

    Raises:
        FileExistsError: ``path`` exists (a folder is not replaced: remove it or choose another).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: output folder already exists; remove it or choose another")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    for leftover in path.parent.glob(f".{path.name}.partial-*"):  # this pid's, or a killed writer's
        pid = leftover.name.rpartition("-")[2]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        try:
            os.replace(temporary, path)
        except OSError as err:
            raise _write_error(path, err, temporary) from err
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


@contextlib.contextmanager
def folder_set_aside(path: str | Path) -> Iterator[None]:
    """Context manager: an existing folder ``path`` is moved aside while the block writes a new one.

    On success the old folder is removed; on any exception (a refused value, Ctrl-C, SIGTERM) what
    the block left at ``path`` is removed and the old folder comes back, so ``path`` is either the
    new folder whole or the old one untouched (``make data-update``: :mod:`anatcl_core.synth.ensure`).
    """
    path = Path(path)
    if not path.exists():
        yield
        return
    aside = path.with_name(f".{path.name}.old-{os.getpid()}")
    os.replace(path, aside)
    try:
        yield
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(aside, path)
        raise
    shutil.rmtree(aside)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temp-file cleanup) runs."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(f"signal {signum}")


def exit_on_signals() -> None:
    """In a command's main thread: SIGTERM raises :class:`Terminated` (SIGINT already raises)."""
    with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
        signal.signal(signal.SIGTERM, _raise_terminated)
