"""Metrics of the probes, vectorised over rows so that bootstrap replicates cost one call.

Every function takes ``(..., n)`` arrays (one row per repeat or per bootstrap replicate) and
returns one value per row; they match scikit-learn's ``balanced_accuracy_score``,
``roc_auc_score`` and ``r2_score`` on a single row (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def balanced_accuracy_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Binary balanced accuracy ``(TPR + TNR) / 2`` of every row.

    Args:
        y: ``(..., n)`` true labels in {0, 1}.
        pred: ``(..., n)`` predicted labels in {0, 1}.

    Returns:
        ``(...)`` balanced accuracies; NaN where a row lacks one of the classes.
    """
    y, pred = np.asarray(y, bool), np.asarray(pred, bool)
    pos, neg = y.sum(-1), (~y).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (y & pred).sum(-1) / pos
        tnr = (~y & ~pred).sum(-1) / neg
    return np.where((pos > 0) & (neg > 0), (tpr + tnr) / 2, np.nan)


def roc_auc_rows(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """ROC-AUC of every row by the Mann-Whitney rank statistic (ties count one half).

    ``AUC = (sum of positive ranks - P (P + 1) / 2) / (P N)`` with P positives, N negatives.

    Args:
        y: ``(..., n)`` true labels in {0, 1}.
        score: ``(..., n)`` decision scores (higher = more likely positive).

    Returns:
        ``(...)`` AUCs; NaN where a row lacks one of the classes.
    """
    y = np.asarray(y, bool)
    ranks = rankdata(np.asarray(score, float), axis=-1)
    pos, neg = y.sum(-1), (~y).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(-1) - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def regression_rows(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, Pearson r and R^2 (``1 - SS_res / SS_tot``) of every row of ``(..., n)`` arrays."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    err = pred - y
    yc = y - y.mean(-1, keepdims=True)
    pc = pred - pred.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc * pc).sum(-1) / np.sqrt((yc**2).sum(-1) * (pc**2).sum(-1))
        r2 = 1 - (err**2).sum(-1) / (yc**2).sum(-1)
    return {"mae": np.abs(err).mean(-1), "pearson_r": r, "r2": r2}


def bootstrap_ci(stat, arrays: Sequence[np.ndarray], n_bootstrap: int, seed: int) -> list[float]:
    """Percentile 95% CI of ``stat`` under resampling of subjects (last axis of every array).

    ``stat`` maps arrays of shape ``(n_bootstrap, R, n)`` to ``(n_bootstrap, R)``; the replicate is
    the mean over the R repeats, as the point estimate is.
    """
    if n_bootstrap <= 0:
        return [float("nan"), float("nan")]
    n = arrays[0].shape[-1]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, 1, n))
    replicates = np.nanmean(stat(*(np.take_along_axis(a[None], idx.repeat(a.shape[0], 1), -1)
                                   for a in arrays)), axis=-1)  # (n_bootstrap,)
    lo, hi = np.nanpercentile(replicates, [2.5, 97.5])
    return [float(lo), float(hi)]


def mean_std(values: np.ndarray) -> tuple[float, float]:
    return float(np.nanmean(values)), float(np.nanstd(values))


def multiclass_balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (sklearn's ``balanced_accuracy_score``)."""
    y, pred = np.asarray(y), np.asarray(pred)
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))
