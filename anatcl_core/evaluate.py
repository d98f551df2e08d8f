"""Evaluation of one frozen encoder: params.yaml ``evaluate``, every probe, metrics JSON.

For a pretraining checkpoint: features of the pretraining cohort (all splits), of the downstream
cohort and of the travelling heads; then the OpenBHB brain-age and site-leakage probes, one
nested-CV logistic probe per ``dx_`` task, one ridge probe per ``score_`` column, and the
test-retest ICC of the embedding across sites (travelling heads, REFERENCE §1.5). A downstream
subject that is also a pretraining subject is an error (the encoder saw it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anatcl_core import features as feat
from anatcl_core import probes
from anatcl_core.data.manifest import score_columns, task_columns
from anatcl_core.data.layout import DX_PREFIX, SCORE_PREFIX

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PROBES_FILE = "probes.json"
FEATURES_FILE = "features.npz"


@dataclass(frozen=True)
class EvaluateConfig:
    """params.yaml ``evaluate`` (field = yaml key = keyword argument of the probes)."""

    batch_size: int = 64
    c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    alpha_grid: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2)
    site_c_grid: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2)
    n_splits: int = 5
    n_repeats: int = 3
    inner_splits: int = 3
    brain_age_cv_splits: int = 5
    n_bootstrap: int = 1000
    seed: int = 0
    num_threads: int = 2


def icc_1_1(values: np.ndarray, subjects: np.ndarray) -> float:
    """One-way random-effects ICC(1,1) averaged over feature dimensions.

    ``ICC = (MSB - MSW) / (MSB + (k - 1) MSW)`` with subjects as targets and their k scans (one per
    site) as measurements; dimensions without between-scan variance are skipped.

    Args:
        values: ``(N, F)`` features; subjects: ``(N,)`` subject id of each scan (balanced design).
    """
    ids, index = np.unique(subjects, return_inverse=True)
    n, k = len(ids), len(subjects) // len(ids)
    if n < 2 or k < 2 or np.bincount(index).min() != k or np.bincount(index).max() != k:
        raise ValueError(f"ICC needs >= 2 subjects with the same number (>= 2) of scans each")
    means = np.stack([values[index == i].mean(0) for i in range(n)])  # (n, F)
    msb = k * ((means - values.mean(0)) ** 2).sum(0) / (n - 1)  # (F,)
    msw = ((values - means[index]) ** 2).sum(0) / (n * (k - 1))  # (F,)
    denom = msb + (k - 1) * msw
    keep = denom > 1e-12 * np.maximum(1.0, np.abs(values).max())
    return float(np.mean((msb[keep] - msw[keep]) / denom[keep])) if keep.any() else float("nan")


def check_no_overlap(pretrain_ids, downstream_ids) -> None:
    """Raise if a downstream subject is also a pretraining subject."""
    both = sorted(set(map(str, pretrain_ids)) & set(map(str, downstream_ids)))
    if both:
        raise ValueError(f"{len(both)} downstream subject(s) are pretraining subjects, e.g. {both[:5]}: "
                         "the encoder has seen them; remove them from the downstream manifest")


def evaluate_checkpoint(config: EvaluateConfig, checkpoint: str | Path, data_dir: str | Path,
                        arrays_dir: str | Path, out_dir: str | Path, progress: bool = True) -> dict:
    """Extract features with a checkpoint's encoder and run every probe.

    Args:
        config: the ``evaluate`` section. checkpoint: a pretraining ``checkpoint.pt``.
        data_dir: the cohorts' tables (``data/``). arrays_dir: their stacked images (cohort stage).
        out_dir: ``outputs/evaluate/<method>-s<seed>``.

    Writes ``metrics.json`` (headline numbers), ``probes.json`` (everything, CIs and chosen
    hyper-parameters included) and ``features.npz`` (features and ids, for the report's maps).

    Returns:
        The ``probes.json`` content.
    """
    torch.set_num_threads(config.num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder, run = feat.load_encoder(checkpoint)
    crop = run.get("crop", "upstream")
    crop = tuple(crop) if isinstance(crop, list) else crop
    cohorts = feat.load_arrays(arrays_dir, data_dir, crop)
    check_no_overlap(cohorts["openbhb"].table["participant_id"], cohorts["downstream"].table["participant_id"])
    x = {name: feat.extract_features(encoder, c.images, config.batch_size, progress, desc=name)
         for name, c in cohorts.items()}
    result = {"method": run.get("method"), "seed": run.get("seed"), "feature_dim": int(x["openbhb"].shape[1])}
    result["brain_age"] = _brain_age(config, x["openbhb"], cohorts["openbhb"].table)
    down = cohorts["downstream"].table
    probe_kw = dict(n_splits=config.n_splits, n_repeats=config.n_repeats, inner_splits=config.inner_splits,
                    n_bootstrap=config.n_bootstrap, seed=config.seed)
    result["diagnosis"] = {
        col[len(DX_PREFIX):]: probes.diagnosis_probe(x["downstream"], down[col].to_numpy(float),
                                                     c_grid=config.c_grid, name=col, **probe_kw)
        for col in task_columns(down)
    }
    result["scores"] = {
        col[len(SCORE_PREFIX):]: probes.score_probe(x["downstream"], down[col].to_numpy(float),
                                                    alpha_grid=config.alpha_grid, name=col, **probe_kw)
        for col in score_columns(down)
    }
    if "travelling" in x and "subject" in cohorts["travelling"].table:
        result["travelling_icc"] = icc_1_1(x["travelling"], cohorts["travelling"].table["subject"].to_numpy())
    (out_dir / PROBES_FILE).write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / METRICS_FILE).write_text(json.dumps(headline(result), indent=2) + "\n")
    np.savez_compressed(out_dir / FEATURES_FILE, **{f"{k}_features": v for k, v in x.items()},
                        **{f"{k}_ids": np.asarray(c.table["participant_id"].astype(str).tolist(), dtype=str)
                           for k, c in cohorts.items()})
    return result


def _brain_age(config: EvaluateConfig, x: np.ndarray, table: pd.DataFrame) -> dict:
    split = table["split"].to_numpy()
    age = table["age"].to_numpy(float)
    site = table["site"].astype(str).to_numpy()
    part = {s: split == s for s in ("train", "internal_test", "external_test")}
    return probes.brain_age_probe(
        (x[part["train"]], age[part["train"]], site[part["train"]]),
        (x[part["internal_test"]], age[part["internal_test"]], site[part["internal_test"]]),
        (x[part["external_test"]], age[part["external_test"]]),
        alpha_grid=config.alpha_grid, c_grid=config.site_c_grid,
        cv_splits=config.brain_age_cv_splits, seed=config.seed,
    )


def headline(result: dict) -> dict:
    """The scalar metrics listed by ``dvc metrics show``."""
    out = {k: result["brain_age"][k] for k in ("mae_internal", "mae_external", "site_bacc_internal",
                                               "challenge_score")}
    for task, r in result["diagnosis"].items():
        out[f"bacc_{task}"] = r["balanced_accuracy"]
        out[f"auc_{task}"] = r["roc_auc"]
    if result["diagnosis"]:
        out["bacc_mean"] = float(np.mean([r["balanced_accuracy"] for r in result["diagnosis"].values()]))
    for score, r in result["scores"].items():
        out[f"r_{score}"] = r["pearson_r"]
    if "travelling_icc" in result:
        out["travelling_icc"] = result["travelling_icc"]
    return out
