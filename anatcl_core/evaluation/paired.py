"""Paired differences between two representations probed on the same folds and draws.

Two encoders (or an encoder and a reference row) probed by :mod:`anatcl_core.evaluation.transfer` predict the
same subjects on the same folds, so their balanced accuracies can be compared subject by subject:
the bootstrap resamples *subjects* once per replicate and recomputes both methods' balanced
accuracy on the same resample; the percentile interval of the difference is its 95% CI. Rows of
the prediction arrays (pretraining seeds, label-efficiency draws) are averaged inside every
replicate, as in the point estimate, so the CI reflects subject sampling given the seeds.
Differences of several tasks are averaged replicate by replicate (tasks resampled independently).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from anatcl_core.evaluation.metrics import balanced_accuracy_rows


def align(ids_a: Sequence[str], ids_b: Sequence[str], name: str = "predictions") -> np.ndarray:
    """Positions in ``ids_b`` of every id of ``ids_a`` (same subjects required).

    Raises:
        ValueError: naming ``name`` if the two sets of subjects differ.
    """
    ids_a, ids_b = [str(i) for i in ids_a], [str(i) for i in ids_b]
    where = {i: k for k, i in enumerate(ids_b)}
    if len(where) != len(ids_b) or set(ids_a) != set(where) or len(ids_a) != len(ids_b):
        raise ValueError(f"{name}: the two methods were probed on different subjects")
    return np.array([where[i] for i in ids_a])


def resample_counts(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n_bootstrap, n)`` multiplicities of ``n`` subjects in each bootstrap resample.

    They depend only on ``n`` and ``seed``: every method compared on the same subjects (in the same
    order) gets the same resamples.
    """
    idx = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))  # (B, n)
    return np.bincount((idx + n * np.arange(n_bootstrap)[:, None]).ravel(),
                       minlength=n_bootstrap * n).reshape(n_bootstrap, n).astype(float)


def bootstrap_mae(y: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, np.ndarray]:
    """Mean absolute error (mean over rows) and its subject-bootstrap replicates.

    Args:
        y: ``(n,)`` targets; pred: ``(R, n)`` predictions (rows: seeds).

    Returns:
        ``(point estimate, replicates (n_bootstrap,))``, resamples as :func:`bootstrap_bacc`'s.
    """
    y, pred = np.asarray(y, float), np.atleast_2d(np.asarray(pred, float))
    if pred.shape[-1] != len(y):
        raise ValueError(f"predictions of shape {pred.shape} for {len(y)} targets")
    error = np.abs(pred - y).mean(0)  # (n,): mean over rows of each subject's error
    counts = resample_counts(len(y), n_bootstrap, seed)  # (B, n)
    return float(error.mean()), counts @ error / len(y)


def bootstrap_bacc(y: np.ndarray, pred: np.ndarray, n_bootstrap: int, seed: int) -> tuple[float, np.ndarray]:
    """Balanced accuracy (mean over rows) and its subject-bootstrap replicates.

    A replicate's resample is given by multiplicities ``counts (B, n)`` (how often each subject is
    drawn), so per-class hits are one matrix product: ``TP = counts @ (correct & case).T``. The
    resamples depend only on ``seed`` and ``n``: two methods compared get the same ones.

    Args:
        y: ``(n,)`` labels 0/1; pred: ``(R, n)`` predictions (rows: seeds, draws).

    Returns:
        ``(point estimate, replicates (n_bootstrap,))``.
    """
    y, pred = np.asarray(y, int), np.atleast_2d(pred)
    if pred.shape[-1] != len(y):
        raise ValueError(f"predictions of shape {pred.shape} for {len(y)} labels")
    point = float(np.nanmean(balanced_accuracy_rows(np.broadcast_to(y, pred.shape), pred)))
    counts = resample_counts(len(y), n_bootstrap, seed)  # (B, n)
    correct, case = pred == y, y == 1  # (R, n), (n,)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (counts @ (correct & case).T) / (counts @ case)[:, None]  # (B, R)
        tnr = (counts @ (correct & ~case).T) / (counts @ ~case)[:, None]
    return point, np.nanmean((tpr + tnr) / 2, axis=1)


def paired_bootstrap(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_bootstrap: int,
                     seed: int) -> tuple[float, np.ndarray]:
    """Difference of balanced accuracy ``a - b`` and its bootstrap replicates.

    Args:
        y: ``(n,)`` labels 0/1. pred_a: ``(R_a, n)`` predictions of method a (one row per seed /
            draw); pred_b: ``(R_b, n)`` of method b on the same subjects in the same order.
        n_bootstrap: subject resamples; seed: their seed (the same for every pair compared).

    Returns:
        ``(difference, replicates (n_bootstrap,))``, each the mean over rows of a minus that of b.
    """
    (a, reps_a), (b, reps_b) = (bootstrap_bacc(y, p, n_bootstrap, seed) for p in (pred_a, pred_b))
    return a - b, reps_a - reps_b


def summarise(diff: float, replicates: np.ndarray) -> dict:
    """``difference``, ``ci`` (percentile 95%) and ``p_le_0`` (share of replicates <= 0)."""
    if not len(replicates):
        return {"difference": diff, "ci": [float("nan")] * 2, "p_le_0": float("nan")}
    lo, hi = np.nanpercentile(replicates, [2.5, 97.5])
    return {"difference": float(diff), "ci": [float(lo), float(hi)],
            "p_le_0": float(np.mean(replicates <= 0))}


def mean_over_tasks(per_task: Mapping[str, tuple[float, np.ndarray]]) -> dict:
    """Average difference over tasks and its CI from replicate-wise averages."""
    if not per_task:
        return summarise(float("nan"), np.zeros(0))
    diffs = [d for d, _ in per_task.values()]
    reps = np.mean(np.stack([r for _, r in per_task.values()]), axis=0)
    return summarise(float(np.mean(diffs)), reps)
