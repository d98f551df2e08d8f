"""Report tables for the claims: unseen sites, few labels, paired differences, what encoders encode.

Reads what the evaluate and reference stages wrote (``probes.json``, ``predictions.npz``) and
builds, per method (mean over its pretraining seeds; reference rows have one run):

- leave-one-site-out balanced accuracy per task and averaged over tasks;
- the label-efficiency curve (balanced accuracy per point, averaged over tasks);
- the representation read-outs (descriptor-PC R², age R², site balanced accuracy);
- the **paired difference against random init** (:mod:`anatcl_core.evaluation.paired`) of the LOSO mean and
  of every label-efficiency point, with its 95% CI, subjects resampled the same way for both
  members of a pair, tasks averaged replicate by replicate;
- the training-budget curve of ``report.budget``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data.files import read_npy
from anatcl_core.evaluation import paired

PREDICTIONS_FILE = "predictions.npz"


def _read_predictions(path: Path) -> dict[str, np.ndarray]:
    """A run's ``predictions.npz`` as a dict (ValueError naming the file when it is damaged)."""
    saved = read_npy(path, "a run's predictions.npz (arrays of the evaluation)")
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: a single array; expected a run's predictions.npz (named arrays)")
    return saved


def load_predictions(folders: dict[str, list[Path]]) -> dict[str, list[dict]]:
    """Per method, the ``predictions.npz`` of each of its runs (as dicts of arrays)."""
    out = {}
    for method, paths in folders.items():
        runs = []
        for folder in paths:
            path = Path(folder) / PREDICTIONS_FILE
            if path.exists():
                runs.append(_read_predictions(path))
        if runs:
            out[method] = runs
    return out


def _stack(runs: list[dict], key: str) -> np.ndarray:
    return np.stack([r[key] for r in runs])


def probe_rows(runs: list[dict], kind: str, task: str, size: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids of the task's subjects, labels, predictions (rows, n)) of one probe, seeds stacked."""
    first = runs[0]
    ids = first["ids"][first[f"{kind}/{task}/index"]]
    pred = _stack(runs, f"{kind}/{task}/pred")  # (R, n) or (R, S, D, n)
    if size is not None:
        i = list(first[f"{kind}/{task}/sizes"]).index(size)
        pred = pred[:, i].reshape(-1, pred.shape[-1])  # (R * D, n)
    return ids, first[f"{kind}/{task}/y"], pred


def probe_points(runs: list[dict]) -> list[tuple[str, str, int | None]]:
    """Every ``(kind, task, size)`` whose predictions a run holds (size None for LOSO)."""
    first = runs[0]
    points = [("loso", k.split("/")[1], None) for k in first if k.startswith("loso/") and k.endswith("/pred")]
    for key in first:
        if key.startswith("le/") and key.endswith("/sizes"):
            task = key.split("/")[1]
            points += [("le", task, int(s)) for s in first[key]]
    return points


def point_name(size: int) -> str:
    return "all" if size == 0 else f"n{size}"


def paired_against(predictions: dict[str, list[dict]], floor: str, n_bootstrap: int,
                   seed: int = 0) -> dict[str, dict]:
    """Paired differences of every method against ``floor`` (module docstring).

    Returns:
        ``{method: {"loso_mean": {...}, "le_n25": {...}, ..., "loso/<task>": {...}}}``, each a
        :func:`anatcl_core.evaluation.paired.summarise` dict; ``{}`` without the floor's predictions.
    """
    if floor not in predictions:
        return {}
    base = predictions[floor]
    floor_reps: dict = {}  # the floor's replicates, once per probe point (same resamples for all)
    out = {}
    for method, runs in predictions.items():
        if method == floor:
            continue
        groups: dict[str, dict[str, tuple]] = {}
        entry = {}
        for kind, task, size in probe_points(runs):
            try:
                ids_a, y, pred_a = probe_rows(runs, kind, task, size)
                ids_b, _, pred_b = probe_rows(base, kind, task, size)
            except (KeyError, ValueError):
                continue  # the floor lacks this point
            order = paired.align(ids_a, ids_b, f"{method} vs {floor}, {kind} {task}")
            point = (kind, task, size)
            if point not in floor_reps or not np.array_equal(floor_reps[point][0], order):
                floor_reps[point] = (order, paired.bootstrap_bacc(y, pred_b[:, order], n_bootstrap, seed))
            a, reps_a = paired.bootstrap_bacc(y, pred_a, n_bootstrap, seed)
            b, reps_b = floor_reps[point][1]
            result = (a - b, reps_a - reps_b)
            group = "loso_mean" if kind == "loso" else f"le_{point_name(size)}"
            groups.setdefault(group, {})[task] = result
            if kind == "loso":
                entry[f"loso/{task}"] = paired.summarise(*result)
        entry.update({g: paired.mean_over_tasks(per_task) for g, per_task in groups.items()})
        out[method] = entry
    return out


def _mean_over(values: list[dict], getter) -> float:
    got = [getter(v) for v in values]
    got = [g for g in got if g is not None]
    return float(np.mean(got)) if got else float("nan")


def claim_tables(probes: dict[str, list[dict]]) -> dict[str, pd.DataFrame]:
    """Mean over runs: ``loso_bacc`` (tasks + average), ``label_efficiency`` (points, mean over
    tasks), ``representation`` (descriptor R², age R², site BAcc and chance); methods as rows."""
    loso, le, rep = {}, {}, {}
    for method, runs in probes.items():
        tasks = list(runs[0].get("loso", {}))
        row = {t: _mean_over(runs, lambda p, t=t: p.get("loso", {}).get(t, {}).get("balanced_accuracy"))
               for t in tasks}
        if row:
            row["average"] = float(np.mean(list(row.values())))
            loso[method] = row
        points = list(next(iter(runs[0].get("label_efficiency", {}).values()), {}).get("points", {}))
        le[method] = {pt: _mean_over(runs, lambda p, pt=pt: _le_mean(p, pt)) for pt in points}
        keys = {"descriptor R²": "descriptor_r2", "age R²": "age_r2", "site BAcc": "site_balanced_accuracy",
                "site chance": "site_chance"}
        rep[method] = {k: _mean_over(runs, lambda p, v=v: p.get("representation", {}).get(v)) for k, v in keys.items()}
    return {"loso_bacc": pd.DataFrame.from_dict(loso, orient="index"),
            "label_efficiency": pd.DataFrame.from_dict(le, orient="index"),
            "representation": pd.DataFrame.from_dict(rep, orient="index")}


def _le_mean(p: dict, point: str) -> float | None:
    values = [r["points"][point]["balanced_accuracy"] for r in p.get("label_efficiency", {}).values()
              if point in r["points"]]
    return float(np.mean(values)) if values else None


def paired_table(pairs: dict[str, dict], labels: dict[str, str]) -> pd.DataFrame:
    """``difference [lo, hi]`` strings: methods x (LOSO mean, label-efficiency points)."""
    rows = {}
    for method, entry in pairs.items():
        cols = [k for k in entry if "/" not in k]
        rows[labels.get(method, method)] = {
            ("LOSO mean" if k == "loso_mean" else f"labels {k[3:]}"):
                f"{entry[k]['difference']:+.3f} [{entry[k]['ci'][0]:+.3f}, {entry[k]['ci'][1]:+.3f}]"
            for k in cols}
    return pd.DataFrame.from_dict(rows, orient="index")


def budget_table(budget: dict[str, tuple[str, ...]], epochs: dict[str, int], tables: dict[str, pd.DataFrame],
                 floor: str = "random") -> pd.DataFrame:
    """Long table family, variant, epochs, LOSO mean BAcc, descriptor R² of the variants with results."""
    rows = []
    loso, rep = tables["loso_bacc"], tables["representation"]
    for family, variants in budget.items():
        for variant in variants:
            if variant in loso.index:
                rows.append({"family": family, "variant": variant, "epochs": epochs.get(variant),
                             "LOSO BAcc": float(loso.loc[variant, "average"]),
                             "descriptor R²": float(rep.loc[variant, "descriptor R²"]) if variant in rep.index
                             else float("nan")})
    if floor in loso.index:
        rows.append({"family": floor, "variant": floor, "epochs": 0,
                     "LOSO BAcc": float(loso.loc[floor, "average"]),
                     "descriptor R²": float(rep.loc[floor, "descriptor R²"]) if floor in rep.index else float("nan")})
    return pd.DataFrame(rows, columns=["family", "variant", "epochs", "LOSO BAcc", "descriptor R²"])


def claim_metrics(tables: dict[str, pd.DataFrame], pairs: dict[str, dict]) -> dict[str, dict]:
    """Per method, the ``dvc metrics show`` keys of the claims (report's ``metrics.json``)."""
    out: dict[str, dict] = {}
    for method, row in tables["loso_bacc"].iterrows():
        entry = out.setdefault(method, {})
        entry.update({f"loso_bacc_{k}" if k != "average" else "loso_bacc_mean": float(v) for k, v in row.items()})
    for method, row in tables["label_efficiency"].iterrows():
        out.setdefault(method, {}).update({f"le_bacc_{k}": float(v) for k, v in row.items()})
    for method, row in tables["representation"].iterrows():
        out.setdefault(method, {}).update(descriptor_r2=float(row["descriptor R²"]), age_r2=float(row["age R²"]),
                                          repr_site_bacc=float(row["site BAcc"]))
    for method, entry in pairs.items():
        for key, s in entry.items():
            if "/" in key:
                continue
            out.setdefault(method, {}).update({f"vs_random_{key}": s["difference"],
                                               f"vs_random_{key}_ci_low": s["ci"][0],
                                               f"vs_random_{key}_ci_high": s["ci"][1]})
    return {m: {k: v for k, v in entry.items() if np.isfinite(v)} for m, entry in out.items()}  # JSON: no NaN
