"""Per-task probes of the evaluate stage and the claims' headline keys.

Every ``dx_`` task of the downstream manifest gets the stratified nested-CV diagnosis probe
(:func:`anatcl_core.evaluation.probes.diagnosis_probe`), the leave-one-site-out probe and the label-efficiency
curve (:mod:`anatcl_core.evaluation.transfer`); task names come from the manifest's columns only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from anatcl_core.data import arrays
from anatcl_core.data.freesurfer import select_channels
from anatcl_core.data.layout import DX_PREFIX
from anatcl_core.data.manifest import task_columns
from anatcl_core.evaluation import probes, transfer
from anatcl_core.evaluation.protocol import EvaluateConfig


def _one_task(config: EvaluateConfig, x: np.ndarray, labels: np.ndarray, site: np.ndarray, ids: np.ndarray,
              col: str, diagnosis: bool, claims: bool):
    """The probes of one ``dx_`` task: stratified diagnosis, leave-one-site-out, label efficiency."""
    out = {}
    if diagnosis:
        out["diagnosis"] = probes.diagnosis_probe(
            x, labels, c_grid=config.c_grid, name=col, n_splits=config.n_splits, n_repeats=config.n_repeats,
            inner_splits=config.inner_splits, n_bootstrap=config.n_bootstrap, seed=config.seed)
    if claims and len(set(site[np.isfinite(labels)].tolist())) >= 2:
        out["loso"] = transfer.loso_probe(x, labels, site, c_grid=config.c_grid, inner_splits=config.loso_inner_splits,
                                          n_bootstrap=config.n_bootstrap, seed=config.seed, name=col)
    if claims:
        out["le"] = transfer.label_efficiency_probe(
            x, labels, ids, sizes=config.label_sizes, n_draws=config.label_draws, n_splits=config.label_splits,
            inner_splits=config.label_inner_splits, c_grid=config.c_grid, n_bootstrap=config.n_bootstrap,
            seed=config.seed, name=col)
    return out


def task_probes(config: EvaluateConfig, x: np.ndarray, down: pd.DataFrame, diagnosis: bool = True,
                claims: bool = True) -> tuple[dict, dict, dict]:
    """Every ``dx_`` task's probes, one task after the other (tasks in 2 worker processes were
    slower on 2 shared cores: each worker imports torch; threads gained 10 %).

    Returns:
        ``(diagnosis {task: summary}, {"loso": {task: summary}, "label_efficiency": {task: summary}},
        predictions)``, ``predictions`` the arrays of ``predictions.npz``: ``ids`` (downstream
        subjects) and, per task, ``loso/<task>/{index,y,pred,score}`` and
        ``le/<task>/{index,y,sizes,pred,score}`` (:mod:`anatcl_core.evaluation.transfer`).
    """
    ids = down["participant_id"].astype(str).to_numpy()
    site = down["site"].astype(str).to_numpy()
    columns = task_columns(down)
    done = [_one_task(config, x, down[col].to_numpy(float), site, ids, col, diagnosis, claims) for col in columns]
    dx, out, saved = {}, {"loso": {}, "label_efficiency": {}}, {"ids": ids.astype(str)}
    for col, got in zip(columns, done):
        task, labels = col[len(DX_PREFIX):], down[col].to_numpy(float)
        if "diagnosis" in got:
            dx[task] = got["diagnosis"]
        for kind, key in (("loso", "loso"), ("le", "label_efficiency")):
            if kind in got:
                out[key][task] = got[kind].summary
                saved.update({f"{kind}/{task}/{k}": v for k, v in got[kind].predictions.items()})
                saved[f"{kind}/{task}/y"] = labels[got[kind].predictions["index"]].astype(int)
    return dx, out, saved


def downstream_descriptors(cohort: arrays.Cohort, channels: tuple[str, ...]) -> np.ndarray | None:
    """``(N, C * R)`` FreeSurfer descriptors of the downstream cohort (None if a subject has no table)."""
    if not cohort.has_descriptors().all():
        return None
    return select_channels(cohort.descriptors, list(channels)).reshape(len(cohort.descriptors), -1)


def claim_headline(result: dict) -> dict:
    """Headline keys of the leave-one-site-out, label-efficiency and representation probes."""
    out = {}
    loso = result.get("loso", {})
    for task, r in loso.items():
        out[f"loso_bacc_{task}"] = r["balanced_accuracy"]
    if loso:
        out["loso_bacc_mean"] = float(np.mean([r["balanced_accuracy"] for r in loso.values()]))
    points: dict[str, list[float]] = {}
    for r in result.get("label_efficiency", {}).values():
        for point, v in r["points"].items():
            points.setdefault(point, []).append(v["balanced_accuracy"])
    out.update({f"le_bacc_{p}": float(np.mean(v)) for p, v in points.items()})
    rep = result.get("representation", {})
    for key in ("descriptor_r2", "age_r2", "site_balanced_accuracy"):
        if key in rep:
            out[f"repr_{key}"] = rep[key]
    return out
