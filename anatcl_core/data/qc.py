"""Does a GM map look smoothed? CAT12's ``s6mwp1`` output fed by mistake instead of ``mwp1``.

The models expect CAT12's *unsmoothed* modulated GM maps (``mwp1``); CAT12 also writes them
smoothed with a 6 mm FWHM Gaussian (``s6mwp1``), and users pick that file by mistake. A 6 mm FWHM
kernel (sigma = 2.55 mm) multiplies the power at spatial frequency ``f`` by
``exp(-(2 pi sigma f)^2)``: at wavelengths of 6 mm and shorter (``|f| >= 1/6 mm^-1``) it keeps at
most 0.08 % of it. The criterion is therefore the **high-frequency power fraction**

    hf = sum_{|f| >= 1/HF_CUTOFF_MM} |F(x - mean x)|^2 / sum_{f != 0} |F(x - mean x)|^2

on the map's own grid, in mm (so it does not depend on the voxel size); a map with
``hf < HF_THRESHOLD`` is reported as smoothed.

Calibration (``tests/test_cat12_inputs.py`` re-checks it on every run): 6 synthetic maps from
``anatcl_core.synth`` (subjects aged 25-100, three sites), each unsmoothed and after a Gaussian of
2 / 4 / 6 mm FWHM (CAT12's ``s6`` is 6 mm):

==========  ==================  ================  ================  ================
grid        unsmoothed          2 mm              4 mm              6 mm
==========  ==================  ================  ================  ================
1.5 mm      2.7e-4 .. 4.2e-4    9.9e-5 .. 1.7e-4  8.3e-6 .. 1.2e-5  2.3e-6 .. 4.7e-6
2.0 mm      1.7e-4 .. 2.9e-4    1.1e-4 .. 1.8e-4  5.6e-6 .. 8.1e-6  1.2e-6 .. 3.0e-6
3.0 mm      2.0e-4 .. 3.0e-4    1.9e-4 .. 2.9e-4  1.5e-5 .. 2.3e-5  2.3e-7 .. 3.0e-7
==========  ==================  ================  ================  ================

(measured on the calibrated generator of issue 9, whose sites smooth less and add less noise than
the first one's.) ``HF_THRESHOLD = 3e-5`` lies a factor 5.7 below the unsmoothed minimum on the 1.5
and 2 mm grids and 6.4 above the 6 mm maximum, near the geometric middle of the gap; 4 mm smoothing
is flagged too, 2 mm is not. The synthetic maps are smoother than real ``mwp1`` maps (rendered from a 1 mm
template), so real unsmoothed maps are expected to lie further above the threshold (not measured
here: no real scan ships).
On grids coarser than ``MAX_VOXEL_MM`` (3 mm and up, where the Nyquist frequency 1/(2 voxel) reaches
1/6 mm^-1) the band above 1/6 mm^-1 is only the grid's corner frequencies, not a measure of
smoothness, and the check does not run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import scipy.fft

HF_CUTOFF_MM = 6.0
HF_THRESHOLD = 3e-5
MAX_VOXEL_MM = 2.0


@functools.lru_cache(maxsize=8)
def _high_frequency_mask(shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
    """Boolean ``rfftn`` mask of the frequencies with ``|f| >= 1 / HF_CUTOFF_MM`` (cycles per mm)."""
    freqs = [np.fft.fftfreq(n, voxel_mm) for n in shape[:2]] + [np.fft.rfftfreq(shape[2], voxel_mm)]
    fx, fy, fz = np.meshgrid(*freqs, indexing="ij", sparse=True)
    return fx**2 + fy**2 + fz**2 >= HF_CUTOFF_MM**-2


def high_frequency_fraction(volume: np.ndarray, voxel_mm: float) -> float:
    """Share of the map's non-constant power at wavelengths of ``HF_CUTOFF_MM`` and shorter.

    Args:
        volume: ``(X, Y, Z)`` GM map. voxel_mm: its isotropic voxel size.

    Returns:
        A fraction in [0, 1]; 0 for a constant map.
    """
    x = np.asarray(volume, dtype=np.float32)
    power = np.abs(scipy.fft.rfftn(x - x.mean(dtype=np.float64))) ** 2  # (X, Y, Z // 2 + 1)
    total = float(power.sum(dtype=np.float64))
    if total == 0.0:
        return 0.0
    return float(power[_high_frequency_mask(tuple(x.shape), float(voxel_mm))].sum(dtype=np.float64)) / total


def smoothing_warning(volume: np.ndarray, voxel_mm: float | None, where: str | Path) -> str | None:
    """A one-line warning naming ``where`` when the map looks smoothed, else None.

    Nothing is said on grids coarser than ``MAX_VOXEL_MM`` or of unknown voxel size.
    """
    if voxel_mm is None or voxel_mm > MAX_VOXEL_MM:
        return None
    fraction = high_frequency_fraction(volume, voxel_mm)
    if fraction >= HF_THRESHOLD:
        return None
    return (
        f"{where}: looks smoothed (power at wavelengths <= {HF_CUTOFF_MM:g} mm is {fraction:.1e} of the map's, "
        f"below {HF_THRESHOLD:g}); expected CAT12's unsmoothed mwp1 map, not s6mwp1"
    )
