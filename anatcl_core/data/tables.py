"""The shape of a tab-separated table, checked before pandas reads it.

``pandas.read_csv`` forgives what a cohort table must not have: a file with a header and no rows
reads as an empty cohort (and validates as "no problems"), and a row with one field too many
silently turns the first column into the index, shifting every value one column to the right.
:func:`check_tsv` refuses both, naming the line.
"""

from __future__ import annotations

import csv
from pathlib import Path


class TableError(ValueError):
    """A table that is not a header plus rows of the header's width."""


def check_tsv(path: str | Path) -> int:
    """Check that ``path`` is UTF-8, has a header and >= 1 row, every row as wide as the header.

    Blank lines are ignored (as pandas does). Returns the number of rows.

    Raises:
        TableError: naming the file and, for a row of the wrong width, its line number.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TableError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                         f"{err.start})") from None
    reader = csv.reader(text.splitlines(), delimiter="\t")
    width, rows = None, 0
    try:
        for fields in reader:
            if not fields or fields == [""] * len(fields):
                continue
            if width is None:
                width = len(fields)
            elif len(fields) != width:
                raise TableError(f"{path}: line {reader.line_num}: {len(fields)} field(s); the header "
                                 f"has {width} (a missing or extra tab shifts the columns)")
            else:
                rows += 1
    except csv.Error as err:
        raise TableError(f"{path}: line {reader.line_num}: {err}") from None
    if width is None:
        raise TableError(f"{path}: empty file; expected a header line and one row per participant")
    if rows == 0:
        raise TableError(f"{path}: header only, no rows; expected one row per participant")
    return rows
