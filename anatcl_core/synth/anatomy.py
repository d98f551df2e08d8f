"""Generative model of one subject's anatomy: FreeSurfer descriptors and the volumes behind the image.

Log-scale model for Desikan region ``r`` (68 columns, OpenBHB order)::

    log CT_r = log CT0_r + age_effect * k_r * T_ct(age) + sum_l z_l * latent_sd * c_l * w_lr + e_r
    log SA_r = log SA0_r + age_effect * T_sa(age) + 0.8 * log(TIV / TIV0)
               + sum_l z_l * latent_sd * a_l * w_lr + e'_r
    GMV_r    = CT_r * SA_r * exp(e''_r)

This is the subject's true anatomy, which the map is rendered from; the FreeSurfer table of a scan
is a separate noisy measurement of it (:mod:`.measurement`), and GM also changes inside regions
(:mod:`.focal`), where no table looks.

``T`` are non-linear lifespan trajectories (integrated annual rates: fast childhood thinning,
slow adult decline, faster again after ~65; surface area grows until ~10), ``k_r`` makes
association (anterior) cortex age faster. ``z ~ N(0, I)`` are latent individual factors,
independent of age and sex, each loading on a smooth spatial pattern ``w_l`` (:data:`PATTERNS`,
Gaussian in distance from anchor regions) with channel weights ``c_l`` (thickness) and ``a_l``
(area). ``e`` are idiosyncratic region noises (``region_sd``). Conditions (:data:`CONDITIONS`)
shift ``z`` along their patterns in proportion to a severity and add their own regional effects.
Subcortical volumes (and cerebellar GM) follow TIV, age, the medial-temporal factor (hippocampus,
amygdala) and each condition's subcortical effects (ENIGMA's); the lateral ventricles grow with age
and disease.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatcl_core.data.freesurfer import DESIKAN_REGIONS
from anatcl_core.synth import focal
from anatcl_core.synth.base import SUBCORTICAL, region_centroids_mm

N_CORTICAL = 2 * len(DESIKAN_REGIONS)

# Approximate adult mean thickness (mm) and surface area (mm^2) of each Desikan region, one
# hemisphere, in DESIKAN_REGIONS order (round figures in the range FreeSurfer reports).
_CT0 = (2.6, 2.7, 2.6, 1.9, 3.4, 2.8, 2.5, 2.8, 2.5, 2.3, 2.7, 2.0, 2.5, 2.9, 2.7, 2.4, 2.6,
        2.8, 2.5, 1.7, 2.1, 2.6, 2.6, 2.4, 2.9, 2.4, 2.8, 2.2, 2.8, 2.6, 2.9, 3.6, 2.3, 3.0)  # fmt: skip
_SA0 = (1000, 600, 2200, 1500, 450, 3000, 5000, 3200, 1000, 4500, 2500, 3000, 1700, 3100, 600,
        1400, 1300, 550, 1100, 1300, 4000, 1000, 4600, 4000, 600, 5500, 7000, 5700, 3800, 4000,
        250, 500, 400, 2000)  # fmt: skip
#: Reference adult volumes of :data:`SUBCORTICAL` (mm^3, one side).
_SUB0 = (4000, 4000, 1500, 1500, 7500, 7500, 3500, 3500, 5000, 5000, 1800, 1800, 500, 500,
         4000, 4000, 50000, 50000, 20000)  # fmt: skip
TIV0_CM3 = 1450.0

#: Latent anatomical patterns: name, anchor regions, thickness weight, area weight.
PATTERNS: tuple[tuple[str, tuple[str, ...], float, float], ...] = (
    ("medial_temporal", ("entorhinal", "parahippocampal", "temporalpole"), 1.0, 0.4),
    ("fronto_temporal", ("superiorfrontal", "rostralmiddlefrontal", "superiortemporal", "parstriangularis"), 1.0, 0.3),
    ("association_area", ("rostralmiddlefrontal", "middletemporal", "inferiorparietal"), 0.2, 1.0),
    ("sensorimotor", ("precentral", "postcentral", "paracentral"), 1.0, 0.3),
    ("visual", ("lateraloccipital", "cuneus", "lingual", "pericalcarine"), 0.5, 0.8),
    ("cingulo_insular", ("insula", "caudalanteriorcingulate", "posteriorcingulate"), 0.8, 0.5),
)  # fmt: skip
PATTERN_NAMES = tuple(p[0] for p in PATTERNS)
_PATTERN_WIDTH_MM = 22.0

#: Conditions (package docstring, "Effects"): the pattern shifted by ``sign * effect * severity``
#: latent SDs (the univariate effect the meta-analyses report), a regional signature (log CT
#: change per region at severity 1: small per region, spread over the regions the literature
#: names), widespread log CT change (times severity^2 for AD, whose thinning spreads late; times
#: severity otherwise), widespread log SA change, subcortical log volume changes (both sides) and
#: lateral-ventricle log growth at severity 1. Subcortical effects give the d of the meta-analyses
#: (between-subject SD of log volume ~0.15 for hippocampus/amygdala, ~0.09 elsewhere): AD
#: hippocampus -1.5 (Shi 2009), amygdala close to it (Poulin et al., Psychiatry Res 2011), smaller
#: thalamus and putamen (de Jong et al., Brain 2008); schizophrenia hippocampus -0.46, amygdala -0.31,
#: thalamus -0.31, accumbens -0.25, pallidum +0.21 (van Erp et al., Mol Psychiatry 2016, ENIGMA);
#: autism pallidum, putamen, amygdala, accumbens ~-0.1 (van Rooij 2018).
_AD_SIGNATURE = ("entorhinal", "parahippocampal", "inferiortemporal", "temporalpole", "inferiorparietal",
                 "supramarginal", "precuneus", "superiorparietal", "superiorfrontal")  # Dickerson 2009
_SCZ_SIGNATURE = ("fusiform", "parahippocampal", "superiortemporal", "inferiortemporal", "middletemporal",
                  "temporalpole", "insula", "parsopercularis", "parsorbitalis", "medialorbitofrontal")  # van Erp 2018
_ASD_FRONTAL = ("superiorfrontal", "rostralmiddlefrontal", "caudalmiddlefrontal", "parsopercularis",
                "parstriangularis", "medialorbitofrontal")  # van Rooij 2018: thicker
_ASD_TEMPORAL = ("superiortemporal", "middletemporal", "inferiortemporal", "fusiform", "entorhinal")  # thinner
CONDITIONS: dict[str, dict] = {
    "ad": dict(pattern="medial_temporal", sign=-1.0, signature={r: -0.04 for r in _AD_SIGNATURE},
               widespread_ct=-0.02, widespread_sa=0.0, ventricles=0.35,
               subcortical={"Hippocampus": -0.15, "Amygdala": -0.12, "Thalamus-Proper": -0.04, "Putamen": -0.04}),
    "scz": dict(pattern="fronto_temporal", sign=-1.0, signature={r: -0.03 for r in _SCZ_SIGNATURE},
                widespread_ct=-0.015, widespread_sa=-0.01, ventricles=0.12,
                subcortical={"Hippocampus": -0.07, "Amygdala": -0.045, "Thalamus-Proper": -0.03,
                             "Accumbens-area": -0.025, "Pallidum": 0.02}),
    "asd": dict(pattern="association_area", sign=1.0,
                signature={**{r: 0.0125 for r in _ASD_FRONTAL}, **{r: -0.0125 for r in _ASD_TEMPORAL}},
                widespread_ct=0.0, widespread_sa=0.0, ventricles=0.0,
                subcortical={"Pallidum": -0.01, "Putamen": -0.01, "Amygdala": -0.01, "Accumbens-area": -0.01}),
}  # fmt: skip


def _cumulative(rate, ages: np.ndarray, anchor: float = 20.0) -> np.ndarray:
    """Integral of an annual log-rate from ``anchor`` years to each age (trapezoid on a fine grid)."""
    grid = np.linspace(0.0, 100.0, 2001)
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (rate(grid[1:]) + rate(grid[:-1])) * np.diff(grid))])
    return np.interp(ages, grid, integral) - np.interp(anchor, grid, integral)


def soft_max(values: np.ndarray, knee: float, limit: float) -> np.ndarray:
    """Identity below ``knee``, then a tanh approach to ``limit``."""
    span = limit - knee
    return np.where(values > knee, knee + span * np.tanh(np.maximum(values - knee, 0.0) / span), values)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def trajectory_ct(age):
    """Lifespan log-change of cortical thickness relative to age 20 (scalar or array)."""
    return _cumulative(lambda a: -0.012 * _sigmoid((16 - a) / 3) - 0.0025 - 0.004 * _sigmoid((a - 65) / 6), np.asarray(age))


def trajectory_sa(age):
    """Lifespan log-change of surface area relative to age 20: growth until ~10, slow decline."""
    return _cumulative(lambda a: 0.02 * _sigmoid((9 - a) / 2) - 0.0012, np.asarray(age))


def trajectory_subcortical(age):
    """Lifespan log-change of subcortical volume relative to age 20 (accelerating after ~60)."""
    return _cumulative(lambda a: -0.0015 - 0.006 * _sigmoid((a - 62) / 6), np.asarray(age))


def trajectory_ventricles(age):
    """Lifespan log-change of lateral-ventricle volume relative to age 20."""
    return _cumulative(lambda a: 0.008 + 0.03 * _sigmoid((a - 55) / 8), np.asarray(age))


@dataclass(frozen=True)
class Population:
    """Population constants shared by every subject (fixed by the seed).

    Attributes:
        loadings: ``(L, 68)`` spatial weight of each latent pattern on each region (max 1).
        ct_weight, sa_weight: ``(L,)`` channel weights of the patterns.
        aging: ``(68,)`` region-specific multiplier of the thickness trajectory.
    """

    loadings: np.ndarray
    ct_weight: np.ndarray
    sa_weight: np.ndarray
    aging: np.ndarray


def make_population(rng: np.random.Generator) -> Population:
    """Spatial patterns from the atlas's region centroids and region-specific ageing rates."""
    centroids = region_centroids_mm()  # (68, 3)
    names = [r for _ in range(2) for r in DESIKAN_REGIONS]
    loadings = np.zeros((len(PATTERNS), N_CORTICAL))
    for index, (_, anchors, _, _) in enumerate(PATTERNS):
        for column in range(N_CORTICAL):
            hemi = slice(0, N_CORTICAL // 2) if column < N_CORTICAL // 2 else slice(N_CORTICAL // 2, N_CORTICAL)
            anchor_cols = [c for c in range(N_CORTICAL)[hemi] if names[c] in anchors]
            dist = np.linalg.norm(centroids[anchor_cols] - centroids[column], axis=1)
            loadings[index, column] = np.exp(-0.5 * (dist.min() / _PATTERN_WIDTH_MM) ** 2)
    # anterior (y > -20 mm) association cortex thins faster with age, plus region jitter
    aging = 0.7 + 0.6 * _sigmoid((centroids[:, 1] + 20.0) / 25.0) + 0.1 * rng.standard_normal(N_CORTICAL)
    return Population(
        loadings=loadings,
        ct_weight=np.array([p[2] for p in PATTERNS]),
        sa_weight=np.array([p[3] for p in PATTERNS]),
        aging=np.clip(aging, 0.3, None),
    )


@dataclass(frozen=True)
class Anatomy:
    """One subject's generated anatomy.

    Attributes:
        log_ct, log_sa, log_gmv: ``(68,)`` true log thickness (mm), area (mm^2) and GM volume (mm^3)
            of each Desikan region (a scan's table measures them: :mod:`.measurement`).
        log_modulation: ``(len(CLASSES),)`` log GM volume of each class relative to the template.
        log_area: ``(68,)`` log surface-area change relative to the reference (drives deformation).
        log_ventricles: lateral-ventricle log-enlargement relative to a 20-year-old.
        volumes_cm3: dict with ``tiv``, ``gmv``, ``wmv``, ``csfv``.
        factors: ``(L,)`` the latent pattern factors ``z`` (after any condition's shift).
        focal: ``(focal.N_AMPLITUDES,)`` log amplitudes of the within-region spots (:mod:`.focal`).
    """

    log_ct: np.ndarray
    log_sa: np.ndarray
    log_gmv: np.ndarray
    log_modulation: np.ndarray
    log_area: np.ndarray
    log_ventricles: float
    volumes_cm3: dict
    factors: np.ndarray
    focal: np.ndarray


def _condition_effects(config, z: np.ndarray, condition: str | None,
                       severity: float) -> tuple[np.ndarray, float, np.ndarray, float]:
    """Shift the latent factors ``z`` (in place) along the condition's pattern and return its regional
    effects: ``(ct_specific (68,), sa_specific, subcortical (len(SUBCORTICAL),), ventricles)`` in log
    units (zeros if healthy)."""
    if condition is None:
        return np.zeros(N_CORTICAL), 0.0, np.zeros(len(SUBCORTICAL)), 0.0
    spec = CONDITIONS[condition]
    effect = getattr(config, f"{condition}_effect")
    z[PATTERN_NAMES.index(spec["pattern"])] += spec["sign"] * effect * severity
    signature = np.array([spec["signature"].get(r, 0.0) for _ in range(2) for r in DESIKAN_REGIONS])
    spread = severity if condition == "ad" else 1.0
    ct_specific = severity * (signature + spec["widespread_ct"] * spread)
    subcortical = np.array([spec["subcortical"].get(s.removeprefix("Left-").removeprefix("Right-"), 0.0)
                            for s in SUBCORTICAL])  # fmt: skip
    return ct_specific, severity * spec["widespread_sa"], severity * subcortical, severity * spec["ventricles"]


def _brain_volumes(log_tiv: float, log_gmv: np.ndarray, log_sub: np.ndarray, age: float,
                   rng: np.random.Generator) -> dict[str, float]:
    """Total intracranial, grey, white matter and CSF volumes (cm^3) of one subject."""
    gmv = (np.exp(log_gmv).sum() + np.exp(log_sub + np.log(_SUB0)).sum()) / 1000.0
    wmv = np.exp(log_tiv) * 0.33 * np.exp(-0.00008 * (age - 45.0) ** 2) * np.exp(0.03 * rng.standard_normal())
    return dict(tiv=float(np.exp(log_tiv)), gmv=float(gmv), wmv=float(wmv),
                csfv=float(np.exp(log_tiv) - gmv - wmv))  # fmt: skip


def sample_anatomy(config, population: Population, rng: np.random.Generator, age: float, sex: int,
                   condition: str | None = None, severity: float = 0.0) -> Anatomy:
    """Draw one subject's anatomy (module docstring gives the model).

    The draws from ``rng`` come in a fixed order (factors, head size, regional noise, subcortical
    noise, ventricles, white matter, focal spots): the cohort's bytes depend on it. The site plays
    no part: it changes how the anatomy is measured (:mod:`.measurement`, :mod:`.render`), not the
    anatomy.

    Args:
        config: :class:`~anatcl_core.synth.config.SynthConfig`.
        population: from :func:`make_population`.
        rng: the subject's own generator.
        age: years; sex: 1 male, 0 female.
        condition: ``None`` (healthy) or a key of :data:`CONDITIONS`; severity: >= 0.

    Raises:
        ValueError: for an unknown condition.
    """
    if condition is not None and condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; expected one of {sorted(CONDITIONS)}")
    z = rng.standard_normal(len(PATTERNS))  # latent factors, independent of age and sex
    ct_specific, sa_specific, subcortical, ventricles = _condition_effects(config, z, condition, severity)

    log_tiv = np.log(TIV0_CM3) + 0.09 * (sex - 0.5) - 0.10 * np.exp(-(age - 6.0) / 4.0)
    log_tiv += config.head_size_sd * rng.standard_normal()
    log_tiv_rel = log_tiv - np.log(TIV0_CM3)
    pattern_ct = (z * population.ct_weight) @ population.loadings * config.latent_sd  # (68,)
    pattern_sa = (z * population.sa_weight) @ population.loadings * config.latent_sd
    noise = config.region_sd * rng.standard_normal((3, N_CORTICAL))

    ct_ref, sa_ref = np.log(np.tile(_CT0, 2)), np.log(np.tile(_SA0, 2).astype(float))
    log_ct = (ct_ref + config.age_effect * population.aging * trajectory_ct(age) + pattern_ct
              + ct_specific + noise[0])  # fmt: skip
    log_ct = np.log(soft_max(np.exp(log_ct), knee=4.0, limit=4.9))  # FreeSurfer rarely reports > 5 mm
    log_area = (config.age_effect * trajectory_sa(age) + 0.8 * log_tiv_rel + pattern_sa
                + sa_specific + noise[1])  # fmt: skip
    log_sa = sa_ref + log_area
    log_gmv = log_ct + log_sa + 0.3 * noise[2]

    # subcortical volumes relative to the template (index 68+ of CLASSES)
    n_sub = len(SUBCORTICAL)
    log_sub = (log_tiv_rel + config.age_effect * trajectory_subcortical(age)
               + config.region_sd * rng.standard_normal(n_sub))  # fmt: skip
    medial = np.array(["Hippocampus" in s or "Amygdala" in s for s in SUBCORTICAL])
    log_sub = log_sub + medial * config.latent_sd * z[0] + subcortical
    log_cortex = log_gmv - (ct_ref + sa_ref)
    log_modulation = np.concatenate([log_cortex, log_sub])  # (len(CLASSES),)

    log_vent = config.age_effect * trajectory_ventricles(age) + ventricles + 0.15 * rng.standard_normal()
    volumes = _brain_volumes(log_tiv, log_gmv, log_sub, age, rng)
    spots = focal.amplitudes(config, rng, config.age_effect * float(trajectory_ct(age)), condition, severity)
    return Anatomy(log_ct=log_ct, log_sa=log_sa, log_gmv=log_gmv, log_modulation=log_modulation,
                   log_area=log_area, log_ventricles=float(log_vent), volumes_cm3=volumes,
                   factors=z, focal=spots)  # fmt: skip
