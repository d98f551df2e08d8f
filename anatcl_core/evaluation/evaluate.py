"""Evaluation of one frozen encoder: params.yaml ``evaluate``, every probe, metrics (dvclive).

For a pretraining checkpoint: features of the pretraining cohort (all splits), of the downstream
cohort and of the travelling heads; then the OpenBHB brain-age and site-leakage probes, one
nested-CV logistic probe per ``dx_`` task, one ridge probe per ``score_`` column, and the
cross-scanner reliability of the embedding (:mod:`anatcl_core.evaluation.reliability`): per-dimension
between-site ICC(2,1) (headline) and ICC(3,1) on the travelling heads (REFERENCE §1.5), the share of
embedding variance explained by site, and a leave-sites-out brain-age probe on the pretraining
cohort. A downstream subject that is also a pretraining subject is an error (the encoder saw it).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anatcl_core import live
from anatcl_core.atomic import atomic_open, write_text
from anatcl_core.cores import one_blas_thread, resolve_threads
from anatcl_core.data import arrays
from anatcl_core.data.layout import SCORE_PREFIX
from anatcl_core.data.manifest import score_columns
from anatcl_core.evaluation import features as feat
from anatcl_core.evaluation import brainfmbench, lifespan, probes, reliability, representation, site_held_out, task_probes
from anatcl_core.evaluation.protocol import EvaluateConfig

logger = logging.getLogger(__name__)

PROBES_FILE = "probes.json"
FEATURES_FILE = "features.npz"
PREDICTIONS_FILE = "predictions.npz"


def check_no_overlap(pretrain_ids, downstream_ids) -> None:
    """Raise if a downstream subject is also a pretraining subject."""
    both = sorted(set(map(str, pretrain_ids)) & set(map(str, downstream_ids)))
    if both:
        raise ValueError(f"{len(both)} downstream subject(s) are pretraining subjects, e.g. {both[:5]}: "
                         "the encoder has seen them; remove them from the downstream manifest")


def evaluate_checkpoint(config: EvaluateConfig, checkpoint: str | Path, arrays_dir: str | Path,
                        out_dir: str | Path, progress: bool = True) -> dict:
    """Extract features with a checkpoint's encoder and run every probe (:func:`evaluate_features`).

    Args:
        config: the ``evaluate`` section. checkpoint: a pretraining ``checkpoint.pt``.
        arrays_dir: the cohort stage's arrays (images, tables, FreeSurfer tables of every cohort).
        out_dir: ``outputs/evaluate/<method>-s<seed>``.

    Returns:
        The ``probes.json`` content.
    """
    torch.set_num_threads(resolve_threads(config.num_threads))
    encoder, run = feat.load_encoder(checkpoint)
    cohorts = arrays.load_arrays(arrays_dir, run.data.crop)
    check_no_overlap(cohorts["openbhb"].table["participant_id"], cohorts["downstream"].table["participant_id"])
    start = time.perf_counter()
    x = {name: feat.extract_features(encoder, c.images, config.batch_size, progress, desc=name)
         for name, c in cohorts.items()}
    timing = extraction_timing(time.perf_counter() - start, x)
    meta = {"method": run.method, "seed": run.seed, "feature_dim": int(x["openbhb"].shape[1])}
    return evaluate_features(config, x, cohorts, out_dir, meta, timing=timing)


def extraction_timing(seconds: float, x: dict[str, np.ndarray]) -> dict:
    """``feature_extraction`` entry of ``dvclive/metrics.json``: wall ``seconds`` (provenance: left
    out of ``probes.json``, whose bytes a rerun reproduces), ``volumes`` and ``threads``."""
    return {"seconds": float(seconds), "volumes": int(sum(len(v) for v in x.values())),
            "threads": int(torch.get_num_threads())}


@one_blas_thread
def evaluate_features(config: EvaluateConfig, x: dict[str, np.ndarray], cohorts: dict,
                      out_dir: str | Path, meta: dict, age_probes: bool = True, timing: dict | None = None) -> dict:
    """Every probe on given features of the cohorts (an encoder's or a reference row's).

    Args:
        config: the ``evaluate`` section.
        x: cohort name (``openbhb``, ``downstream``, ``travelling``) -> ``(N, F)`` features.
        cohorts: cohort name -> :class:`~anatcl_core.data.arrays.Cohort` (its ``table``, and the
            downstream FreeSurfer tables, targets of the representation probe; images are not read).
        out_dir: where the files below go. meta: ``method``, ``seed``, ``feature_dim``.
        age_probes: False for a representation made of age itself (brain-age, sex probes and the age
            read-out would be circular and are left out).
        timing: feature-extraction cost (:func:`extraction_timing`), written to ``dvclive/metrics.json`` only.

    Writes ``dvclive/metrics.json`` (headline numbers, :func:`headline`), ``probes.json`` (everything, CIs and chosen
    hyper-parameters included), ``features.npz`` (features and ids, for the report's maps) and
    ``predictions.npz`` (per-subject out-of-fold predictions of the leave-one-site-out and
    label-efficiency probes, and age and sex of the pretraining test splits,
    :mod:`anatcl_core.evaluation.lifespan`, for the report's paired differences).

    Returns:
        The ``probes.json`` content.
    """
    for name, values in x.items():
        probes.check_finite(values, f"{meta.get('method')}: features of the {name} cohort")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = dict(meta)
    healthy = _healthy_probes(config, x["openbhb"], cohorts["openbhb"].table) if age_probes else ({}, {})
    result.update(healthy[0])
    down = cohorts["downstream"].table
    probe_kw = dict(n_splits=config.n_splits, n_repeats=config.n_repeats, inner_splits=config.inner_splits,
                    n_bootstrap=config.n_bootstrap, seed=config.seed)
    result["diagnosis"], claims, predictions = task_probes.task_probes(config, x["downstream"], down)
    result["scores"] = {
        col[len(SCORE_PREFIX):]: probes.score_probe(x["downstream"], down[col].to_numpy(float),
                                                    alpha_grid=config.alpha_grid, name=col, **probe_kw)
        for col in score_columns(down)
    }
    result["reliability"] = travelling_reliability(x.get("travelling"), cohorts.get("travelling"))
    if "median_icc_2_1" in result["reliability"]:
        result["travelling_icc"] = result["reliability"]["median_icc_2_1"]
    result.update(claims)
    predictions.update(healthy[1])
    descriptors = task_probes.downstream_descriptors(cohorts["downstream"], config.descriptor_channels)
    result["representation"] = representation.representation_probe(
        x["downstream"], descriptors, down["age"].to_numpy(float) if age_probes else None,
        down["site"].astype(str).to_numpy(), n_components=config.representation_components,
        alpha_grid=config.alpha_grid, n_splits=config.representation_splits, seed=config.seed)
    if brainfmbench.NAME in config.probes:  # their random forest beside our linear probes
        result[brainfmbench.NAME] = brainfmbench.brainfmbench_probes(x["downstream"], down,
                                                                    resolve_threads(config.num_threads))
    save_outputs(out_dir, result, x, {k: c.table["participant_id"] for k, c in cohorts.items()}, predictions)
    # dvclive/metrics.json, for dvc metrics / exp show; the extraction's cost only there (it is no result)
    live.write_metrics(out_dir, {**headline(result), **({"feature_extraction": timing} if timing else {})})
    return result


def save_outputs(out_dir: str | Path, result: dict, x: dict[str, np.ndarray], ids: dict[str, pd.Series],
                 predictions: dict[str, np.ndarray]) -> None:
    """``probes.json``, ``features.npz`` (``<cohort>_features``, ``<cohort>_ids``) and ``predictions.npz``,
    each atomically (a handle for numpy: given the temp name it would add ``.npz``). Uncompressed:
    zlib took 9 s to shrink the un-CNN's 41 MB of features by 7 %."""
    write_text(Path(out_dir) / PROBES_FILE, json.dumps(result, indent=2) + "\n")
    arrays = {FEATURES_FILE: {**{f"{k}_features": v for k, v in x.items()},
                              **{f"{k}_ids": np.asarray(v.astype(str).tolist(), dtype=str) for k, v in ids.items()}},
              PREDICTIONS_FILE: predictions}
    for name, content in arrays.items():
        with atomic_open(Path(out_dir) / name) as handle:
            np.savez(handle, **content)


def _healthy_probes(config: EvaluateConfig, x: np.ndarray, table: pd.DataFrame) -> tuple[dict, dict]:
    """Probes of the healthy pretraining cohort: ``brain_age`` (OpenBHB protocol), ``site_held_out``
    brain age and ``sex`` (:mod:`anatcl_core.evaluation.lifespan`), and the per-subject age and sex
    predictions of its test splits for ``predictions.npz``."""
    result = {"brain_age": _brain_age(config, x, table)}
    result["site_held_out"] = site_held_out_brain_age(config, x, table["age"].to_numpy(float),
                                                      table["site"].astype(str).to_numpy())
    result["sex"], arrays_out = lifespan.lifespan_probes(config, x, table, result["brain_age"]["alpha"])
    return result, arrays_out


def travelling_reliability(x: np.ndarray | None, cohort) -> dict:
    """Between-site reliability of an embedding on the travelling heads.

    Args:
        x: ``(N, F)`` features of the travelling scans (None: no travelling cohort).
        cohort: its :class:`~anatcl_core.data.arrays.Cohort` (table columns ``subject`` and ``site``).

    Returns:
        ``{"available": False, "reason": ...}`` without a usable travelling set, else the
        per-dimension ``icc_2_1`` / ``icc_3_1`` lists (NaN -> None for constant dimensions), their
        ``median_``/``q1_``/``q3_`` summaries, ``site_share`` (share of embedding variance explained
        by site), ``n_subjects``, ``n_sites``, ``n_degenerate``.
    """
    if x is None or cohort is None:
        return {"available": False, "reason": "no data/travelling/manifest.tsv"}
    missing = {"subject", "site"} - set(cohort.table.columns)
    if missing:
        return {"available": False, "reason": f"travelling manifest lacks column(s) {sorted(missing)}"}
    ratings, subjects, sites = reliability.arrange_by_site(
        x, cohort.table["subject"].astype(str).to_numpy(), cohort.table["site"].astype(str).to_numpy())
    summary = reliability.icc_table({"embedding": ratings}).iloc[0]
    per_dim = reliability.icc_per_dimension({"embedding": ratings})
    out = {"available": True, "n_subjects": len(subjects), "n_sites": len(sites),
           "n_degenerate": int(summary["n_degenerate"]), "site_share": float(summary["site_share"])}
    for kind in ("icc_2_1", "icc_3_1"):
        for stat in ("median", "q1", "q3"):
            out[f"{stat}_{kind}"] = float(summary[f"{kind}_{stat}"])
        out[kind] = [None if np.isnan(v) else float(v) for v in per_dim[kind]]
    return out


def site_held_out_brain_age(config: EvaluateConfig, x: np.ndarray, age: np.ndarray, site: np.ndarray) -> dict:
    """Brain age with leave-sites-out folds on the pretraining cohort (ridge, inner-CV alpha).

    Returns:
        ``folds`` (:func:`anatcl_core.evaluation.site_held_out.site_held_out_probe`) and their mean ``mae`` and
        ``pearson_r``; ``{}`` with fewer than two sites.
    """
    sites = sorted(set(site.tolist()))
    n_groups = min(config.site_held_out_groups, len(sites))
    if n_groups < 2:
        return {}
    groups = [sites[i::n_groups] for i in range(n_groups)]
    folds = site_held_out.site_held_out_probe(x, age, site, groups, alpha_grid=config.alpha_grid,
                                              c_grid=config.c_grid, inner_splits=config.brain_age_cv_splits,
                                              seed=config.seed)
    return {"folds": folds, "mae": float(np.mean([f["mae"] for f in folds])),
            "pearson_r": float(np.mean([f["pearson_r"] for f in folds]))}


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
                                               "challenge_score") if "brain_age" in result}
    for task, r in result["diagnosis"].items():
        out[f"bacc_{task}"] = r["balanced_accuracy"]
        out[f"auc_{task}"] = r["roc_auc"]
    if result["diagnosis"]:
        out["bacc_mean"] = float(np.mean([r["balanced_accuracy"] for r in result["diagnosis"].values()]))
    for score, r in result["scores"].items():
        out[f"r_{score}"] = r["pearson_r"]
    if "travelling_icc" in result:
        out["travelling_icc_2_1_median"] = result["travelling_icc"]
        out["travelling_site_share"] = result["reliability"]["site_share"]
    if "sex" in result:
        out["sex_bacc"] = result["sex"]["balanced_accuracy"]
    if result.get("site_held_out"):
        out["site_held_out_mae"] = result["site_held_out"]["mae"]
    out.update(task_probes.claim_headline(result))
    out.update(brainfmbench.headline(result.get(brainfmbench.NAME, {})))
    return out
