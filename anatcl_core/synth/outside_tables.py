"""Calibration checks of what the FreeSurfer tables do not hold: their measurement error, and the
subcortical and within-region (focal) effects that only the maps carry.

* Test-retest of the tables: every pretraining scan's table drawn a second time (a retest session at
  the same site, no rendering); ICC(3,1) per region and channel, median over regions. Target:
  thickness in [0.82, 0.95], area and volume in [0.97, 0.995] (FreeSurfer reliability, REFERENCE.md
  §6: thickness > 0.82, area and volume > 0.97; not 1: a table is a measurement).
* Subcortical effects of the latent anatomy (the volumes FreeSurfer's aseg measures; re-drawn, no
  rendering): ENIGMA's schizophrenia d (van Erp et al., Mol Psychiatry 2016) and AD's amygdala
  (Poulin et al. 2011).
* Focal effects on the maps: Cohen's d of a spot's within-region GM contrast
  (:func:`.measures.focal_contrast`), which a regional table cannot see (:mod:`.focal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anatcl_core.data import layout
from anatcl_core.synth import measures


@dataclass(frozen=True)
class Check:
    """One row of the calibration table: what, the value measured, its target and whether it holds.

    ``info`` rows are reported with their verdict but are not targets (the table's exit status and the
    tests ignore them).
    """

    name: str
    value: float
    target: str
    reference: str
    passed: bool
    info: bool = False


def healthy_factors(config, sessions: tuple[int, ...] = (1,)) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Re-draw the pretraining cohort's anatomy (no rendering): ids, ``(N, L)`` factors and ``(N, 7, 68)``
    FreeSurfer tables, or ``(N, S, 7, 68)`` for several ``sessions``: session 1 gives the tables as written,
    another number a retest of every scan (the same anatomy, measured again)."""
    from anatcl_core.synth import cohorts
    from anatcl_core.synth.anatomy import make_population, sample_anatomy
    from anatcl_core.synth.generate import scan_table

    population = make_population(cohorts.generator(config.seed, "population", 0))
    sites = cohorts.pretraining_sites(config)
    table = cohorts.pretraining_table(config, sites)
    factors, tables = [], []
    for i, row in enumerate(table.itertuples(index=False)):
        anatomy = sample_anatomy(config, population, cohorts.generator(config.seed, "pretrain", 1, i), row.age, row.sex)
        factors.append(anatomy.factors)
        tables.append([scan_table(config, anatomy, sites[row.site], ("render", s, i)) for s in sessions])
    tables = np.array(tables)
    return list(table["participant_id"]), np.stack(factors), tables[:, 0] if len(sessions) == 1 else tables


def icc_consistency(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """ICC(3,1) (two-way mixed, consistency) of each column of two ``(N, K)`` sessions.

    The same quantity as :func:`anatcl_core.evaluation.reliability.icc` with ``kind="3,1"``, which lies
    above the generator (``tests/test_architecture.py``): the generator's checks keep their own.
    """
    both = np.stack([first, second], axis=-1)  # (N, K, 2)
    n = len(both)
    subject = both.mean(-1)
    grand = both.mean(axis=(0, -1))
    ms_subject = 2.0 * ((subject - grand) ** 2).sum(0) / (n - 1)
    residual = both - subject[..., None] - both.mean(0, keepdims=True) + grand[:, None]
    ms_error = (residual**2).sum(axis=(0, -1)) / (n - 1)
    return (ms_subject - ms_error) / (ms_subject + ms_error)


def retest_icc(config) -> dict[str, float]:
    """Median regional test-retest ICC(3,1) of log thickness (CT), area (SA) and volume (GMV)."""
    from anatcl_core.data.freesurfer import channel_index

    _, _, sessions = healthy_factors(config, (1, 9))  # (N, 2, 7, 68): one anatomy, two measurements
    log = {name: np.log(sessions[:, :, channel_index(name)]) for name in ("CT", "SA", "GMV")}
    return {name: float(np.median(icc_consistency(x[:, 0], x[:, 1]))) for name, x in log.items()}


def latent_subcortical(config) -> tuple[object, np.ndarray]:
    """The downstream cohort's table (study, group, condition) and ``(N, len(SUBCORTICAL))`` true log
    subcortical volumes (re-drawn, no rendering)."""
    from anatcl_core.synth import cohorts
    from anatcl_core.synth.anatomy import N_CORTICAL, make_population, sample_anatomy

    population = make_population(cohorts.generator(config.seed, "population", 0))
    table = cohorts.downstream_table(config, cohorts.downstream_sites(config))
    volumes = [sample_anatomy(config, population, cohorts.generator(config.seed, "downstream", 1, i), row.age,
                              row.sex, condition=row.condition or None, severity=row.severity).log_modulation[N_CORTICAL:]
               for i, row in enumerate(table.itertuples(index=False))]  # fmt: skip
    return table, np.stack(volumes)


#: (group, its studies' controls, structure, low, high, reference) of the latent subcortical d.
SUBCORTICAL_TARGETS = (
    ("scz", ("scz_a", "scz_b"), "Hippocampus", -0.75, -0.2, "van Erp 2016: -0.46"),
    ("scz", ("scz_a", "scz_b"), "Thalamus-Proper", -0.6, -0.1, "van Erp 2016: -0.31"),
    ("scz", ("scz_a", "scz_b"), "Accumbens-area", -0.55, -0.05, "van Erp 2016: -0.25"),
    ("scz", ("scz_a", "scz_b"), "Pallidum", 0.0, 0.45, "van Erp 2016: +0.21"),
    ("ad", ("adni",), "Amygdala", -2.0, -0.8, "Poulin 2011: close to hippocampus"),
)
#: (spot, task, low, high, reference) of the focal within-region contrasts on the maps.
FOCAL_TARGETS = (
    ("anterior_hippocampus", "ad", -2.2, -0.5, "Ferreira 2011: medial temporal VBM peak"),
    ("superior_temporal", "scz_a", -1.0, -0.2, "Honea 2005: left STG, VBM"),
)


def checks(out: Path, config) -> list[Check]:
    """The rows of this module's targets (module docstring) for a generated benchmark."""
    from anatcl_core.synth.base import SUBCORTICAL

    rows = []
    icc = retest_icc(config)
    for name, (low, high) in (("CT", (0.82, 0.95)), ("SA", (0.97, 0.995)), ("GMV", (0.97, 0.995))):
        rows.append(Check(f"tables: test-retest ICC of regional {name} (median)", icc[name], f"in [{low}, {high}]",
                          "FreeSurfer: CT > 0.82, SA/GMV > 0.97", low <= icc[name] <= high))  # fmt: skip
    table, volumes = latent_subcortical(config)
    for group, studies, structure, low, high, reference in SUBCORTICAL_TARGETS:
        member = table["study"].isin(studies).to_numpy() & table["group"].isin([group, "control"]).to_numpy()
        columns = [SUBCORTICAL.index(f"{side}-{structure}") for side in ("Left", "Right")]
        d = measures.cohens_d(volumes[member][:, columns].mean(1), (table["group"][member] == group).to_numpy().astype(int))
        rows.append(Check(f"latent {structure} volume, {group}: Cohen's d", d, f"in [{low}, {high}]", reference,
                          low <= d <= high))  # fmt: skip
    downstream = layout.cohort_path(out, "downstream")
    for spot, task, low, high, reference in FOCAL_TARGETS:
        manifest, contrast = measures.focal_contrast(downstream, config.voxel_mm, spot)
        member = manifest[layout.DX_PREFIX + task].notna().to_numpy()
        d = measures.cohens_d(contrast[member], manifest.loc[member, layout.DX_PREFIX + task].astype(int).to_numpy())
        rows.append(Check(f"focal {spot} contrast (maps), {task}: Cohen's d", d, f"in [{low}, {high}]", reference,
                          low <= d <= high))  # fmt: skip
    return rows
