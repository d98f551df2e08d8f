"""What kind of file a path names, before anything reads it.

A FIFO given as a map or a table would block the reader forever, and a character device such as
``/dev/zero`` would feed it without end; both must be refused from their ``stat``, never opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


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
