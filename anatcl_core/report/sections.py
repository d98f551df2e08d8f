"""Report sections that read as a paper: cohort table, claims, observations, ablations not run.

Every sentence and number here is computed from stage outputs or the data's tables; nothing about
how methods rank is written in advance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data import arrays, layout
from anatcl_core.data.manifest import task_columns
from anatcl_core.data.openbhb import encode_sex

CLAIM_CAPTIONS = {
    "loso_bacc": "Leave-one-site-out balanced accuracy per task (pooled out-of-site predictions; C chosen "
                 "by inner group CV over the training sites only); mean over pretraining seeds.",
    "label_efficiency": "Balanced accuracy (mean over tasks and draws) with n labelled training subjects "
                        "per task (stratified, nested subsamples of fixed outer folds); all = whole training part.",
    "paired_vs_random": "Paired difference in balanced accuracy against random init on the same folds and "
                        "draws, mean over tasks, [95% CI] from subject resampling (a CI above 0: better than "
                        "random init).",
    "representation": "What the frozen features encode (downstream subjects, cross-validated): R² of the top "
                      "principal components of the true descriptors and of age (ridge), site balanced accuracy "
                      "(logistic) with its chance level.",
    "budget": "Training budget: LOSO balanced accuracy and descriptor R² against pretraining epochs (one seed).",
}


def _describe(frame: pd.DataFrame) -> dict:
    age = frame["age"].to_numpy(float)
    sex = pd.to_numeric(frame["sex"], errors="coerce")
    return {"subjects": int(len(frame)), "age (mean ± sd)": f"{age.mean():.1f} ± {age.std(ddof=1):.1f}"
            if len(frame) > 1 else "–", "male %": f"{100 * float(np.mean(sex == 1)):.0f}",
            "sites": int(frame["site"].nunique())}


def cohort_table(arrays_dir: str | Path) -> pd.DataFrame:
    """Subjects, age mean ± sd, share of males (sex code 1) and sites per pretraining split, downstream task
    and group, and travelling heads, from the tables of the cohort stage's arrays (``arrays_dir``)."""
    rows = {}
    participants = arrays.load_table(arrays_dir, "openbhb")
    participants = participants.assign(sex=encode_sex(participants["sex"], "openbhb sex"))
    for split in layout.SPLITS:
        rows[("pretraining", split)] = _describe(participants[participants["split"] == split])
    down = arrays.load_table(arrays_dir, "downstream")
    for column in task_columns(down):
        for label, group in ((1, "cases"), (0, "controls")):
            rows[(f"downstream {column[3:]}", group)] = _describe(down[down[column] == label])
    if "travelling" in arrays.cohort_names(arrays_dir):
        rows[("travelling heads", "scans")] = _describe(arrays.load_table(arrays_dir, "travelling"))
    return pd.DataFrame.from_dict(rows, orient="index")


def observations(bacc: pd.DataFrame, brain_age: pd.DataFrame, labels: dict[str, str],
                 floor: str = "random") -> list[str]:
    """Plain-language findings computed from the result tables (nothing in them is hard-coded).

    Args:
        bacc: mean balanced accuracy, methods x tasks, with an ``average`` column.
        brain_age: mean brain-age table, methods x (``MAE internal``, ``MAE external``, ...).
        labels: display names of the methods.
        floor: the method every other is compared with (the randomly initialised encoder).

    Returns:
        One sentence per finding; empty when the tables lack what a finding needs.
    """
    name = lambda m: labels.get(m, m)  # noqa: E731
    found = []
    if "average" in bacc.columns and floor in bacc.index and len(bacc.index) > 1:
        trained = bacc["average"].drop(index=[m for m in bacc.index if m == floor or m.startswith("ref_")])
        best, floor_bacc = trained.idxmax(), float(bacc.loc[floor, "average"])
        if floor_bacc >= trained.max():
            found.append(
                f"The randomly initialised encoder ({name(floor)}) reaches a mean balanced accuracy of "
                f"{floor_bacc:.3f}, at or above every trained method (best: {name(best)}, {trained.max():.3f}): "
                "on this cohort the diagnosis probes show no benefit of pretraining."
            )
        else:
            found.append(
                f"The best trained method on diagnosis, {name(best)} ({trained.max():.3f}), is "
                f"{trained.max() - floor_bacc:+.3f} above the random-init floor ({floor_bacc:.3f})."
            )
    if {"MAE internal", "MAE external"} <= set(brain_age.columns) and len(brain_age.index):
        ratio = brain_age["MAE external"] / brain_age["MAE internal"]
        external = brain_age["MAE external"]
        if ratio.min() > 1.5:
            verdict = "the probes do not transfer to scanners they have not seen"
        elif ratio.max() <= 1.2:
            verdict = ("unseen scanners cost the brain-age probes little here (OpenBHB's baselines: 1.4-2.7 times), "
                       "so site robustness shows in the leave-one-site-out diagnosis tasks instead")
        else:
            verdict = "unseen scanners cost some methods more than others"
        found.append(
            f"Brain-age error on unseen sites is {ratio.min():.1f}-{ratio.max():.1f} times the error on seen sites "
            f"({external.min():.1f}-{external.max():.1f} years on unseen sites): {verdict}."
        )
    return found



def claim_observations(tables: dict[str, pd.DataFrame], pairs: dict[str, dict], labels: dict[str, str],
                       floor: str = "random") -> list[str]:
    """Findings on unseen sites, few labels and the references, from the claims tables."""
    name = lambda m: labels.get(m, m)  # noqa: E731
    found = []
    trained = [m for m in pairs if not m.startswith("ref_")]

    def verdict(key: str, what: str) -> None:
        have = [m for m in trained if key in pairs[m]]
        if not have:
            return
        above = [m for m in have if pairs[m][key]["ci"][0] > 0]
        below = [m for m in have if pairs[m][key]["ci"][1] < 0]
        best = max(have, key=lambda m: pairs[m][key]["difference"])
        s = pairs[best][key]
        found.append(
            f"{what}: {len(above)} of {len(have)} pretrained encoders beat random init with a 95% CI above zero"
            f"{' (' + ', '.join(name(m) for m in above) + ')' if above else ''}, {len(below)} fall below it; "
            f"the largest paired difference is {name(best)}'s {s['difference']:+.3f} "
            f"[{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}].")

    verdict("loso_mean", "Across unseen sites (leave-one-site-out)")
    small = sorted((k for m in trained for k in pairs[m] if k.startswith("le_n")), key=lambda k: int(k[4:]))
    if small:
        verdict(small[0], f"With {small[0][4:]} labelled subjects per task")
    loso = tables.get("loso_bacc", pd.DataFrame())
    if "average" in loso.columns:
        refs = [m for m in loso.index if m.startswith("ref_")]
        methods = [m for m in loso.index if not m.startswith("ref_")]
        if refs and methods:
            best = loso.loc[methods, "average"].idxmax()
            found.append("Leave-one-site-out mean balanced accuracy of the reference rows: " + ", ".join(
                f"{name(r)} {loso.loc[r, 'average']:.3f}" for r in refs)
                + f"; best encoder {name(best)} {loso.loc[best, 'average']:.3f}.")
    rep = tables.get("representation", pd.DataFrame())
    if "descriptor R²" in rep.columns and rep["descriptor R²"].notna().any():
        enc = rep.drop(index=[m for m in rep.index if m.startswith("ref_")])["descriptor R²"].dropna()
        if len(enc):
            found.append(f"Descriptor-PC R² from frozen features ranges {enc.min():.2f}-{enc.max():.2f} over the "
                         f"encoders ({name(enc.idxmax())} highest"
                         + (f"; random init {enc[floor]:.2f}" if floor in enc.index else "") + ").")
    return found


def figure_source(path: str | Path) -> str:
    """Which stage wrote a figure and where: ``"<stage> stage, outputs/<stage>/figures/<name>.png"``.

    A stage writes its figures under ``<its output folder>/figures/``, and the output folder is named
    after the stage; the file is shown from ``outputs/`` when it lies under one, else from the stage's folder.
    """
    parts = Path(path).parts
    stage = Path(path).parent.parent.name
    start = len(parts) - 1 - parts[::-1].index("outputs") if "outputs" in parts[:-1] else len(parts) - 3
    return f"{stage} stage, {'/'.join(parts[max(start, 0):])}"


def ablations_not_run(study) -> pd.DataFrame:
    """One row per ablation with variants not run (or not defined) and the command that runs them."""
    rows = []
    for item in study.ablations:
        if item.not_run or item.undefined:
            rows.append({"ablation": item.name, "not run": ", ".join(item.not_run),
                         "undefined": ", ".join(item.undefined), "command": study.commands.get(item.name, "")})
    return pd.DataFrame(rows, columns=["ablation", "not run", "undefined", "command"])


def budget_note(budget: pd.DataFrame, variants: list[str], command: str) -> str:
    """The budget section's text when the curve was not run (which variants are missing, the command)."""
    missing = [v for v in variants if v not in set(budget["variant"])]
    if not missing:
        return ""
    return (f"Not run in this profile: {', '.join(missing)}. Command: {command}")
