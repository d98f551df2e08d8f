"""Check a cohort against the CAT12-VBM contract before anything is trained on it.

``anatcl validate PATH...`` takes what ``anatcl embed`` takes and OpenBHB roots: folders with
``participants.tsv``, downstream cohorts (``manifest.tsv`` or its folder), plain folders of maps
(their ``.nii`` / ``.nii.gz`` / ``.npy`` files, not recursive) and single files. Every
problem is one line naming the file, the subject and what was expected; the exit status is 1 if
there is any. The validator reads only; it writes nothing.

Limits on a modulated GM map (CAT12 ``mwp1``: GM probability in [0, 1] times the Jacobian of the
non-linear warp) and why:

* ``MIN_VALUE = -0.05``: spline resampling can ring slightly below zero; anything lower is not a
  probability map (z-scored images, raw T1 intensities with negative offsets).
* ``MAX_VALUE = 1.5``: modulation scales the probability by the local volume change, which keeps
  real maps below ~1.2; more means T1 intensities, percentages or a wrong scaling.
* ``COVERAGE_THRESHOLD = 0.1`` / ``MIN_COVERAGE = 0.02``: a GM map of a whole brain puts ~30 % of
  CAT12's box above 0.1; under 2 % is a failed segmentation, a mask of one region or an empty map.
* A map that looks smoothed (CAT12's ``s6mwp1`` instead of ``mwp1``) is logged as a warning naming
  the file, not counted as a problem (criterion and calibration: :mod:`anatcl_core.data.qc`).
* FreeSurfer Desikan tables (7, 68): finite, non-negative (areas, volumes, thicknesses and
  rectified curvatures), thickness at most 5 mm (FreeSurfer's cap), a region's area at most
  20,000 mm^2 and volume at most 60,000 mm^3 (superior frontal, the largest, is ~10,000 / ~25,000);
  a channel that is all zero is a missing channel.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anatcl_core.arguments import ArgumentError, ValidateArgs, parse
from anatcl_core.data import io, layout, qc, resources
from anatcl_core.data.manifest import manifest_file, read_manifest_raw, score_columns, task_columns
from anatcl_core.data.openbhb import REQUIRED_PARTICIPANT_COLUMNS, SEX_CODES
from anatcl_core.data.tables import TableError, check_tsv
from anatcl_core.data.freesurfer import CHANNELS

log = logging.getLogger(__name__)

MIN_VALUE = -0.05
MAX_VALUE = 1.5
COVERAGE_THRESHOLD = 0.1
MIN_COVERAGE = 0.02
CAT12_AXCODES = tuple(nib.aff2axcodes(layout.CAT12_AFFINE))  # ("L", "A", "S")
#: Upper bounds per Desikan channel (None: non-negative only), OpenBHB row order.
ROI_MAX = (20_000.0, 60_000.0, 5.0, 5.0, None, None, None)
ROI_SHAPE = (7, 68)


@dataclass(frozen=True)
class Problem:
    """One violation of the contract: the file, the subject (if any) and what was expected."""

    path: str
    participant_id: str | None
    message: str

    def __str__(self) -> str:
        who = f" [{self.participant_id}]" if self.participant_id is not None else ""
        return f"{self.path}{who}: {self.message}"


def _grid_hint(shape: tuple[int, ...]) -> str:
    voxel_mm = io.infer_voxel_mm(shape)
    return f" (that shape is CAT12's grid at {voxel_mm:g} mm)" if voxel_mm else ""


def _check_geometry(
    shape: tuple[int, ...], affine: np.ndarray | None, voxel_mm: float | None, add
) -> float | None:
    """Shape / voxel size / orientation against CAT12's grid; returns the volume's voxel size."""
    if affine is None:  # .npy: the shape is all there is
        if voxel_mm is not None:
            if shape != layout.grid_shape(voxel_mm):
                add(f"shape {shape}; expected {layout.grid_shape(voxel_mm)}, CAT12's grid at "
                    f"{voxel_mm:g} mm{_grid_hint(shape)}")  # fmt: skip
            return voxel_mm
        found = io.infer_voxel_mm(shape)
        if found is None:
            add(f"shape {shape} is no CAT12 grid; expected e.g. {layout.CAT12_SHAPE} at 1.5 mm or "
                f"{layout.grid_shape(4.5)} at 4.5 mm (pass --voxel-mm to fix one)")  # fmt: skip
        return found
    axcodes = tuple(nib.aff2axcodes(affine))
    if axcodes != CAT12_AXCODES:
        add(f"orientation {''.join(axcodes)}; expected {''.join(CAT12_AXCODES)} as CAT12's MNI grid "
            "(an axis is flipped or permuted)")  # fmt: skip
        return None
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.ptp(zooms) > 1e-3:
        add(f"voxel size {tuple(np.round(zooms, 4))} mm is anisotropic; expected isotropic CAT12 voxels")
        return None
    found = float(np.round(zooms[0], 4))
    if voxel_mm is not None and abs(found - voxel_mm) > 1e-3:
        add(f"voxel size {found:g} mm; expected {voxel_mm:g} mm")
        return None
    if shape != layout.grid_shape(found):
        add(f"shape {shape} with {found:g} mm voxels; expected {layout.grid_shape(found)}, CAT12's grid "
            f"at {found:g} mm{_grid_hint(shape)}")  # fmt: skip
        return None
    expected = layout.grid_affine(found)
    if not np.allclose(affine, expected, atol=1e-3 * found):
        add(f"affine origin {tuple(round(float(o), 2) for o in affine[:3, 3])} mm; expected "
            f"{tuple(float(o) for o in expected[:3, 3])} (CAT12's grid at {found:g} mm)")  # fmt: skip
        return None
    return found


def _check_values(volume: np.ndarray, add) -> None:
    """Finite, within the modulated-GM range, enough brain (limits in the module docstring)."""
    finite = np.isfinite(volume)
    n_bad = volume.size - int(np.count_nonzero(finite))
    if n_bad:
        add(f"{n_bad} NaN/Inf voxel(s); expected finite modulated GM values")
        return
    low, high = float(volume.min()) + 0.0, float(volume.max()) + 0.0  # + 0.0 prints -0 as 0
    if low == 0.0 and high == 0.0:
        add("all voxels are zero: empty GM map")
        return
    if low < MIN_VALUE or high > MAX_VALUE:
        add(f"intensity range [{low:.3g}, {high:.3g}]; expected a modulated GM map in "
            f"[{MIN_VALUE}, {MAX_VALUE}] (not raw T1 or rescaled intensities)")  # fmt: skip
        return
    coverage = float(np.count_nonzero(volume > COVERAGE_THRESHOLD)) / volume.size
    if coverage < MIN_COVERAGE:
        add(f"only {100 * coverage:.2f}% of voxels > {COVERAGE_THRESHOLD}; expected >= "
            f"{100 * MIN_COVERAGE:g}% (empty mask or failed segmentation)")  # fmt: skip


def check_volume(
    path: str | Path, participant_id: str | None = None, voxel_mm: float | None = None
) -> tuple[list[Problem], float | None]:
    """All checks of one GM map; returns ``(problems, voxel size found or None)``."""
    problems: list[Problem] = []

    def add(message: str) -> None:
        problems.append(Problem(str(path), participant_id, message))

    if not Path(path).is_file():
        add("missing file (expected a CAT12 GM map)")
        return problems, None
    try:
        volume, affine = io.load_volume(path, mmap=True)
    except io.VolumeError as err:
        add(str(err).removeprefix(f"{path}: "))
        return problems, None
    found = _check_geometry(tuple(volume.shape), affine, voxel_mm, add)
    values = np.asarray(volume, dtype=np.float32)
    _check_values(values, add)
    smoothed = qc.smoothing_warning(values, found, path) if not problems else None
    if smoothed:  # a warning, not a problem: the map is valid, only probably the wrong CAT12 output
        log.warning(smoothed if participant_id is None else f"{smoothed} [{participant_id}]")
    return problems, found


def check_roi(path: str | Path, participant_id: str | None = None,
              order: tuple[list[int], list[int]] | None = None) -> list[Problem]:  # fmt: skip
    """A per-subject FreeSurfer Desikan ``.npy``: see :func:`check_roi_table`.

    ``order`` is the root's ``(rows, cols)`` permutation to the canonical order
    (:func:`resources.table_order`); None keeps the file's order.
    """
    if not Path(path).is_file():
        return [Problem(str(path), participant_id, "missing file (expected a (7, 68) FreeSurfer Desikan table)")]
    try:
        table = np.load(path, allow_pickle=False)
    except Exception as err:
        return [Problem(str(path), participant_id, f"cannot read ROI table ({type(err).__name__}: {err})")]
    if table.ndim == 3 and table.shape[0] == 1:
        table = table[0]
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


def _roi_checks(root: Path, subjects: list[tuple[str, str]]) -> list[Problem]:
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


def _cohort_voxel_size(found: list[tuple[str, str, float | None]]) -> list[Problem]:
    """Volumes whose grid differs from the rest of their cohort's (one model input size)."""
    counts = Counter(v for _, _, v in found if v is not None)
    if len(counts) < 2:
        return []
    majority = counts.most_common(1)[0][0]
    return [
        Problem(path, pid, f"voxel size {v:g} mm; the rest of the cohort is at {majority:g} mm")
        for path, pid, v in found
        if v is not None and v != majority
    ]


def _read_table(path: Path) -> tuple[pd.DataFrame | None, list[Problem]]:
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


def _missing_columns(frame: pd.DataFrame, path: Path, required, documented) -> list[Problem]:
    missing = [c for c in required if c not in frame.columns]
    if not missing:
        return []
    return [Problem(str(path), None, f"missing column(s) {missing}; expected {list(documented)}")]


def _check_rows(frame: pd.DataFrame, path: Path) -> list[Problem]:
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


def validate_openbhb(
    root: str | Path, voxel_mm: float | None = None, progress: bool = True
) -> list[Problem]:
    """Every check on an OpenBHB-layout root: participants.tsv, then each subject's files."""
    root = Path(root)
    tsv = root / layout.PARTICIPANTS_FILE
    if not tsv.is_file():
        return [Problem(str(tsv), None, "missing file (expected participants.tsv of an OpenBHB root)")]
    frame, problems = _read_table(tsv)
    if frame is None:
        return problems
    problems += _missing_columns(frame, tsv, REQUIRED_PARTICIPANT_COLUMNS, layout.PARTICIPANTS_COLUMNS)
    if "participant_id" not in frame.columns:
        return problems
    problems += _check_rows(frame, tsv)
    for line, pid in zip(np.arange(len(frame)) + 2, frame["participant_id"].str.strip()):
        if pid and not _safe_id(pid):  # OpenBHB ids become folder and file names
            problems.append(Problem(str(tsv), None, f"line {line}: participant_id {pid!r}; expected letters, "
                                    "digits, '-', '_' or '.' (no path separators, no '..')"))
    subjects = []
    if "split" in frame.columns:
        for pid, split in zip(frame["participant_id"].str.strip(), frame["split"].str.strip()):
            if split not in layout.SPLITS:
                message = f"unknown split {split!r}; expected one of {list(layout.SPLITS)}"
                problems.append(Problem(str(tsv), pid, message))
            elif pid and _safe_id(pid):  # an unsafe id never becomes a path
                subjects.append((pid, split))
    found = []
    for pid, split in tqdm(subjects, desc=f"validate {root.name}", disable=not progress, leave=False):
        vbm = layout.subject_file(root, split, pid, layout.VBM_KIND)
        volume_problems, voxel = check_volume(vbm, pid, voxel_mm)
        problems += volume_problems
        found.append((str(vbm), pid, voxel))
    problems += _roi_checks(root, subjects)
    return problems + _cohort_voxel_size(found)


def _check_labels(frame: pd.DataFrame, path: Path) -> list[Problem]:
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


def _resolve(value: str, folder: Path) -> Path:
    path = Path(value.strip())
    return path if path.is_absolute() else folder / path


def validate_manifest(
    path: str | Path, voxel_mm: float | None = None, progress: bool = True
) -> list[Problem]:
    """Every check on a downstream cohort: columns and labels, then each image and ROI table."""
    path = manifest_file(path)
    if not path.is_file():
        return [Problem(str(path), None, "missing file (expected a manifest.tsv)")]
    frame, problems = _read_table(path)
    if frame is None:
        return problems
    problems += _missing_columns(frame, path, layout.MANIFEST_COLUMNS, layout.MANIFEST_COLUMNS)
    if "participant_id" not in frame.columns:
        return problems
    problems += _check_rows(frame, path) + _check_labels(frame, path)
    empty = pd.Series([""] * len(frame), index=frame.index)
    rows = list(zip(frame["participant_id"].str.strip(), frame.get("image", empty), frame.get("roi", empty)))
    found = []
    for pid, image, roi in tqdm(rows, desc=f"validate {path.parent.name}", disable=not progress, leave=False):
        if "image" in frame.columns and not image.strip():
            problems.append(Problem(str(path), pid, "empty image path; expected a CAT12 GM map"))
        elif image.strip():
            image_path = _resolve(image, path.parent)
            volume_problems, voxel = check_volume(image_path, pid, voxel_mm)
            problems += volume_problems
            found.append((str(image_path), pid, voxel))
        if roi.strip():
            problems += check_roi(_resolve(roi, path.parent), pid)
    return problems + _cohort_voxel_size(found)


def _ids(table: Path) -> list[str]:
    frame, _ = _read_table(table) if table.is_file() else (None, [])
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


def _is_roi_file(path: Path) -> bool:
    if not (path.name.lower().endswith(".npy") and path.is_file()):
        return False
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).ndim == 2
    except Exception:
        return False  # unreadable: reported by the volume checks


def _safe_id(pid: str) -> bool:
    try:
        layout.check_participant_id(pid)
    except ValueError:
        return False
    return True


def volume_files(folder: Path) -> list[Path]:
    """The ``.nii`` / ``.nii.gz`` / ``.npy`` files of ``folder``, sorted (not recursive)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and io.is_volume_file(p))


def validate_folder(folder: str | Path, voxel_mm: float | None = None, progress: bool = True) -> list[Problem]:
    """A plain folder of maps (what ``anatcl embed FOLDER`` reads): every map, one voxel size."""
    folder = Path(folder)
    files = volume_files(folder)
    if not files:
        return [Problem(str(folder), None, "folder holds no .nii/.nii.gz/.npy files, no participants.tsv "
                        "and no manifest.tsv")]
    problems, found = [], []
    for path in tqdm(files, desc=f"validate {folder.name}", disable=not progress, leave=False):
        volume_problems, voxel = check_volume(path, None, voxel_mm)
        problems += volume_problems
        found.append((str(path), None, voxel))
    return problems + _cohort_voxel_size(found)


def validate_paths(
    paths: Iterable[str | Path], voxel_mm: float | None = None, progress: bool = True
) -> list[Problem]:
    """Validate OpenBHB roots, manifests (or their folders), folders of maps and single files, then
    the overlap of pretraining and downstream subjects."""
    problems: list[Problem] = []
    roots, manifests = [], []
    for path in map(Path, paths):
        if path.name == layout.PARTICIPANTS_FILE or (path / layout.PARTICIPANTS_FILE).is_file():
            roots.append(path if path.is_dir() else path.parent)
            problems += validate_openbhb(roots[-1], voxel_mm, progress)
        elif path.suffix == ".tsv" or (path / layout.MANIFEST_FILE).is_file():
            manifests.append(path)
            problems += validate_manifest(path, voxel_mm, progress)
        elif path.is_dir():
            problems += validate_folder(path, voxel_mm, progress)
        elif _is_roi_file(path):
            problems += check_roi(path)
        elif io.is_volume_file(path) or not path.exists():
            problems += check_volume(path, None, voxel_mm)[0]
        else:
            message = "unknown file type; expected .nii, .nii.gz, .npy, participants.tsv or manifest.tsv"
            problems.append(Problem(str(path), None, message))
    return problems + check_overlap(roots, manifests)


def main(argv: Sequence[str] | None = None) -> int:
    """``anatcl validate PATH... [--voxel-mm V]``: one line per problem on stdout; 1 if any."""
    parser = argparse.ArgumentParser(
        prog="anatcl validate", description="Check cohorts against the CAT12-VBM contract (reads only)."
    )
    parser.add_argument(
        "paths", nargs="+", help="OpenBHB roots, manifest.tsv files or folders, .nii/.nii.gz/.npy files"
    )
    parser.add_argument("--voxel-mm", type=float, default=None, help="expected voxel size (default: inferred)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        parse(ValidateArgs, args, "anatcl validate")
    except ArgumentError as err:
        log.error("%s", err)
        return 2
    problems = validate_paths(args.paths, args.voxel_mm, progress=not args.no_progress)
    for problem in problems:
        sys.stdout.write(f"{problem}\n")  # the command's report
    sys.stderr.write(f"{len(problems)} problem(s)\n" if problems else "OK: no problems found\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
