"""Where things live on disk: OpenBHB's per-subject layout and the downstream manifest contract.

The embedded synthetic cohort is written in exactly these layouts, so the readers that serve it
serve a local OpenBHB copy and a user's CAT12 outputs unchanged.

Pretraining cohort (OpenBHB, Hugging Face ``benoit-dufumier/openBHB`` layout)::

    <root>/participants.tsv
    <root>/{train,val}/derivatives/sub-<id>/ses-1/sub-<id>_preproc-<kind>.npy
    <root>/{train,val}/derivatives/freesurfer_roi/desikan_roi_features.csv   (current release)
    <root>/resource/...                     names, GM template, atlas (:mod:`anatcl_core.data.resources`)

``train`` holds the ``train`` split; ``val`` holds ``internal_test`` and ``external_test`` (the
``split`` column of ``participants.tsv`` tells which). Kinds: :data:`VBM_KIND` (modulated GM map,
``(1, 121, 145, 121)`` at 1.5 mm) and :data:`DESIKAN_KIND` (FreeSurfer table ``(7, 68)``, in older
copies; the current release holds the tables as the per-split CSVs instead).

Downstream cohort (what a CAT12 user has)::

    <root>/manifest.tsv     participant_id, image, age, sex, site, roi, dx_<task>..., score_<name>...

``image`` and ``roi`` are paths relative to the manifest's folder (or absolute). ``dx_<task>`` is
1 for a case, 0 for a control and empty when the subject is not in that task.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

#: Columns of OpenBHB's ``participants.tsv``, in its order.
PARTICIPANTS_COLUMNS: tuple[str, ...] = (
    "participant_id", "study", "sex", "age", "site", "siteXacq", "diagnosis", "tiv", "csfv",
    "gmv", "wmv", "magnetic_field_strength", "acquisition_setting", "split",
)  # fmt: skip

SPLITS: tuple[str, ...] = ("train", "internal_test", "external_test")
SPLIT_FOLDER: dict[str, str] = {"train": "train", "internal_test": "val", "external_test": "val"}

VBM_KIND = "cat12vbm_desc-gm_T1w"
DESIKAN_KIND = "freesurfer_desc-desikan_ROI"

#: CAT12's 1.5 mm MNI152 grid (OpenBHB's VBM geometry) and its affine (voxel -> mm).
CAT12_SHAPE: tuple[int, int, int] = (121, 145, 121)
CAT12_VOXEL_MM = 1.5
CAT12_AFFINE = np.array(
    [
        [-1.5, 0.0, 0.0, 90.0],
        [0.0, 1.5, 0.0, -126.0],
        [0.0, 0.0, 1.5, -72.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
#: Upstream AnatCL's input: OpenBHB's grid cropped along the second spatial axis, ``[:, 8:136, :]``
#: at 1.5 mm (145 -> 128, start (145 - 128) // 2 = 8), what third-party users of the released
#: weights feed; :func:`upstream_crop` gives it at any voxel size.
UPSTREAM_INPUT_SHAPE: tuple[int, int, int] = (121, 128, 121)

PARTICIPANTS_FILE = "participants.tsv"
MANIFEST_FILE = "manifest.tsv"

#: The cohorts of a ``data/`` folder (what ``make repro`` generates and ``data.dvc`` versions) and
#: the folder each lives in: the OpenBHB root, then the folders of the two manifests. Only the
#: cohort stage reads them; every later stage reads its arrays (:mod:`anatcl_core.data.arrays`).
COHORT_DIRS: dict[str, str] = {"openbhb": "openbhb", "downstream": "downstream", "travelling": "travelling"}
#: Cohorts a ``data/`` folder must hold (the travelling heads are optional).
REQUIRED_COHORTS: tuple[str, ...] = ("openbhb", "downstream")
DX_PREFIX = "dx_"
SCORE_PREFIX = "score_"
MANIFEST_COLUMNS: tuple[str, ...] = ("participant_id", "image", "age", "sex", "site", "roi")


#: What a participant id may hold where it becomes part of a path (OpenBHB's numeric ids, BIDS
#: labels with a ``sub-`` prefix or not): letters, digits, ``-``, ``_``, ``.``; no ``..``, no
#: separator, no leading dot or dash, at most 128 characters.
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_participant_id(participant_id: str, where: str = "participant_id") -> str:
    """``participant_id`` if it is safe to put in a path (:data:`PARTICIPANT_ID`).

    Raises:
        ValueError: naming ``where`` and the id.
    """
    if not (isinstance(participant_id, str) and PARTICIPANT_ID.fullmatch(participant_id)
            and ".." not in participant_id):
        raise ValueError(f"{where}: participant_id {participant_id!r} is not a valid id; expected "
                         "letters, digits, '-', '_' or '.' (no path separators, no '..')")
    return participant_id


def subject_dir(root: str | Path, split: str, participant_id: str) -> Path:
    """Folder of one subject of the pretraining cohort.

    Raises:
        ValueError: if ``split`` is not one of :data:`SPLITS` or the id is not path-safe.
    """
    check_participant_id(participant_id, str(root))
    if split not in SPLIT_FOLDER:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return Path(root) / SPLIT_FOLDER[split] / "derivatives" / f"sub-{participant_id}" / "ses-1"


def subject_file(root: str | Path, split: str, participant_id: str, kind: str) -> Path:
    """Path of one derivative, e.g. ``.../sub-1/ses-1/sub-1_preproc-cat12vbm_desc-gm_T1w.npy``."""
    return subject_dir(root, split, participant_id) / f"sub-{participant_id}_preproc-{kind}.npy"


def grid_shape(voxel_mm: float) -> tuple[int, int, int]:
    """Shape of CAT12's field of view sampled at ``voxel_mm`` (121x145x121 at 1.5 mm).

    Coarser grids keep the same field of view and origin corner, so their affine is
    :func:`grid_affine` of the same voxel size.
    """
    if voxel_mm <= 0:
        raise ValueError(f"voxel size must be positive, got {voxel_mm} mm")
    scale = CAT12_VOXEL_MM / voxel_mm
    return tuple(int(round((n - 1) * scale)) + 1 for n in CAT12_SHAPE)  # type: ignore[return-value]


def grid_affine(voxel_mm: float) -> np.ndarray:
    """Affine of :func:`grid_shape`'s grid: CAT12's axes and first-voxel centre, ``voxel_mm`` steps."""
    affine = CAT12_AFFINE.copy()
    affine[:3, :3] *= voxel_mm / CAT12_VOXEL_MM
    return affine


def crop_shape(voxel_mm: float) -> tuple[int, int, int]:
    """Upstream's (121, 128, 121) input crop expressed at ``voxel_mm``.

    The crop keeps the first and third axes whole and the fraction 128/145 of the second.
    """
    full = grid_shape(voxel_mm)
    second = int(round(full[1] * UPSTREAM_INPUT_SHAPE[1] / CAT12_SHAPE[1]))
    return (full[0], second, full[2])


def upstream_crop(voxel_mm: float) -> tuple[slice, slice, slice]:
    """Index of upstream's crop on CAT12's grid at ``voxel_mm``: ``[:, 8:136, :]`` at 1.5 mm.

    The second axis keeps :func:`crop_shape`'s length from ``(n - t) // 2`` on (the readers'
    centre crop, :func:`anatcl_core.data.io.crop_slices`); on every grid of
    ``io.KNOWN_VOXEL_MM`` the first and last kept slice centres lie within half a voxel of the
    1.5 mm crop's (12 mm and 202.5 mm past the grid's first slice), so coarser grids crop the same
    stretch of brain.
    """
    full, kept = grid_shape(voxel_mm)[1], crop_shape(voxel_mm)[1]
    start = (full - kept) // 2
    return (slice(None), slice(start, start + kept), slice(None))


def cohort_path(data_dir: str | Path, cohort: str) -> Path:
    """Where ``cohort`` lives under ``data_dir``: the OpenBHB root, or a manifest's folder."""
    if cohort not in COHORT_DIRS:
        raise ValueError(f"unknown cohort {cohort!r}; expected one of {tuple(COHORT_DIRS)}")
    return Path(data_dir) / COHORT_DIRS[cohort]


def cohort_paths(data_dir: str | Path) -> dict[str, Path]:
    """``{cohort: path}`` of the cohorts present under ``data_dir`` (the required ones always)."""
    paths = {name: cohort_path(data_dir, name) for name in COHORT_DIRS}
    return {name: path for name, path in paths.items()
            if name in REQUIRED_COHORTS or (path / MANIFEST_FILE).is_file()}
