"""The benchmark's calibration checks: each measured value next to its published target.

Every target of the package docstring is checked on the files as written, with sklearn estimators
and no encoder (:mod:`.measures`), before any method is compared. ``python -m
anatcl_core.synth.checks --data data --params params.yaml`` prints the table and exits 1 if a
check fails; the test suite asserts the same rows (``tests/test_synth_properties.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data import layout
from anatcl_core.data.freesurfer import DEFAULT_CHANNELS, channel_index, select_channels
from anatcl_core.synth import measures, outside_tables
from anatcl_core.synth.outside_tables import Check, healthy_factors
from anatcl_core.synth.base import load_base


def _r2(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-column R^2 of an OLS fit of ``targets (N, K)`` on ``design (N, P)`` (intercept added)."""
    design = np.column_stack([np.ones(len(design)), design])
    coef, *_ = np.linalg.lstsq(design, targets, rcond=None)
    residual = targets - design @ coef
    centred = targets - targets.mean(0)
    return 1.0 - (residual**2).sum(0) / (centred**2).sum(0)


def descriptor_variance_shares(config) -> dict[str, float]:
    """Mean R^2 over the z-scored healthy descriptors (CT, GMV, SA) of each source of variation:
    the latent factors (re-drawn with :func:`healthy_factors`), age (cubic), site, sex."""
    from anatcl_core.synth import cohorts

    table = cohorts.pretraining_table(config, cohorts.pretraining_sites(config))
    _, factors, tables = healthy_factors(config)
    desc = select_channels(tables, DEFAULT_CHANNELS).reshape(len(tables), -1)
    desc = (desc - desc.mean(0)) / (desc.std(0) + 1e-8)
    age = table["age"].to_numpy(float)
    designs = dict(
        latent=factors,
        age=np.column_stack([age, age**2, age**3]) / np.array([100.0, 1e4, 1e6]),
        site=pd.get_dummies(table["site"]).to_numpy(float)[:, 1:],
        sex=table["sex"].to_numpy(float)[:, None],
    )
    return {name: float(_r2(design, desc).mean()) for name, design in designs.items()}


def region_sum_agreement(root: Path, voxel_mm: float) -> float:
    """Median over Desikan regions of r(summed GM of the region's voxels, its FreeSurfer GMV)."""
    _, rois, maps = measures.read_pretraining(root, images=True)
    classes = load_base(voxel_mm).classes
    gmv = rois[:, channel_index("GMV")]  # (N, 68)
    rs = [np.corrcoef(maps[:, classes == r].sum(1), gmv[:, r])[0, 1] for r in range(gmv.shape[1])
          if (classes == r).any()]  # fmt: skip
    return float(np.median(rs))


def _band(value: float, low: float, high: float) -> bool:
    return bool(low <= value <= high)


def run_checks(out_dir: str | Path, config) -> list[Check]:
    """Every calibration check on a generated benchmark (``config`` generated it)."""
    out = Path(out_dir)
    rows = []
    split = measures.travelling_variance_split(layout.cohort_path(out, "travelling"))
    suckling = "Suckling 2012: subject 0.70-0.80"
    rows.append(Check("travelling heads: subject share of voxel variance", split["subject"], ">= 0.5", suckling,
                      split["subject"] >= 0.5))  # fmt: skip
    rows.append(Check("travelling heads: site share of voxel variance", split["site"], "<= 0.25",
                      "Suckling 2012: centre small, subject + centre + error > 0.9",
                      split["site"] <= 0.25))  # fmt: skip
    site = measures.site_from_voxels(layout.cohort_path(out, "openbhb"))
    rows.append(Check(f"site from 64 raw voxel PCs ({site['n_sites']} sites, bal. acc.)", site["balanced_accuracy"],
                      f">= {3 * site['chance']:.3f} (3x chance), <= 0.85",
                      "Wachinger 2021: ~0.72 over 17 studies", _band(site["balanced_accuracy"], 3 * site["chance"], 0.85)))
    ages = measures.brain_age_errors(layout.cohort_path(out, "openbhb"))
    for name, bound in (("voxel_pcs", 2.0), ("descriptors", 1.5)):
        e = ages[name]
        rows.append(Check(f"brain age ext/int MAE, ridge on {name} ({e['external_test']:.1f}/{e['internal_test']:.1f} y)",
                          e["ratio"], f"<= {bound}", "OpenBHB baselines: 3.5-7.1 / 2.55-2.72 y",
                          e["ratio"] <= bound))  # fmt: skip
    rows.extend(_age_sign_checks(ages))
    for name, study in measures.study_recruitment(layout.cohort_path(out, "downstream")).items():
        rows.append(Check(f"study {name}: sites", study["n_sites"], ">= 5", "issue 9; ABIDE I: 17 sites",
                          study["n_sites"] >= 5))  # fmt: skip
        rows.append(Check(f"study {name}: site case shares {study['share_min']:.2f}-{study['share_max']:.2f}",
                          study["share_max"] - study["share_min"], "spread >= 0.1, all in [0.3, 0.7]",
                          "ABIDE I: 30-70 % per site", study["share_max"] - study["share_min"] >= 0.1
                          and _band(study["share_min"], 0.3, 0.7) and _band(study["share_max"], 0.3, 0.7)))  # fmt: skip
    rows.extend(_difficulty_checks(measures.task_accuracy(layout.cohort_path(out, "downstream"))))
    rows.extend(_effect_checks(measures.effect_sizes(layout.cohort_path(out, "downstream"), config.voxel_mm)))
    rows.extend(outside_tables.checks(out, config))
    shares = descriptor_variance_shares(config)
    rows.append(Check("descriptors: latent anatomy share of variance", shares["latent"],
                      f"> age {shares['age']:.2f}, site {shares['site']:.2f}, sex {shares['sex']:.2f}",
                      "design: individual anatomy dominates",
                      shares["latent"] > max(shares["age"], shares["site"], shares["sex"])))  # fmt: skip
    r = region_sum_agreement(layout.cohort_path(out, "openbhb"), config.voxel_mm)
    rows.append(Check("images: median r(regional GM sum, FreeSurfer GMV)", r, "> 0.9",
                      "design: maps and tables measure one anatomy", r > 0.9))  # fmt: skip
    return rows


#: (task, measure, low, high, reference) of the univariate effect sizes (Cohen's d, cases - controls).
EFFECT_TARGETS: tuple[tuple[str, str, float, float, str], ...] = (
    ("ad", "hippocampus_gm", -2.0, -1.0, "Shi 2009: -1.5 to -1.6"),
    ("ad", "entorhinal_ct", -2.0, -1.0, "ADNI thickness: ~-1.5"),
    ("mci", "hippocampus_gm", -1.2, -0.5, "Shi 2009: -0.8 to -0.9"),
    ("scz_a", "mean_ct", -0.8, -0.3, "van Erp 2018: -0.53"),
    ("scz_b", "mean_ct", -0.8, -0.3, "van Erp 2018: -0.53"),
    ("scz_a", "total_sa", -0.5, -0.1, "van Erp 2018: -0.25"),
    ("asd", "max_regional_ct", 0.0, 0.35, "van Rooij 2018: <~0.2"),
)


#: Published leave-site-out ceilings per task family (low, high, source) for both model-free probes.
CEILINGS: dict[str, tuple[float, float, str]] = {
    "ad": (0.80, 0.95, "AD vs CN ~0.85-0.9 (Cuingnet 2011; Wen 2020)"),
    "mci": (0.60, 0.82, "MCI vs CN: between autism and AD (Cuingnet 2011)"),
    "scz": (0.62, 0.80, "SCZ ~0.7-0.75 (Dufumier 2024 ext. AUC 0.75; Rozycki 2018)"),
    "asd": (0.50, 0.68, "autism ~0.6 (Haar 2016 < 0.6; Dufumier 2024 ext. AUC 0.63)"),
}
#: Task family of every downstream task.
FAMILY = {"ad": "ad", "mci": "mci", "scz_a": "scz", "scz_b": "scz", "asd": "asd", "autistic": "asd",
          "asperger": "asd", "pddnos": "asd"}


def _difficulty_checks(accuracy: dict[str, dict[str, float]]) -> list[Check]:
    """Per task: both probes inside the family's published ceiling band, the sign of tables vs voxels
    as published, age + sex at chance, and (info) what pooled CV would have said."""
    rows = []
    for task, acc in accuracy.items():
        low, high, source = CEILINGS[FAMILY.get(task, "asd")]
        for probe, label in (("descriptors", "tables"), ("voxels", "64 voxel PCs")):
            rows.append(Check(f"{task}: {label}, leave-site-out bal. acc.", acc[probe], f"in [{low}, {high}]",
                              source, _band(acc[probe], low, high)))  # fmt: skip
        gap = acc["voxels"] - acc["descriptors"]
        if FAMILY.get(task) in ("ad", "mci"):
            rows.append(Check(f"{task}: voxels minus tables", gap, "|.| <= 0.07",
                              "Cuingnet 2011: voxel- and thickness-based alike", abs(gap) <= 0.07))  # fmt: skip
        else:
            rows.append(Check(f"{task}: voxels minus tables", gap, ">= -0.05",
                              "VBM (Dufumier 2024) >= regional FreeSurfer (Nunes 2020)", gap >= -0.05))  # fmt: skip
        cost = acc["descriptors_pooled"] - acc["descriptors"]
        rows.append(Check(f"{task}: tables, pooled CV minus leave-site-out", cost, "<= 0.07 (info)",
                          "Nunes 2020, Rozycki 2018: 0-7 points", cost <= 0.07, info=True))  # fmt: skip
        rows.append(Check(f"{task}: age + sex, leave-site-out bal. acc.", acc["age_sex"], "<= 0.62",
                          "matched within site", acc["age_sex"] <= 0.62))  # fmt: skip
    return rows


def _age_sign_checks(ages: dict[str, dict[str, float]]) -> list[Check]:
    """Brain age from voxels at least as good as from the tables on unseen sites (target); seen sites: info."""
    voxels, tables = ages["voxel_pcs"], ages["descriptors"]
    source = "BrainFMBench: voxel features 5.1 y vs Desikan 9.1 y (NKI)"
    unseen = tables["external_test"] - voxels["external_test"]
    seen = tables["internal_test"] - voxels["internal_test"]
    return [Check("brain age, unseen sites: tables MAE minus voxels MAE (y)", unseen, ">= 0", source, unseen >= 0),
            Check("brain age, seen sites: tables MAE minus voxels MAE (y)", seen, ">= 0 (info)", source, seen >= 0,
                  info=True)]


def _effect_checks(effects: dict[str, dict[str, float]]) -> list[Check]:
    rows = []
    for task, measure, low, high, reference in EFFECT_TARGETS:
        if task in effects:
            value = effects[task][measure]
            rows.append(Check(f"{task}: Cohen's d of {measure}", value, f"in [{low}, {high}]", reference,
                              _band(value, low, high)))  # fmt: skip
    return rows


def format_table(rows: list[Check]) -> str:
    """The checks as a fixed-width text table (one line per check)."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'check':<{width}}  {'value':>7}  {'target':<36}  {'ok':<4}  reference"]
    for r in rows:
        verdict = ("yes" if r.passed else "NO") + ("*" if r.info else "")
        lines.append(f"{r.name:<{width}}  {r.value:>7.3f}  {r.target:<36}  {verdict:<4}  {r.reference}")
    lines.append("* info: reported as it comes, not a target (the exit status ignores it)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the calibration table of a generated benchmark; exit status 1 if a check fails."""
    from anatcl_core.config import load_section
    from anatcl_core.synth.config import SynthConfig

    parser = argparse.ArgumentParser(prog="python -m anatcl_core.synth.checks", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"), help="generated benchmark folder")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameter file (synth: section)")
    args = parser.parse_args(argv)
    rows = run_checks(args.data, load_section(args.params, "synth", SynthConfig))
    sys.stdout.write(format_table(rows) + "\n")
    return 0 if all(r.passed or r.info for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
