"""Check a cohort against the CAT12-VBM contract before anything is trained on it.

``anatcl validate PATH...`` takes what ``anatcl embed`` takes and OpenBHB roots: folders with
``participants.tsv``, downstream cohorts (``manifest.tsv`` or its folder), plain folders of maps
(their ``.nii`` / ``.nii.gz`` / ``.npy`` files, not recursive) and single files. Every
problem is one line naming the file, the subject and what was expected; the exit status is 1 if
there is any. The validator reads only; it writes nothing.

The checks live beside this module, by what they check: one GM map and its limits
(:mod:`anatcl_core.data.validate_volume`), FreeSurfer Desikan tables
(:mod:`anatcl_core.data.validate_roi`), the cohort tables and the pretraining/downstream overlap
(:mod:`anatcl_core.data.validate_tables`); this module walks a cohort and runs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anatcl_core.arguments import ArgumentError, ValidateArgs, parse
from anatcl_core.data import io, layout
from anatcl_core.data.manifest import manifest_file
from anatcl_core.data.openbhb import REQUIRED_PARTICIPANT_COLUMNS
from anatcl_core.data.problem import Problem
from anatcl_core.data.validate_roi import check_roi, is_roi_file, roi_checks
from anatcl_core.data.validate_tables import (check_labels, check_overlap, check_rows, missing_columns, read_table,
                                              safe_id)
from anatcl_core.data.validate_volume import check_volume, volume_files

log = logging.getLogger(__name__)


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


def validate_openbhb(
    root: str | Path, voxel_mm: float | None = None, progress: bool = True
) -> list[Problem]:
    """Every check on an OpenBHB-layout root: participants.tsv, then each subject's files."""
    root = Path(root)
    tsv = root / layout.PARTICIPANTS_FILE
    if not tsv.exists():  # a FIFO or a device: read_table says so
        return [Problem(str(tsv), None, "missing file (expected participants.tsv of an OpenBHB root)")]
    frame, problems = read_table(tsv)
    if frame is None:
        return problems
    problems += missing_columns(frame, tsv, REQUIRED_PARTICIPANT_COLUMNS, layout.PARTICIPANTS_COLUMNS)
    if "participant_id" not in frame.columns:
        return problems
    problems += check_rows(frame, tsv)
    for line, pid in zip(np.arange(len(frame)) + 2, frame["participant_id"].str.strip()):
        if pid and not safe_id(pid):  # OpenBHB ids become folder and file names
            problems.append(Problem(str(tsv), None, f"line {line}: participant_id {pid!r}; expected letters, "
                                    "digits, '-', '_' or '.' (no path separators, no '..')"))
    subjects = []
    if "split" in frame.columns:
        for pid, split in zip(frame["participant_id"].str.strip(), frame["split"].str.strip()):
            if split not in layout.SPLITS:
                message = f"unknown split {split!r}; expected one of {list(layout.SPLITS)}"
                problems.append(Problem(str(tsv), pid, message))
            elif pid and safe_id(pid):  # an unsafe id never becomes a path
                subjects.append((pid, split))
    found = []
    for pid, split in tqdm(subjects, desc=f"validate {root.name}", disable=not progress, leave=False):
        vbm = layout.subject_file(root, split, pid, layout.VBM_KIND)
        volume_problems, voxel = check_volume(vbm, pid, voxel_mm)
        problems += volume_problems
        found.append((str(vbm), pid, voxel))
    problems += roi_checks(root, subjects)
    return problems + _cohort_voxel_size(found)


def _resolve(value: str, folder: Path) -> Path:
    """A manifest cell as a path, relative ones taken from the manifest's folder."""
    path = Path(value.strip())
    return path if path.is_absolute() else folder / path


def validate_manifest(
    path: str | Path, voxel_mm: float | None = None, progress: bool = True
) -> list[Problem]:
    """Every check on a downstream cohort: columns and labels, then each image and ROI table."""
    path = manifest_file(path)
    if not path.exists():  # a FIFO or a device: read_table says so
        return [Problem(str(path), None, "missing file (expected a manifest.tsv)")]
    frame, problems = read_table(path)
    if frame is None:
        return problems
    problems += missing_columns(frame, path, layout.MANIFEST_COLUMNS, layout.MANIFEST_COLUMNS)
    if "participant_id" not in frame.columns:
        return problems
    problems += check_rows(frame, path) + check_labels(frame, path)
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
        if path.name == layout.PARTICIPANTS_FILE or (path / layout.PARTICIPANTS_FILE).exists():
            roots.append(path if path.is_dir() else path.parent)
            problems += validate_openbhb(roots[-1], voxel_mm, progress)
        elif path.suffix == ".tsv" or (path / layout.MANIFEST_FILE).exists():
            manifests.append(path)
            problems += validate_manifest(path, voxel_mm, progress)
        elif path.is_dir():
            problems += validate_folder(path, voxel_mm, progress)
        elif is_roi_file(path):
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
