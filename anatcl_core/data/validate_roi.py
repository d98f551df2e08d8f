"""Checks of FreeSurfer Desikan tables (7 channels x 68 regions), per-subject ``.npy`` or per-split CSV rows.

Every table must be finite and non-negative (areas, volumes, thicknesses and rectified curvatures),
with thickness at most 5 mm (FreeSurfer's cap), a region's area at most 20,000 mm^2 and volume at
most 60,000 mm^3 (superior frontal, the largest, is ~10,000 / ~25,000); a channel that is all zero
is a missing channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anatcl_core.data import layout, resources
from anatcl_core.data.freesurfer import CHANNELS
from anatcl_core.data.problem import Problem

#: Upper bounds per Desikan channel (None: non-negative only), OpenBHB row order.
ROI_MAX = (20_000.0, 60_000.0, 5.0, 5.0, None, None, None)

ROI_SHAPE = (7, 68)


def check_roi(path: str | Path, participant_id: str | None = None,
              order: tuple[list[int], list[int]] | None = None) -> list[Problem]:  # fmt: skip
    """A per-subject FreeSurfer Desikan ``.npy``: see :func:`check_roi_table`.

    ``order`` is the root's ``(rows, cols)`` permutation to the canonical order
    (:func:`resources.table_order`); None keeps the file's order.
    """
    if not Path(path).is_file():
        return [Problem(str(path), participant_id, "missing file (expected a (7, 68) FreeSurfer Desikan table)")]
    try:
        table = resources.load_roi_file(path)
    except Exception as err:
        return [Problem(str(path), participant_id, f"cannot read ROI table ({type(err).__name__}: {err})")]
    if order is not None and table.shape == ROI_SHAPE:
        table = table[order[0]][:, order[1]]
    return check_roi_table(table, path, participant_id)


def check_roi_table(table: np.ndarray, where: str | Path, participant_id: str | None = None) -> list[Problem]:
    """A FreeSurfer Desikan table in canonical order: shape (7, 68), finite, channels present and in range."""
    problems: list[Problem] = []

    def add(message: str) -> None:
        problems.append(Problem(str(where), participant_id, message))

    if table.shape != ROI_SHAPE:
        add(f"ROI table of shape {table.shape}; expected {ROI_SHAPE} (FreeSurfer channels x regions)")
        return problems
    table = table.astype(np.float64)
    for row, (name, upper) in enumerate(zip(CHANNELS, ROI_MAX)):
        values = table[row]
        if not np.isfinite(values).all():
            add(f"channel {name}: {int((~np.isfinite(values)).sum())} NaN/Inf value(s); expected finite")
        elif not values.any():
            add(f"channel {name} is all zero: missing channel")
        elif values.min() < 0:
            add(f"channel {name} has negative values (min {values.min():.3g}); expected >= 0")
        elif upper is not None and values.max() > upper:
            add(f"channel {name} max {values.max():.4g} > {upper:g}: implausible for a Desikan region")
    return problems


def roi_checks(root: Path, subjects: list[tuple[str, str]]) -> list[Problem]:
    """Every subject's Desikan table, from the per-split CSVs when the root holds them, else per subject."""
    try:
        order = resources.table_order(root)
        folders = resources.csv_folders(root, sorted({s for _, s in subjects}) or layout.SPLITS)
        tables = {f: resources.read_tables(root, f) for f in folders or ()}
    except ValueError as err:  # ResourceError or an unreadable CSV: the message names the file
        return [Problem(str(root), None, str(err))]
    problems: list[Problem] = []
    for pid, split in subjects:
        if folders is None:
            problems += check_roi(layout.subject_file(root, split, pid, layout.DESIKAN_KIND), pid, order)
            continue
        folder = layout.SPLIT_FOLDER[split]
        table = tables[folder].get(pid, tables[folder].get(str(int(pid))) if pid.isdigit() else None)
        csv = resources.roi_csv_path(root, folder)
        if table is None:
            problems.append(Problem(str(csv), pid, "no row for this subject in the ROI CSV"))
        else:
            problems += check_roi_table(table, csv, pid)
    return problems


def is_roi_file(path: Path) -> bool:
    """Whether ``path`` is a readable 2-D ``.npy`` (a Desikan table rather than a map)."""
    if not (path.name.lower().endswith(".npy") and path.is_file()):
        return False
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 2
    except Exception:
        return False  # unreadable: reported by the volume checks

