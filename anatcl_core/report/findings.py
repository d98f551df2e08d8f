"""Published real-data findings, reproduced or not by this run: the report's findings table.

Each row is a finding published on real data (its source cited below), the run's value with a
95% CI from the report's subject bootstrap, and a verdict decided by one rule (:func:`verdict`),
never written by hand:

- an **ordering** (``levels``, best first; every row of a level against every row of the next) is
  measured by the *smallest* of its oriented paired differences (better minus worse for balanced
  accuracy and ICC, worse minus better for MAE), taken replicate by replicate on the same
  resamples, so one CI covers every comparison at once (an intersection-union test);
- a **published range** ``[low, high]`` is measured by the row's value and its bootstrap CI.

Rule: the CI entirely on the claimed side (difference > 0; inside the range) = reproduced; entirely
on the other side (difference < 0; no overlap with the range) = not reproduced; else inconclusive.
A finding whose rows this run lacks is "not run".

Model-free findings (tables vs voxels, task difficulty) are the generator's calibration targets
(``anatcl_core.synth``); findings about encoders never are: they are reported as they come.
The measures are computed by :mod:`anatcl_core.report.finding_measures`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The verdict rule, as the report states it.
RULE = ("Verdict: the 95% CI entirely on the claimed side (an ordering's smallest paired difference above 0; "
        "a value inside the published range) = reproduced; entirely on the other side (below 0; no overlap "
        "with the range) = not reproduced; otherwise inconclusive; rows this run lacks = not run. CIs: "
        "subject bootstrap, the same resamples for every row, pretraining seeds averaged inside each "
        "replicate. Model-free findings (tables vs voxels, task difficulty) are calibration targets of the "
        "generator; findings about encoders are never targets and are reported as they came out.")
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = "reproduced", "not reproduced", "inconclusive", "not run"
#: ``dvc metrics`` code of each verdict (a finding not run has none).
CODES = {REPRODUCED: 1, INCONCLUSIVE: 0, NOT_REPRODUCED: -1}
#: Measures where lower is better.
LOWER_IS_BETTER = frozenset({"age_mae"})
MEASURES = {"loso_mean": "LOSO balanced accuracy, mean over tasks",
            "age_mae": "brain-age MAE (years), pretraining test splits",
            "sex_bacc": "sex balanced accuracy, pretraining test splits",
            "icc": "travelling heads: median ICC(2,1) over dimensions"}

ANATCL = ("anatcl_global", "anatcl_local")
BRAINFMBENCH = "BrainFMBench (epics-lab/BrainFMBench; un-CNN: Encin et al., bioRxiv 2026.06.07.730652)"
PAPER = "Barbano et al., arXiv 2408.07079 (AnatCL; REFERENCE §1.5)"


@dataclass(frozen=True)
class Finding:
    """One published finding: ``levels`` (an ordering, best first) or one row and a ``target`` range."""

    key: str
    claim: str
    source: str
    measure: str  # a MEASURES key, or "loso:<family>" (FAMILIES)
    levels: tuple[tuple[str, ...], ...]
    target: tuple[float, float] | None = None


#: Task families of the difficulty findings: ``dx_`` task names (without the prefix) of each.
FAMILIES = {"ad": ("ad",), "scz": ("scz_a", "scz_b"), "asd": ("asd",)}
#: Published leave-site-out ceilings per family, with their sources (balanced accuracy or AUC).
CEILINGS = {
    "ad": ((0.85, 0.90), "AD vs controls: balanced accuracy ~0.85-0.89 on ADNI and on AIBL, unseen "
                         "in training (Wen et al., Med Image Anal 2020, 63:101694)"),
    "scz": ((0.70, 0.75), "schizophrenia: external-site AUC 0.75 (DenseNet on VBM, Dufumier et al., "
                          "NeuroImage 2024); leave-site-out accuracy 72-77 % (Rozycki et al. 2018)"),
    "asd": ((0.55, 0.65), "autism: external-site AUC 0.63 (Dufumier et al. 2024); ABIDE from anatomical "
                          "features < 60 % (Haar et al., Cereb Cortex 2016)"),
}


def _difficulty(family: str, row: str, what: str) -> Finding:
    target, source = CEILINGS[family]
    return Finding(f"difficulty_{family}_{row[4:]}", f"{family.upper()} across sites from {what} within the "
                   f"published range {target[0]:.2f}-{target[1]:.2f}", source, f"loso:{family}", ((row,),), target)


FINDINGS: tuple[Finding, ...] = (
    Finding("paper_anatcl_yaware_simclr", "AnatCL (global, local) ≥ y-Aware ≥ SimCLR on mean balanced accuracy",
            PAPER, "loso_mean", (ANATCL, ("yaware",), ("simclr",))),
    Finding("paper_anatomy_and_age", "anatomy + age (AnatCL-global) ≥ anatomy alone and ≥ age alone (y-Aware)",
            PAPER, "loso_mean", (("anatcl_global",), ("anatomy_only", "yaware"))),
    Finding("icc_ordering", "between-scanner ICC: AnatCL 0.97 > FreeSurfer 0.93 > y-Aware 0.81 > SimCLR 0.25-0.45",
            "Navarro-González et al., medRxiv 2026 (ON-Harmony travelling heads, 8 scanners)", "icc",
            (ANATCL, ("ref_descriptors",), ("yaware",), ("simclr",))),
    Finding("uncnn_age", "un-CNN ≥ AnatCL on age: MAE NKI 5.11 vs 6.19-6.26 y, HBN 1.51 vs 1.91",
            BRAINFMBENCH, "age_mae", (("ref_uncnn",), ANATCL)),
    Finding("uncnn_sex", "un-CNN ≥ AnatCL on sex: balanced accuracy NKI 0.857 vs 0.738-0.765, HBN 0.760 vs 0.703-0.721",
            BRAINFMBENCH, "sex_bacc", (("ref_uncnn",), ANATCL)),
    Finding("voxels_vs_tables_age", "voxel features ≥ FreeSurfer tables on brain age (Desikan MAE NKI 9.09, "
            "HBN 2.16 y vs 5.11, 1.51 for the un-CNN)", BRAINFMBENCH, "age_mae",
            (("ref_voxel_pcs",), ("ref_descriptors",))),
    Finding("voxels_vs_tables_diagnosis", "voxel features ≥ FreeSurfer tables on diagnosis across sites",
            "VBM DenseNet external AUC 0.75 / 0.68 / 0.63 for SCZ / BD / ASD (Dufumier et al., NeuroImage 2024) "
            "vs regional FreeSurfer classifiers 0.55-0.65 across sites (Nunes et al. 2020; Haar et al. 2016)",
            "loso_mean", (("ref_voxel_pcs",), ("ref_descriptors",))),
    *(_difficulty(f, row, what) for f in FAMILIES
      for row, what in (("ref_descriptors", "the FreeSurfer tables"), ("ref_voxel_pcs", "voxel PCs"))),
)

#: measure, row -> (point, replicates) or None when the run lacks it (:mod:`anatcl_core.report.finding_measures`).
MeasureFn = Callable[[str, str], "tuple[float, np.ndarray] | None"]


def verdict(low: float, high: float, target: tuple[float, float] | None = None) -> str:
    """The rule of the module docstring for a CI ``[low, high]`` (of a difference, or of a value
    against ``target``)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if target is None:
        return REPRODUCED if low > 0 else NOT_REPRODUCED if high < 0 else INCONCLUSIVE
    return (REPRODUCED if target[0] <= low and high <= target[1]
            else NOT_REPRODUCED if high < target[0] or low > target[1] else INCONCLUSIVE)


def _ci(replicates: np.ndarray) -> tuple[float, float]:
    if not len(replicates) or not np.isfinite(replicates).any():
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(replicates, [2.5, 97.5])
    return float(lo), float(hi)


def evaluate_finding(finding: Finding, measure: MeasureFn, label: Callable[[str], str] = str) -> dict:
    """One row of the findings table: ``value``, ``ci_low``, ``ci_high``, ``verdict``, ``detail``
    (each comparison's difference and CI, or the value against its range), ``missing`` rows."""
    rows = [r for level in finding.levels for r in level]
    got = {r: measure(finding.measure, r) for r in dict.fromkeys(rows)}
    missing = [r for r, v in got.items() if v is None]
    out = {"key": finding.key, "finding": finding.claim, "source": finding.source, "measure": finding.measure,
           "target_low": finding.target[0] if finding.target else None,
           "target_high": finding.target[1] if finding.target else None}
    if missing:
        return {**out, "value": None, "ci_low": None, "ci_high": None, "verdict": NOT_RUN,
                "detail": "this run lacks " + ", ".join(label(r) for r in missing), "missing": missing}
    if finding.target is not None:
        point, reps = got[rows[0]]
        lo, hi = _ci(reps)
        detail = f"{label(rows[0])} {point:.3f} [{lo:.3f}, {hi:.3f}]; published {finding.target[0]:.2f}-{finding.target[1]:.2f}"
        return {**out, "value": point, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi, finding.target),
                "detail": detail, "missing": []}
    sign = -1.0 if finding.measure in LOWER_IS_BETTER else 1.0
    points, reps, parts = [], [], []
    for better_level, worse_level in zip(finding.levels, finding.levels[1:]):
        for better in better_level:
            for worse in worse_level:
                (pa, ra), (pb, rb) = got[better], got[worse]
                d, r = sign * (pa - pb), sign * (ra - rb)
                lo, hi = _ci(r)
                points.append(d)
                reps.append(r)
                parts.append(f"{label(better)} vs {label(worse)} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    point, combined = float(np.min(points)), np.min(np.stack(reps), axis=0)  # (B,): replicate-wise worst case
    lo, hi = _ci(combined)
    return {**out, "value": point, "ci_low": lo, "ci_high": hi, "verdict": verdict(lo, hi),
            "detail": "; ".join(parts), "missing": []}


def findings_table(measure: MeasureFn, label: Callable[[str], str] = str,
                   findings: tuple[Finding, ...] = FINDINGS) -> pd.DataFrame:
    """Every finding evaluated (:func:`evaluate_finding`), one row each, in ``findings`` order."""
    columns = ["key", "finding", "source", "measure", "value", "ci_low", "ci_high", "target_low",
               "target_high", "verdict", "detail"]
    rows = [evaluate_finding(f, measure, label) for f in findings]
    return pd.DataFrame(rows, columns=columns).set_index("key")


def findings_metrics(table: pd.DataFrame) -> dict[str, dict]:
    """``findings.json`` for ``dvc metrics``: per finding its verdict (text and code) and value with CI."""
    out = {}
    for key, row in table.iterrows():
        entry = {"verdict": row["verdict"]}
        if row["verdict"] in CODES:
            entry.update(verdict_code=CODES[row["verdict"]], value=float(row["value"]),
                         ci_low=float(row["ci_low"]), ci_high=float(row["ci_high"]))
        out[str(key)] = {k: v for k, v in entry.items() if not isinstance(v, float) or np.isfinite(v)}
    return out


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The report's view: finding, source, measure, value [95% CI], verdict, detail."""
    def value(row) -> str:
        if row["value"] is None or not np.isfinite(row["value"]):
            return "–"
        fmt = "+.3f" if row["target_low"] is None or not np.isfinite(row["target_low"]) else ".3f"
        return f"{row['value']:{fmt}} [{row['ci_low']:{fmt}}, {row['ci_high']:{fmt}}]"

    measure = table["measure"].map(lambda m: MEASURES.get(m, f"LOSO balanced accuracy, {m[5:].upper()} tasks"))
    return pd.DataFrame({"finding": table["finding"], "source": table["source"], "measure": measure,
                         "this run [95% CI]": table.apply(value, axis=1), "verdict": table["verdict"],
                         "comparisons": table["detail"]}, index=table.index)
