"""Who is scanned where: sites, the pretraining cohort, matched diagnostic cohorts, travelling heads.

Every draw uses a generator keyed by (seed, purpose, index), so a subject's anatomy does not depend
on how many subjects come before it or in which order they are rendered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from anatcl_core.synth.base import CLASSES

#: Recruitment profiles of sites (age range in years), cycled over sites as multi-site data do:
#: paediatric, young adult, lifespan, elderly, youth-to-midlife.
AGE_PROFILES: tuple[tuple[float, float], ...] = ((6.0, 18.0), (18.0, 35.0), (20.0, 80.0), (55.0, 88.0), (8.0, 60.0))
#: Downstream studies: diagnostic groups (the controls last), age range, share of males.
STUDIES: dict[str, dict] = {
    "ad": dict(groups=("ad", "mci", "control"), ages=(58.0, 88.0), male=0.5, code=100),
    "scz": dict(groups=("scz", "control"), ages=(18.0, 60.0), male=0.65, code=200),
    "asd": dict(groups=("asd", "control"), ages=(6.0, 22.0), male=0.8, code=300),
}  # fmt: skip
#: Severity ranges of each diagnostic group (0 for controls).
SEVERITY: dict[str, tuple[float, float]] = {
    "ad": (0.6, 1.0), "mci": (0.4, 0.7), "scz": (0.5, 1.5), "asd": (0.5, 1.5), "control": (0.0, 0.0),
}  # fmt: skip
#: Structures whose GM probability depends on the site's T1 contrast and coverage.
SITE_DEPENDENT: tuple[str, ...] = (
    "Thalamus-Proper", "Caudate", "Putamen", "Pallidum", "Accumbens-area", "VentralDC", "Cerebellum-Cortex", "Brain-Stem",
)  # fmt: skip
PURPOSES = ("population", "site", "pretrain", "downstream", "travelling", "render")


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


def make_site(config, code: int, ages: tuple[float, float], rng: np.random.Generator) -> Site:
    """Draw one site's scanner effects (within the ranges of ``config``)."""
    return Site(
        code=code, ages=ages, male=float(rng.uniform(0.4, 0.6)), field_t=float(rng.choice([1.5, 3.0])),
        log_gain=float(config.site_intensity_sd * rng.standard_normal()),
        gamma=float(np.exp(0.06 * rng.standard_normal())),
        noise_sd=float(rng.uniform(0.25, 1.0) * config.site_noise_max),
        fwhm_mm=float(rng.uniform(0.0, 1.0) * config.site_fwhm_max_mm),
        bias=config.site_bias * rng.standard_normal(9) / 3.0,
        fs_ct=float(0.02 * rng.standard_normal()), fs_sa=float(0.01 * rng.standard_normal()),
        tissue=_tissue_gains(config.site_tissue_sd, rng),
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


def downstream_sites(config) -> dict[str, list[Site]]:
    """Each downstream study's own sites (codes 100+, 200+, 300+)."""
    sites = {}
    for study, spec in STUDIES.items():
        codes = [spec["code"] + j for j in range(config.n_downstream_sites)]
        sites[study] = [make_site(config, c, spec["ages"], generator(config.seed, "site", c)) for c in codes]
    return sites


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
    """Matched case-control sets per study: one subject per group, same site and sex, ages within ~2 y.

    Returns one row per subject: participant_id, study, group, site, age, sex, severity.
    """
    rows = []
    number = 200001
    for study, spec in STUDIES.items():
        rng = generator(config.seed, "downstream", spec["code"])
        for j in range(config.n_per_group):
            site = sites[study][j % len(sites[study])]
            sex = int(rng.random() < spec["male"])
            base_age = rng.uniform(*spec["ages"])
            for group in spec["groups"]:
                age = float(np.round(np.clip(base_age + rng.normal(0.0, 1.0), *spec["ages"]), 2))
                rows.append(dict(participant_id=str(number), study=study, group=group, site=site.code,
                                 age=age, sex=sex, severity=float(rng.uniform(*SEVERITY[group]))))  # fmt: skip
                number += 1
    return pd.DataFrame(rows)


def clinical_scores(table: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Diagnosis columns (``dx_<task>``) and clinical scores (``score_<name>``) of downstream subjects.

    Tasks: ad (AD vs controls), mci (MCI vs the same controls), scz, asd. Scores: MMSE-like and
    CDR-like (whole AD study), PANSS-like (SCZ cases), ADOS-like severity 1-10 (``ads``, ASD cases).
    """
    rng = generator(seed, "downstream", 0)
    out = pd.DataFrame(index=table.index)
    is_study = {s: table["study"] == s for s in STUDIES}
    for task, study in (("ad", "ad"), ("mci", "ad"), ("scz", "scz"), ("asd", "asd")):
        member = is_study[study] & table["group"].isin([task, "control"])
        out[f"dx_{task}"] = pd.array(np.where(member, (table["group"] == task).astype(int), pd.NA), dtype="Int64")
    sev = table["severity"].to_numpy()
    noise = rng.standard_normal((4, len(table)))
    mmse = np.clip(np.round(29.3 - 15.0 * sev**1.3 + 1.2 * noise[0]), 0, 30)
    out["score_mmse"] = np.where(is_study["ad"], mmse, np.nan)
    latent = sev + 0.08 * noise[1]
    cdr = np.select([latent < 0.2, latent < 0.55, latent < 0.8], [0.0, 0.5, 1.0], 2.0)
    out["score_cdr"] = np.where(is_study["ad"], cdr, np.nan)
    panss = np.clip(np.round(30 + 60 * sev + 10 * noise[2]), 30, 210)
    out["score_panss"] = np.where(table["group"] == "scz", panss, np.nan)
    ados = np.clip(np.round(2 + 5 * sev + noise[3]), 1, 10)
    out["score_ads"] = np.where(table["group"] == "asd", ados, np.nan)
    return out
