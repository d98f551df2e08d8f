"""Checks of the cohort tables: ``participants.tsv`` and ``manifest.tsv`` columns, rows and labels,
and the subjects a downstream cohort shares with a pretraining one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data import layout
from anatcl_core.data.manifest import manifest_file, score_columns, task_columns
from anatcl_core.data.openbhb import SEX_CODES
from anatcl_core.data.problem import Problem
from anatcl_core.data.tables import TableError, check_tsv


def read_table(path: Path) -> tuple[pd.DataFrame | None, list[Problem]]:
    """A TSV with every cell as text (ids keep leading zeros; empty cells are "")."""
    try:
        check_tsv(path)
    except TableError as err:
        return None, [Problem(str(path), None, str(err).removeprefix(f"{path}: "))]
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values={}), []
    except Exception as err:
        return None, [Problem(str(path), None, f"cannot read table ({type(err).__name__}: {err})")]


def _number(text: str) -> float:
    """The cell as a float, NaN if it is not a number."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def missing_columns(frame: pd.DataFrame, path: Path, required, documented) -> list[Problem]:
    """One problem listing the ``required`` columns the table lacks (and the ``documented`` ones), or none."""
    missing = [c for c in required if c not in frame.columns]
    if not missing:
        return []
    return [Problem(str(path), None, f"missing column(s) {missing}; expected {list(documented)}")]


def check_rows(frame: pd.DataFrame, path: Path) -> list[Problem]:
    """Ids present and unique; age a number in [0, 120]; sex 0/1 or M/F; site not empty."""
    problems = []

    def add(pid: str | None, message: str) -> None:
        problems.append(Problem(str(path), pid, message))

    ids = frame["participant_id"].str.strip()
    for line in np.flatnonzero(ids == "") + 2:  # the header is line 1
        add(None, f"line {line}: empty participant_id")
    for pid, rows in ids[ids != ""].groupby(ids).groups.items():
        if len(rows) > 1:
            add(pid, f"duplicate participant_id (lines {[int(r) + 2 for r in rows]}); expected unique ids")
    empty = pd.Series([""] * len(frame), index=frame.index)
    columns = (frame.get(c, empty) for c in ("age", "sex", "site"))
    for pid, age, sex, site in zip(ids, *columns):
        if "age" in frame and not 0 <= _number(age) <= 120:  # False for NaN too
            add(pid, f"age {age!r}; expected a number in [0, 120] years")
        if "sex" in frame and sex.strip().lower().removesuffix(".0") not in SEX_CODES:
            add(pid, f"sex {sex!r}; expected 0/1 or M/F")
        if "site" in frame and not site.strip():
            add(pid, "empty site; expected a site name or code")
    return problems


def check_labels(frame: pd.DataFrame, path: Path) -> list[Problem]:
    """``dx_*`` in {1, 0, empty}; ``score_*`` numeric or empty."""
    problems = []
    ids = frame["participant_id"].str.strip()
    for column in task_columns(frame):
        for pid, value in zip(ids, frame[column].str.strip()):
            if value not in ("", "0", "1", "0.0", "1.0"):
                message = f"{column} {value!r}; expected 1 (case), 0 (control) or empty"
                problems.append(Problem(str(path), pid, message))
    for column in score_columns(frame):
        for pid, value in zip(ids, frame[column].str.strip()):
            if value and not np.isfinite(_number(value)):
                problems.append(Problem(str(path), pid, f"{column} {value!r}; expected a number or empty"))
    return problems


def safe_id(pid: str) -> bool:
    """Whether an id can become a folder and file name (:func:`anatcl_core.data.layout.check_participant_id`)."""
    try:
        layout.check_participant_id(pid)
    except ValueError:
        return False
    return True


def _ids(table: Path) -> list[str]:
    """The non-empty participant ids of a table (none if it is missing or unreadable)."""
    frame, _ = read_table(table) if table.is_file() else (None, [])
    if frame is None or "participant_id" not in frame.columns:
        return []
    return [pid for pid in frame["participant_id"].str.strip() if pid]


def check_overlap(roots: Sequence[str | Path], manifests: Sequence[str | Path]) -> list[Problem]:
    """Downstream subjects also in a pretraining cohort (ids compared without a ``sub-`` prefix)."""
    problems = []
    for root in roots:
        pretraining = {pid.removeprefix("sub-") for pid in _ids(Path(root) / layout.PARTICIPANTS_FILE)}
        for manifest in map(manifest_file, manifests):
            for pid in _ids(manifest):
                if pid.removeprefix("sub-") in pretraining:
                    message = (f"also in the pretraining cohort {root}: pretraining/downstream overlap "
                               "(the encoder saw this subject)")  # fmt: skip
                    problems.append(Problem(str(manifest), pid, message))
    return problems

