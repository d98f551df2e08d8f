"""Focal grey-matter change inside regions: what voxels see and regional tables average away.

Real grey-matter maps carry age and disease at a finer scale than the 68 Desikan summaries: voxel-based
morphometry finds its peaks inside regions, not spread evenly over them. Each spot below is a
Gaussian bump (``SPOT_WIDTH_MM`` SD) at an MNI coordinate, on each hemisphere; its field is centred
within every atlas class (template-GM-weighted mean 0 over the class's voxels), so it moves GM
within a region and leaves the region's total, hence its FreeSurfer table, unchanged to first order.

A subject's log amplitude of spot ``k`` is::

    focal_sd * N(0, 1)                    individual sub-regional anatomy (no age, no disease)
    + AGE_WEIGHT_k * age_change           age_change: the subject's lifespan log change of thickness
    + severity * FOCAL_EFFECTS[condition][k]

Sources of the spots (peaks of published VBM studies; coordinates rounded, right hemisphere shown):

* Ageing, Good et al., NeuroImage 2001 (VBM of 465 adults): accelerated GM loss in the insula,
  superior parietal gyri, central sulci and cingulate sulci.
* Alzheimer's disease, Ferreira et al., Neurobiol Aging 2011 (meta-analysis of VBM studies): GM
  loss peaks in the medial temporal lobe (anterior hippocampus/amygdala) and the posterior cingulate
  and precuneus.
* Schizophrenia, Honea et al., Am J Psychiatry 2005 (meta-analysis of VBM studies): left superior
  temporal gyrus and medial temporal lobe most consistent; Glahn et al., Biol Psychiatry 2008: insula
  and anterior cingulate.
* Autism, Nickl-Jockschat et al., Hum Brain Mapp 2012 (ALE meta-analysis of VBM studies): small,
  inconsistent changes (lateral occipital, pericentral, medial temporal, basal ganglia); here a small
  temporal and fusiform loss.
"""

from __future__ import annotations

import functools

import numpy as np

from anatcl_core.synth.base import load_base

#: Spot name and right-hemisphere MNI centre (mm); each exists on both sides (x mirrored).
SPOTS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("anterior_hippocampus", (26.0, -10.0, -20.0)),
    ("posterior_cingulate", (8.0, -54.0, 30.0)),
    ("superior_temporal", (54.0, -14.0, 2.0)),
    ("anterior_insula", (36.0, 14.0, 2.0)),
    ("anterior_cingulate", (6.0, 32.0, 22.0)),
    ("superior_parietal", (26.0, -60.0, 56.0)),
    ("central_sulcus", (38.0, -22.0, 52.0)),
    ("fusiform", (38.0, -50.0, -16.0)),
)  # fmt: skip
SPOT_NAMES = tuple(name for name, _ in SPOTS)
#: Amplitudes come left spots first, then right: ``2 * len(SPOTS)`` per subject.
N_AMPLITUDES = 2 * len(SPOTS)
SPOT_WIDTH_MM = 6.0
#: Multiplier of the lifespan thickness trajectory at each spot (Good 2001's accelerated-loss sites).
AGE_WEIGHT = {"anterior_insula": 1.2, "superior_parietal": 1.0, "central_sulcus": 1.0, "anterior_cingulate": 0.8}
#: Log amplitude at severity 1 of each condition's spots (anatomy.CONDITIONS keys).
FOCAL_EFFECTS: dict[str, dict[str, float]] = {
    "ad": {"anterior_hippocampus": -0.08, "posterior_cingulate": -0.05},
    "scz": {"superior_temporal": -0.04, "anterior_insula": -0.035, "anterior_cingulate": -0.03},
    "asd": {"superior_temporal": -0.015, "fusiform": -0.015},
}


def amplitudes(config, rng: np.random.Generator, age_change: float, condition: str | None,
               severity: float) -> np.ndarray:
    """``(N_AMPLITUDES,)`` log amplitudes of one subject's spots (module docstring); ``age_change`` is
    ``age_effect * trajectory_ct(age)`` (:mod:`.anatomy`)."""
    per_spot = np.array([AGE_WEIGHT.get(name, 0.0) for name in SPOT_NAMES]) * age_change
    if condition is not None:
        effects = FOCAL_EFFECTS.get(condition, {})
        per_spot = per_spot + severity * np.array([effects.get(name, 0.0) for name in SPOT_NAMES])
    return config.focal_sd * rng.standard_normal(N_AMPLITUDES) + np.tile(per_spot, 2)


@functools.lru_cache(maxsize=4)
def basis(voxel_mm: float) -> np.ndarray:
    """``(N_AMPLITUDES, G)`` float32 class-centred spot fields on the template's GM voxels (``classes >= 0``,
    C order) at ``voxel_mm``: a subject's log focal change there is ``amplitudes @ basis``."""
    base = load_base(voxel_mm)
    in_gm = base.classes >= 0
    voxels = np.argwhere(in_gm).T.astype(np.float64)  # (3, G), C order like boolean indexing
    world = base.affine[:3, :3] @ voxels + base.affine[:3, 3:]  # (3, G) mm
    centres = [(-x, y, z) for _, (x, y, z) in SPOTS] + [(x, y, z) for _, (x, y, z) in SPOTS]
    fields = np.stack([np.exp(-0.5 * ((world - np.array(c)[:, None]) ** 2).sum(0) / SPOT_WIDTH_MM**2)
                       for c in centres])  # fmt: skip
    classes, weight = base.classes[in_gm], base.gm[in_gm].astype(np.float64)
    totals = np.bincount(classes, weights=weight)
    for field in fields:  # centred within each class: the class's GM total is unchanged to first order
        means = np.bincount(classes, weights=weight * field, minlength=len(totals)) / np.maximum(totals, 1e-12)
        field -= means[classes]
    return fields.astype(np.float32)
