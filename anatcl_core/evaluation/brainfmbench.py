"""BrainFMBench's probe protocol on our cohorts: scaled features, a random forest, five seeds.

BrainFMBench (epics-lab/BrainFMBench, README "Evaluation"; the issue quoting it) scores frozen
features with ``StandardScaler`` then a random forest of 200 trees, ``max_depth`` 6,
``min_samples_split`` 5 (the classifier with ``max_features="sqrt"`` and balanced class weights),
for seeds 0, 1, 2, 3 and 42; each seed holds out 10 % of the subjects as a test set (stratified
for a class label) and runs 5-fold CV on the other 90 %. Sex: balanced accuracy and ROC-AUC; age
(and BMI): MAE and R^2. Their published rows (sex BAcc / age MAE, NKI): AnatCL-global 0.738 / 6.26,
un-CNN 0.857 / 5.11 (README leaderboard, REFERENCE §6).

Here the protocol runs on the downstream cohort (never seen in pretraining): age, sex and every
``dx_`` diagnosis task (which they lack), beside the linear probes, so a reader sees whether a
ranking depends on the probe (params.yaml ``evaluate.probes``). scikit-learn's estimators do the
work; the protocol's constants are theirs, not tunables, hence not in params.yaml.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.data.layout import DX_PREFIX
from anatcl_core.data.openbhb import encode_sex

NAME = "brainfmbench"
SEEDS: tuple[int, ...] = (0, 1, 2, 3, 42)
TEST_FRACTION = 0.1
CV_FOLDS = 5
FOREST = {"n_estimators": 200, "max_depth": 6, "min_samples_split": 5}
METRICS = {"classification": ("balanced_accuracy", "roc_auc"), "regression": ("mae", "r2")}


def forest(kind: str, seed: int, n_jobs: int = 1):
    """``StandardScaler`` + BrainFMBench's random forest for ``kind`` (classification / regression)."""
    if kind == "classification":
        model = RandomForestClassifier(**FOREST, max_features="sqrt", class_weight="balanced",
                                       random_state=seed, n_jobs=n_jobs)
    elif kind == "regression":
        model = RandomForestRegressor(**FOREST, random_state=seed, n_jobs=n_jobs)
    else:
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    return make_pipeline(StandardScaler(), model)


def scores(kind: str, model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The protocol's two metrics of a fitted ``model`` on ``(x, y)``."""
    if kind == "classification":
        return {"balanced_accuracy": float(balanced_accuracy_score(y, model.predict(x))),
                "roc_auc": float(roc_auc_score(y, model.predict_proba(x)[:, 1]))}
    predicted = model.predict(x)
    return {"mae": float(mean_absolute_error(y, predicted)), "r2": float(r2_score(y, predicted))}


def _one_seed(x: np.ndarray, y: np.ndarray, kind: str, seed: int, n_jobs: int) -> dict:
    """Held-out test (10 %) and 5-fold CV on the rest for one seed."""
    stratify = y if kind == "classification" else None
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, random_state=seed, stratify=stratify)
    folds = (StratifiedKFold if kind == "classification" else KFold)(CV_FOLDS, shuffle=True, random_state=seed)
    template = forest(kind, seed, n_jobs)
    cv = []
    for fit, held in folds.split(x[train], y[train]):
        model = clone(template).fit(x[train][fit], y[train][fit])
        cv.append(scores(kind, model, x[train][held], y[train][held]))
    model = clone(template).fit(x[train], y[train])
    return {"seed": seed, "test": scores(kind, model, x[test], y[test]),
            "cv": {m: float(np.mean([c[m] for c in cv])) for m in METRICS[kind]}}


def forest_probe(x: np.ndarray, y: np.ndarray, kind: str, seeds: tuple[int, ...] = SEEDS,
                 n_jobs: int = 1) -> dict:
    """BrainFMBench's protocol on features ``x`` ``(N, F)`` and target ``y`` ``(N,)``.

    Returns:
        ``per_seed`` (each seed's ``test`` and mean ``cv`` metrics), then for each metric the mean
        and standard deviation over seeds of the held-out test value (``<metric>``,
        ``<metric>_sd``) and the mean CV value (``cv_<metric>``); ``n``.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    per_seed = [_one_seed(x, y, kind, seed, n_jobs) for seed in seeds]
    out: dict = {"kind": kind, "n": int(len(y)), "per_seed": per_seed}
    for metric in METRICS[kind]:
        test = [s["test"][metric] for s in per_seed]
        out[metric], out[f"{metric}_sd"] = float(np.mean(test)), float(np.std(test))
        out[f"cv_{metric}"] = float(np.mean([s["cv"][metric] for s in per_seed]))
    return out


def brainfmbench_probes(x: np.ndarray, table: pd.DataFrame, n_jobs: int = 1,
                        seeds: tuple[int, ...] = SEEDS) -> dict:
    """The protocol on the downstream cohort: ``age``, ``sex`` and every ``dx_`` task (its subjects).

    Args:
        x: ``(N, F)`` downstream features. table: the downstream table (``age``, ``sex`` 0/1 or
            M/F, ``dx_<task>`` 1 / 0 / empty), same order. seeds: the protocol's (fewer in tests).

    Returns:
        target name -> :func:`forest_probe`'s result (``age`` regression, ``sex`` and ``dx_<task>``
        classification).
    """
    out = {"age": forest_probe(x, table["age"].to_numpy(float), "regression", seeds, n_jobs),
           "sex": forest_probe(x, encode_sex(table["sex"], "downstream table: sex"), "classification", seeds, n_jobs)}
    for column in [c for c in table.columns if str(c).startswith(DX_PREFIX)]:
        labels = pd.to_numeric(table[column], errors="coerce").to_numpy()
        keep = ~np.isnan(labels)
        out[column] = forest_probe(x[keep], labels[keep].astype(int), "classification", seeds, n_jobs)
    return out


def headline(result: dict) -> dict:
    """``bfmb_<target>_<metric>`` scalars for ``dvc metrics show`` (held-out test means over seeds)."""
    return {f"bfmb_{target}_{metric}": r[metric] for target, r in result.items() for metric in METRICS[r["kind"]]}
