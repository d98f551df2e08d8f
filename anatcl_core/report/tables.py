"""The report's numeric tables: per-seed values of every run, their mean ± std, the headline metrics.

Methods are summarised as mean ± std over their pretraining seeds (reference rows: one run, no
std); :func:`summarise` is the one summary of a long ``method, seed, metric, value`` table, used by
the result tables here and the ablation tables (:mod:`anatcl_core.report.ablation`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.atomic import atomic_write
from anatcl_core.report.results import Results


def _per_seed(results: Results, getter) -> pd.DataFrame:
    """Long table method, seed, metric, value from ``getter(probes) -> {metric: value}``."""
    runs = [*results.probes.items(), *(((name, 0), p) for name, p in results.references.items())]
    rows = [dict(method=m, seed=s, metric=k, value=v) for (m, s), p in runs for k, v in getter(p).items()]
    return pd.DataFrame(rows, columns=["method", "seed", "metric", "value"])


def summarise(long: pd.DataFrame, methods: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean and std (ddof 1; 0 with one seed) over seeds: methods x metrics, in the given order."""
    grouped = long.groupby(["method", "metric"], sort=False)["value"]
    metrics = list(dict.fromkeys(long["metric"]))
    mean = grouped.mean().unstack().reindex(index=methods, columns=metrics)
    std = grouped.std(ddof=1).fillna(0.0).unstack().reindex(index=methods, columns=metrics)
    return mean, std


def numeric_tables(results: Results) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """(mean, std) tables: diagnosis BAcc (+ average), AUC, scores (r, MAE), brain age."""
    def bacc(p):
        out = {t: r["balanced_accuracy"] for t, r in p["diagnosis"].items()}
        return {**out, "average": float(np.mean(list(out.values())))} if out else out

    getters = {
        "diagnosis_bacc": bacc,
        "diagnosis_auc": lambda p: {t: r["roc_auc"] for t, r in p["diagnosis"].items()},
        "scores_r": lambda p: {s: r["pearson_r"] for s, r in p["scores"].items()},
        "scores_mae": lambda p: {s: r["mae"] for s, r in p["scores"].items()},
        "brain_age": lambda p: {**({
            "MAE internal": p["brain_age"]["mae_internal"], "MAE external": p["brain_age"]["mae_external"],
            "site BAcc": p["brain_age"]["site_bacc_internal"], "score": p["brain_age"]["challenge_score"]}
            if "brain_age" in p else {}),
            **({"travelling ICC(2,1)": p["travelling_icc"]} if "travelling_icc" in p else {})},
    }
    return {name: summarise(_per_seed(results, g), results.rows) for name, g in getters.items()}


def format_table(mean: pd.DataFrame, std: pd.DataFrame, labels: dict[str, str], digits: int = 3) -> pd.DataFrame:
    """``mean ± std`` strings with display names (``–`` where missing; reference rows, one run
    each, without a std)."""
    text = mean.map(lambda v: f"{v:.{digits}f}") + " ± " + std.map(lambda v: f"{v:.{digits}f}")
    single = [m for m in mean.index if str(m).startswith("ref_")]
    text.loc[single] = mean.loc[single].map(lambda v: f"{v:.{digits}f}")
    text = text.where(mean.notna(), "–")
    text.index = [labels.get(m, m) for m in mean.index]
    return text



def headline_metrics(results: Results, numeric: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
                     claim_metrics: dict[str, dict]) -> dict[str, dict]:
    """Row -> its headline numbers for ``metrics.json``: seeds, mean balanced accuracy (± std), brain age
    (external MAE, site BAcc, challenge score) where run, and the claims' numbers (``claim_metrics``)."""
    headline = {}
    for method in results.rows:
        entry = {"n_seeds": int(sum(1 for m, _ in results.probes if m == method)) or 1}
        bacc, ba = numeric["diagnosis_bacc"], numeric["brain_age"]
        if "average" in bacc[0]:
            entry["bacc_average"] = float(bacc[0].loc[method, "average"])
            entry["bacc_average_std"] = float(bacc[1].loc[method, "average"])
        if "MAE external" in ba[0].columns and np.isfinite(ba[0].loc[method, "MAE external"]):
            entry["brain_age_mae_external"] = float(ba[0].loc[method, "MAE external"])
            entry["site_bacc"] = float(ba[0].loc[method, "site BAcc"])
            entry["challenge_score"] = float(ba[0].loc[method, "score"])
        entry.update(claim_metrics.get(method, {}))
        headline[method] = entry
    return headline


def write_tsv(frame: pd.DataFrame, path: str | Path) -> Path:
    """``frame`` (index included) as a tab-separated table at ``path``, atomically; returns ``path``."""
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, sep="\t")
    return Path(path)
