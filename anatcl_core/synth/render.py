"""Render a modulated GM map (CAT12 ``mwp1``-like, 0..~1) from a subject's anatomy and site.

Order of operations, each vectorised over the whole grid:

1. Region modulation: every GM voxel of the template is scaled by its class's volume ratio
   ``exp(log_modulation[class])`` (cortical GMV_r relative to the reference, subcortical volumes),
   blended across region borders by a normalised Gaussian (``transition_mm`` FWHM). Because the
   map is modulated (Jacobian-scaled), summing it over a region gives the region's GM volume.
   The site's segmentation gain of deep GM and cerebellum (``Site.tissue``) enters here too, and
   the subject's focal within-region changes (:mod:`.focal`, centred within each class).
2. Deformation: surface-area differences push borders outward (sampling along the gradient of
   the smoothed log-area field, ``deformation_mm`` of shift for a 10 % area change per cm) and
   enlarged lateral ventricles push periventricular GM away from their centres.
3. Site: global gain, contrast exponent ``gamma``, smooth multiplicative bias field (the site's
   own plus one drawn for every scan, ``scan_bias``), voxel noise in the brain mask, then the
   site's extra smoothing; values below zero are clipped and everything
   outside the mask is 0; values above 1 are softly bounded below 1.25 (:func:`soft_ceiling`).
   Values are stored on a 1/4096 grid (as a scaled-integer NIfTI would be),
   which also lets gzip compress them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anatcl_core.synth import focal
from anatcl_core.synth.anatomy import N_CORTICAL, Anatomy
from anatcl_core.synth.base import Base
from anatcl_core.synth.cohorts import Site

_QUANTUM = 1.0 / 4096.0
_AREA_SMOOTH_MM = 10.0
_VENTRICLE_RADIUS_MM = 25.0


def soft_ceiling(values: np.ndarray, knee: float = 1.0, headroom: float = 0.25) -> np.ndarray:
    """Identity up to ``knee``, then ``knee + headroom * tanh((v - knee) / headroom)``.

    Real modulated maps stay below ~1.2 (GM probability <= 1 times a moderate Jacobian); the
    product of a large head, a thick cortex and a bright site's bias field must not exceed it.
    """
    excess = np.maximum(values - knee, 0.0)
    return np.where(values > knee, knee + headroom * np.tanh(excess / headroom), values)


def _sigma_vox(fwhm_mm: float, voxel_mm: float) -> float:
    return fwhm_mm / 2.355 / voxel_mm


def _blend(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: Gaussian average of ``values`` where ``weight`` > 0."""
    if sigma <= 0:
        return values
    num = ndimage.gaussian_filter(values * weight, sigma)
    den = ndimage.gaussian_filter(weight, sigma)
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0)


def _coordinates(base: Base) -> np.ndarray:
    shape = base.gm.shape
    return np.indices(shape, dtype=np.float64)  # (3, X, Y, Z) voxel indices


def _bias_field(base: Base, coefficients: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` log bias: linear and quadratic terms of coordinates scaled to [-1, 1]."""
    shape = base.gm.shape
    axes = [np.linspace(-1.0, 1.0, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = (x, y, z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, y * z, x * z)
    return sum(c * t for c, t in zip(coefficients, terms))


def render(base: Base, anatomy: Anatomy, site: Site, rng: np.random.Generator, config) -> np.ndarray:
    """One subject's modulated GM map.

    Args:
        base: template brain on the target grid (:func:`~anatcl_core.synth.base.load_base`).
        anatomy: from :func:`~anatcl_core.synth.anatomy.sample_anatomy`.
        site: the scanning site. rng: this scan's generator (noise, bias jitter).
        config: :class:`~anatcl_core.synth.config.SynthConfig`.

    Returns:
        ``(X, Y, Z)`` float32, >= 0, zero outside the brain mask.
    """
    voxel_mm = config.voxel_mm
    in_gm = base.classes >= 0
    weight = in_gm.astype(np.float64)
    classes = np.where(in_gm, base.classes, 0)

    # 1. region modulation, blended across borders
    log_mod = np.where(in_gm, anatomy.log_modulation[classes] + site.tissue[classes], 0.0)
    log_mod = _blend(log_mod, weight, _sigma_vox(config.transition_mm, voxel_mm))
    log_mod[in_gm] += anatomy.focal @ focal.basis(voxel_mm)
    image = base.gm * np.exp(log_mod)

    # 2. deformation: area gradients and ventricle growth (displacements in voxels)
    grid = _coordinates(base)
    coords = grid.copy()
    if config.deformation_mm > 0:
        cortical = in_gm & (base.classes < N_CORTICAL)
        area = np.where(cortical, anatomy.log_area[np.minimum(classes, N_CORTICAL - 1)], 0.0)
        area = area - anatomy.log_area.mean()  # local differences only; global size is in intensity
        area = _blend(area, cortical.astype(np.float64), _sigma_vox(_AREA_SMOOTH_MM, voxel_mm))
        gradient = np.stack(np.gradient(area))  # (3, X, Y, Z) log-area change per voxel
        # 10 % change of area over 10 mm -> deformation_mm of shift
        coords += config.deformation_mm * 100.0 * gradient / voxel_mm**2
    inverse = np.linalg.inv(base.affine)
    strength = 0.08 * max(anatomy.log_ventricles, -0.5)
    for centre_mm in base.ventricle_mm:
        centre = inverse[:3, :3] @ centre_mm + inverse[:3, 3]  # voxel coordinates
        offset = grid - centre[:, None, None, None]  # (3, X, Y, Z)
        dist2 = (offset**2).sum(axis=0) * voxel_mm**2
        coords -= strength * np.exp(-0.5 * dist2 / _VENTRICLE_RADIUS_MM**2) * offset
    image = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0)

    # 3. site effects
    image = np.power(np.clip(image, 0.0, None), site.gamma)
    scan = config.scan_bias * rng.standard_normal(site.bias.shape) / 3.0  # this session's own field
    image = image * np.exp(site.log_gain + _bias_field(base, site.bias + scan))
    image = image + site.noise_sd * base.mask * rng.standard_normal(image.shape)
    if site.fwhm_mm > 0:
        image = ndimage.gaussian_filter(image, _sigma_vox(site.fwhm_mm, voxel_mm))
    image = soft_ceiling(np.clip(image, 0.0, None) * base.mask)
    return (np.round(image / _QUANTUM) * _QUANTUM).astype(np.float32)
