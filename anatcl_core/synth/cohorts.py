"""Who is scanned where: sites, the pretraining cohort, multi-site diagnostic studies, travelling heads.

Every draw uses a generator keyed by (seed, purpose, index), so a subject's anatomy does not depend
on how many subjects come before it or in which order they are rendered.

Recruitment follows real multi-site studies (package docstring, "Recruitment"): pretraining sites
recruit over overlapping age ranges, so that an unseen site's ages lie inside the training sites';
each downstream study spreads its groups over ``n_downstream_sites`` sites with different case
shares (a site's odds of recruiting a case are tilted by :data:`CASE_SHARE_SPREAD`), and cases and
controls of one site are drawn from that site's own age range and sex ratio (frequency matching).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from anatcl_core.data.freesurfer import DESIKAN_COLUMNS
from anatcl_core.synth.base import CLASSES

#: Recruitment age ranges (years) of pretraining sites, cycled over site codes. They overlap, and the
#: default's external sites (codes 6, 7) take the first two, which the six training sites cover.
AGE_PROFILES: tuple[tuple[float, float], ...] = (
    (6.0, 40.0), (18.0, 65.0), (20.0, 85.0), (45.0, 88.0), (8.0, 30.0), (30.0, 75.0),
)  # fmt: skip
#: Downstream studies: nominal subjects per group (controls last; scaled by ``downstream_scale``),
#: the study's age range, share of males, site-code base and the tasks it defines
#: (``dx_<task>``: cases = the listed groups, controls = the study's controls).
STUDIES: dict[str, dict] = {
    "adni": dict(groups={"ad": 200, "mci": 200, "control": 300}, ages=(55.0, 90.0), male=0.5, code=100,
                 tasks={"ad": ("ad",), "mci": ("mci",)}),
    "scz_a": dict(groups={"scz": 180, "control": 200}, ages=(18.0, 60.0), male=0.65, code=200,
                  tasks={"scz_a": ("scz",)}),
    "scz_b": dict(groups={"scz": 170, "control": 200}, ages=(18.0, 65.0), male=0.7, code=300,
                  tasks={"scz_b": ("scz",)}),
    "abide": dict(groups={"autistic": 230, "asperger": 120, "pddnos": 100, "control": 450}, ages=(6.0, 30.0),
                  male=0.85, code=400,
                  tasks={"asd": ("autistic", "asperger", "pddnos"), "autistic": ("autistic",),
                         "asperger": ("asperger",), "pddnos": ("pddnos",)}),
}  # fmt: skip
#: Every downstream task, in manifest column order.
TASKS: tuple[str, ...] = tuple(task for spec in STUDIES.values() for task in spec["tasks"])
#: Condition of each diagnostic group (anatomy.CONDITIONS key) and its severity range.
GROUPS: dict[str, tuple[str | None, tuple[float, float]]] = {
    "ad": ("ad", (0.6, 1.0)), "mci": ("ad", (0.35, 0.65)), "scz": ("scz", (0.5, 1.5)),
    "autistic": ("asd", (0.8, 1.5)), "asperger": ("asd", (0.6, 1.2)), "pddnos": ("asd", (0.5, 1.1)),
    "control": (None, (0.0, 0.0)),
}  # fmt: skip
#: Log-odds spread of a site's case share: sites' tilts run from -spread to +spread, so a
#: balanced study has sites from ~35 % to ~65 % cases (ABIDE I: 30-70 % per site).
CASE_SHARE_SPREAD = 0.6
#: Structures whose GM probability depends on the site's T1 contrast and coverage.
SITE_DEPENDENT: tuple[str, ...] = (
    "Thalamus-Proper", "Caudate", "Putamen", "Pallidum", "Accumbens-area", "VentralDC", "Cerebellum-Cortex", "Brain-Stem",
)  # fmt: skip
PURPOSES = ("population", "site", "pretrain", "downstream", "travelling", "render", "measure")


def generator(seed: int, purpose: str, *index: int) -> np.random.Generator:
    """An independent generator for one (purpose, index...) of a seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(PURPOSES.index(purpose), *index)))


@dataclass(frozen=True)
class Site:
    """One acquisition site: who it recruits and how its scanner and pipeline distort the data.

    Attributes:
        code: integer site code (OpenBHB style). ages: recruited age range (years).
        male: share of males recruited. field_t: magnetic field strength (T).
        log_gain: global intensity scale (log). gamma: contrast exponent of GM probabilities.
        noise_sd: voxel noise SD. fwhm_mm: extra smoothing. bias: ``(9,)`` coefficients of a
            smooth multiplicative bias field (log), on linear and quadratic coordinate terms.
        fs_ct, fs_sa: log offsets of the site's FreeSurfer thickness and area measurements.
        fs_regional: ``(3, 68)`` the site's regional log offsets of thickness, area and volume
            (:mod:`.measurement`; field strength and coil change some regions more than others).
        tissue: ``(len(CLASSES),)`` log gain of each GM class in this site's segmentation: deep GM
            and cerebellum (whose GM probability depends most on T1 contrast and coverage) vary by
            site; cortex, hippocampus and amygdala get 0.
    """

    code: int
    ages: tuple[float, float]
    male: float
    field_t: float
    log_gain: float
    gamma: float
    noise_sd: float
    fwhm_mm: float
    bias: np.ndarray
    fs_ct: float
    fs_sa: float
    tissue: np.ndarray
    fs_regional: np.ndarray


def make_site(config, code: int, ages: tuple[float, float], rng: np.random.Generator, male: float = 0.5) -> Site:
    """Draw one site's scanner effects (within the ranges of ``config``); ``male`` +- 0.1 recruited."""
    return Site(
        code=code, ages=ages, male=float(np.clip(male + rng.uniform(-0.1, 0.1), 0.05, 0.95)),
        field_t=float(rng.choice([1.5, 3.0])),
        log_gain=float(config.site_intensity_sd * rng.standard_normal()),
        gamma=float(np.exp(config.site_contrast_sd * rng.standard_normal())),
        noise_sd=float(rng.uniform(0.5, 1.0) * config.site_noise_max),
        fwhm_mm=float(rng.uniform(0.0, 1.0) * config.site_fwhm_max_mm),
        bias=config.site_bias * rng.standard_normal(9) / 3.0,
        fs_ct=float(0.02 * rng.standard_normal()), fs_sa=float(0.01 * rng.standard_normal()),
        tissue=_tissue_gains(config.site_tissue_sd, rng),
        fs_regional=np.array([[config.fs_site_regional_sd], [config.fs_site_regional_sd / 2],
                              [config.fs_site_regional_sd]]) * rng.standard_normal((3, len(DESIKAN_COLUMNS))),
    )  # fmt: skip


def _tissue_gains(sd: float, rng: np.random.Generator) -> np.ndarray:
    """Site log gains per GM class: one draw per deep-GM/cerebellar structure, shared by both sides."""
    gains = np.zeros(len(CLASSES))
    for structure in SITE_DEPENDENT:
        draw = sd * rng.standard_normal()
        for side in ("Left-", "Right-", ""):
            if side + structure in CLASSES:
                gains[CLASSES.index(side + structure)] = draw
    return gains


def pretraining_sites(config) -> list[Site]:
    """The pretraining sites; the last ``n_external_sites`` are external (unseen in train)."""
    return [
        make_site(config, code, AGE_PROFILES[code % len(AGE_PROFILES)], generator(config.seed, "site", code))
        for code in range(config.n_sites)
    ]


def _site_ages(study_ages: tuple[float, float], rng: np.random.Generator) -> tuple[float, float]:
    """A site's own age range: 50-90 % of its study's span, anywhere inside it."""
    low, high = study_ages
    width = rng.uniform(0.5, 0.9) * (high - low)
    start = rng.uniform(low, high - width)
    return float(start), float(start + width)


def downstream_sites(config) -> dict[str, list[Site]]:
    """Each downstream study's own sites (codes 100+, 200+, ...), each with its own age range."""
    sites = {}
    for study, spec in STUDIES.items():
        codes = [spec["code"] + j for j in range(config.n_downstream_sites)]
        sites[study] = [
            make_site(config, c, _site_ages(spec["ages"], generator(config.seed, "downstream", c, 1)),
                      generator(config.seed, "site", c), male=spec["male"])
            for c in codes
        ]  # fmt: skip
    return sites


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` subjects over sites in proportion to ``weights`` (largest remainders)."""
    share = total * weights / weights.sum()
    counts = np.floor(share).astype(int)
    counts[np.argsort(counts - share)[: total - counts.sum()]] += 1
    return counts


def group_counts(config, study: str) -> pd.DataFrame:
    """``(sites, groups)`` subject counts of one study: each group's size spread over the sites.

    A site's tilt ``t`` (evenly spaced in [-:data:`CASE_SHARE_SPREAD`, +...], shuffled) multiplies
    its case groups' weight by ``exp(t / 2)`` and its controls' by ``exp(-t / 2)``; case groups
    also get their own jitter (sites differ in subtype mix, as ABIDE's do).
    """
    spec = STUDIES[study]
    rng = generator(config.seed, "downstream", spec["code"], 2)
    n_sites = config.n_downstream_sites
    tilt = rng.permutation(np.linspace(-CASE_SHARE_SPREAD, CASE_SHARE_SPREAD, n_sites))
    counts = {}
    for group, nominal in spec["groups"].items():
        size = max(1, int(round(nominal * config.downstream_scale)))
        sign = -1.0 if group == "control" else 1.0
        jitter = 0.0 if group == "control" else 0.2 * rng.standard_normal(n_sites)
        counts[group] = _allocate(size, np.exp(sign * tilt / 2 + jitter))
    return pd.DataFrame(counts, index=[spec["code"] + j for j in range(n_sites)])


def n_downstream(config) -> int:
    """Total downstream subjects of ``config``."""
    return sum(int(group_counts(config, study).to_numpy().sum()) for study in STUDIES)


def pretraining_table(config, sites: list[Site]) -> pd.DataFrame:
    """Healthy subjects: id, site, age, sex and split (train / internal_test / external_test)."""
    rng = generator(config.seed, "pretrain", 0)
    site_of = rng.permutation(np.arange(config.n_pretrain) % config.n_sites)
    rows = []
    n_train_sites = config.n_sites - config.n_external_sites
    for index, code in enumerate(site_of):
        site = sites[code]
        rows.append(dict(participant_id=str(100001 + index), site=int(code),
                         age=float(np.round(rng.uniform(*site.ages), 2)), sex=int(rng.random() < site.male),
                         split="external_test" if code >= n_train_sites else "train"))  # fmt: skip
    table = pd.DataFrame(rows)
    for code in range(n_train_sites):  # hold out a share of every train site
        members = table.index[table["site"] == code].to_numpy()
        n_held = int(round(config.internal_test_fraction * len(members)))
        table.loc[rng.choice(members, n_held, replace=False), "split"] = "internal_test"
    return table


def downstream_table(config, sites: dict[str, list[Site]]) -> pd.DataFrame:
    """Every study's subjects, site by site: cases and controls share the site's ages and sex ratio.

    Ages are drawn from the site's range; each group of a site has the site's share of males
    (rounded), so sex is matched exactly within site.

    Returns one row per subject: participant_id, study, group, condition (an
    ``anatomy.CONDITIONS`` key, empty for controls), site, age, sex, severity.
    """
    rows = []
    number = 200001
    for study, spec in STUDIES.items():
        rng = generator(config.seed, "downstream", spec["code"])
        counts = group_counts(config, study)
        for site in sites[study]:
            for group in spec["groups"]:
                condition, severity = GROUPS[group]
                size = int(counts.loc[site.code, group])
                sexes = rng.permutation(np.arange(size) < round(size * site.male))  # every group: the site's ratio
                for sex in sexes:
                    rows.append(dict(participant_id=str(number), study=study, group=group, condition=condition or "",
                                     site=site.code, age=float(np.round(rng.uniform(*site.ages), 2)), sex=int(sex),
                                     severity=float(rng.uniform(*severity))))  # fmt: skip
                    number += 1
    return pd.DataFrame(rows)


def clinical_scores(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Diagnosis columns (``dx_<task>``, :data:`TASKS`) and clinical scores (``score_<name>``).

    Scores: MMSE-like and CDR-like (whole ADNI-like study), PANSS-like (schizophrenia cases of both
    studies), ADOS-like severity 1-10 (``ads``, autism cases of every subtype).
    """
    rng = generator(seed, "downstream", 0)
    out = pd.DataFrame(index=table.index)
    for study, spec in STUDIES.items():
        for task, cases in spec["tasks"].items():
            member = (table["study"] == study) & table["group"].isin([*cases, "control"])
            label = table["group"].isin(cases).astype(int)
            out[f"dx_{task}"] = pd.array(np.where(member, label, pd.NA), dtype="Int64")
    sev = table["severity"].to_numpy()
    noise = rng.standard_normal((4, len(table)))
    adni = table["study"] == "adni"
    mmse = np.clip(np.round(29.3 - 15.0 * sev**1.3 + 1.2 * noise[0]), 0, 30)
    out["score_mmse"] = np.where(adni, mmse, np.nan)
    latent = sev + 0.08 * noise[1]
    cdr = np.select([latent < 0.2, latent < 0.5, latent < 0.8], [0.0, 0.5, 1.0], 2.0)
    out["score_cdr"] = np.where(adni, cdr, np.nan)
    panss = np.clip(np.round(30 + 60 * sev + 10 * noise[2]), 30, 210)
    out["score_panss"] = np.where(table["group"] == "scz", panss, np.nan)
    ados = np.clip(np.round(2 + 5 * sev + noise[3]), 1, 10)
    out["score_ads"] = np.where(table["condition"] == "asd", ados, np.nan)
    return out
