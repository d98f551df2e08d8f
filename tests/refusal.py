"""Harness of the bad-input corpus (tests/test_bad_inputs*.py): what a clean refusal is.

A refusal is: a non-zero exit status (or the expected exception type), exactly one message line,
that line naming the input and the problem, no traceback, and the folder the case lives in
exactly as it was (nothing written, nothing overwritten, no temp file left).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from anatcl_core.cli import main as cli

SUMMARY_SUFFIX = " problem(s)"  # validate's closing count on stderr


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under ``root``: (mode, sha256 of the bytes or "dir")."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        digest = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = (path.stat().st_mode, digest)
    return out


def run_cli(argv: list[str], capsys, caplog) -> tuple[int, list[str]]:
    """``anatcl ARGV`` in-process; returns (status, message lines: stdout, stderr and log records)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    lines += [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    lines = [line for line in lines if not line.endswith(SUMMARY_SUFFIX)]
    return status, lines


def assert_refused(status: int, lines: list[str], names: str, problem: str) -> None:
    """Non-zero status; one line naming ``names`` (the input) and ``problem``; no traceback."""
    assert status != 0, f"accepted: {lines}"
    text = "\n".join(lines)
    assert "Traceback" not in text
    assert len(lines) == 1, f"expected one message line, got {lines}"
    assert names in lines[0], f"{names!r} not named in {lines[0]!r}"
    assert problem.lower() in lines[0].lower(), f"{problem!r} not said in {lines[0]!r}"


def assert_read_refused(build, read, error: type[BaseException], problem: str, root: Path) -> None:
    """``build(root)`` writes a damaged file and returns its path; ``read(root)`` must raise ``error``
    in one line that starts with that path and says ``problem``, leaving ``root`` as it was."""
    damaged = build(root)
    before = snapshot(root)
    with pytest.raises(error) as caught:
        read(root)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500, message
    assert message.startswith(f"{damaged}:") and problem in message, message
    assert snapshot(root) == before
