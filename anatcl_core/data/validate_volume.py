"""Checks of one modulated GM map (CAT12 ``mwp1``) against CAT12's grid and value range.

A modulated GM map is the GM probability in [0, 1] times the Jacobian of the non-linear warp.
Limits and why:

* ``MIN_VALUE = -0.05``: spline resampling can ring slightly below zero; anything lower is not a
  probability map (z-scored images, raw T1 intensities with negative offsets).
* ``MAX_VALUE = 1.5``: modulation scales the probability by the local volume change, which keeps
  real maps below ~1.2; more means T1 intensities, percentages or a wrong scaling.
* ``COVERAGE_THRESHOLD = 0.1`` / ``MIN_COVERAGE = 0.02``: a GM map of a whole brain puts ~30 % of
  CAT12's box above 0.1; under 2 % is a failed segmentation, a mask of one region or an empty map.
* A map that looks smoothed (CAT12's ``s6mwp1`` instead of ``mwp1``) is logged as a warning naming
  the file, not counted as a problem (criterion and calibration: :mod:`anatcl_core.data.qc`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from anatcl_core.data import io, layout, qc
from anatcl_core.data.files import not_regular
from anatcl_core.data.problem import Problem

log = logging.getLogger(__name__)

MIN_VALUE = -0.05

MAX_VALUE = 1.5

COVERAGE_THRESHOLD = 0.1

MIN_COVERAGE = 0.02

CAT12_AXCODES = tuple(nib.aff2axcodes(layout.CAT12_AFFINE))  # ("L", "A", "S")


def _grid_hint(shape: tuple[int, ...]) -> str:
    """The note "(that shape is CAT12's grid at V mm)" when ``shape`` is one, else an empty string."""
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

    reason = not_regular(path)
    if reason:  # never opened: a FIFO would block, a device would never end
        add(f"{reason} (expected a CAT12 GM map)" if reason == "missing file" else f"{reason}; expected a CAT12 GM map")
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


def volume_files(folder: Path) -> list[Path]:
    """The ``.nii`` / ``.nii.gz`` / ``.npy`` entries of ``folder`` that are not folders, sorted (not
    recursive); a FIFO or a dangling link among them is listed, so that its check reports it."""
    return sorted(p for p in folder.iterdir() if not p.is_dir() and io.is_volume_file(p))

