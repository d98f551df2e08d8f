"""The shape of a tab-separated table, checked before pandas reads it.

``pandas.read_csv`` forgives what a cohort table must not have: a file with a header and no rows
reads as an empty cohort (and validates as "no problems"), a row with one field too many silently
turns the first column into the index, shifting every value one column to the right, a second
``age`` column is renamed ``age.1`` (and which one is read depends on the reader), and an id with a
NUL or a newline in it is carried into every output. :func:`check_tsv` refuses all of these,
naming the line, and reads nothing that is not a regular file (a FIFO would block it).

Limits, so that memory does not grow with what a file claims (pandas needs several times a table's
size): :data:`MAX_TABLE_BYTES` per table and :data:`MAX_LINE_CHARS` per line. A cohort of 100,000
participants with twenty columns takes ~20 MB.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections import Counter
from pathlib import Path

from anatcl_core.data.files import check_regular, read_text

#: What a table file is expected to be, in refusals.
TABLE = "a tab-separated table"
#: Largest participants.tsv / manifest.tsv read (64 MiB).
MAX_TABLE_BYTES = 64 * 2**20
#: Longest line of such a table, in characters (1 MiB: a thousand columns of 1,000 characters).
MAX_LINE_CHARS = 2**20
#: Unicode categories refused in any cell: control characters (NUL, newline, ESC...) and line or
#: paragraph separators; none belongs in an id, a path or a label, and each breaks a line of output.
CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


class TableError(ValueError):
    """A table that is not a header plus rows of the header's width."""


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (:func:`~anatcl_core.data.files.read_text`), refused before reading
    when it is no regular file or larger than :data:`MAX_TABLE_BYTES`."""
    check_regular(path, TABLE, TableError)
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise TableError(f"{path}: {size} bytes; expected at most {MAX_TABLE_BYTES} ({MAX_TABLE_BYTES // 2**20} "
                         "MiB) for a participants or manifest table")
    return read_text(path, TABLE, TableError)


def _control_character(text: str) -> str | None:
    """The first control character (:data:`CONTROL_CATEGORIES`) of ``text``, or None."""
    return next((c for c in text if unicodedata.category(c) in CONTROL_CATEGORIES), None)


def _check_fields(path: Path, line: int, fields: list[str], header: list[str]) -> None:
    """No cell with a control character (the header's line included)."""
    for number, value in enumerate(fields):
        bad = _control_character(value)
        if bad is not None:
            name = header[number] if number < len(header) else None
            column = f"field {number + 1}" if name is None else name if name.isprintable() and len(name) <= 60 \
                else _shown(name)
            raise TableError(f"{path}: line {line}: {column} {_shown(value)} holds the control character "
                             f"{bad!r}; expected printable text")


def _shown(text: str) -> str:
    """``repr(text)`` cut to 60 characters: one line, whatever a cell holds (a stray quote can make a
    cell of the whole file, newlines included)."""
    shown = repr(text)
    return shown if len(shown) <= 60 else f"{shown[:50]}... ({len(text):,} characters)"


def _check_header(path: Path, header: list[str]) -> None:
    """Column names unique (pandas would rename a second ``age`` to ``age.1``)."""
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        raise TableError(f"{path}: line 1: duplicate column name(s) {repeated}; expected each column once")


def check_tsv(path: str | Path) -> int:
    """Check that ``path`` is a regular UTF-8 file within the limits, with a header of unique names
    and >= 1 row, every row as wide as the header, and no control character in any cell.

    Blank lines are ignored (as pandas does). Returns the number of rows.

    Raises:
        TableError: naming the file and, for a bad row, its line number.
    """
    path = Path(path)
    text = _read_text(path)
    # newline="": the csv module splits lines as pandas does (\n, \r\n, \r), quoted newlines kept
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header: list[str] | None = None
    rows, end = 0, 0
    try:
        for fields in reader:
            line, end = end + 1, reader.line_num  # a record with a quoted newline spans lines line..end
            if sum(map(len, fields)) + len(fields) > MAX_LINE_CHARS:
                raise TableError(f"{path}: line {line}: longer than {MAX_LINE_CHARS} characters; "
                                 "expected one participant per line")
            if not fields or fields == [""] * len(fields):
                continue
            _check_fields(path, line, fields, header or fields)
            if header is None:
                header = fields
                _check_header(path, header)
            elif len(fields) != len(header):
                raise TableError(f"{path}: line {line}: {len(fields)} field(s); the header "
                                 f"has {len(header)} (a missing or extra tab shifts the columns)")
            else:
                rows += 1
    except csv.Error as err:
        raise TableError(f"{path}: line {end + 1}: {err}") from None
    if header is None:
        raise TableError(f"{path}: empty file; expected a header line and one row per participant")
    if rows == 0:
        raise TableError(f"{path}: header only, no rows; expected one row per participant")
    return rows
