"""Paired differences between two representations probed on the same folds and draws.

Two encoders (or an encoder and a reference row) probed by :mod:`anatcl_core.transfer` predict the
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

from anatcl_core.metrics import balanced_accuracy_rows


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
    y = np.asarray(y, int)
    pred_a, pred_b = np.atleast_2d(pred_a), np.atleast_2d(pred_b)
    if pred_a.shape[-1] != len(y) or pred_b.shape[-1] != len(y):
        raise ValueError(f"predictions of shapes {pred_a.shape}, {pred_b.shape} for {len(y)} labels")
    diff = float(np.nanmean(balanced_accuracy_rows(np.broadcast_to(y, pred_a.shape), pred_a))
                 - np.nanmean(balanced_accuracy_rows(np.broadcast_to(y, pred_b.shape), pred_b)))
    idx = np.random.default_rng(seed).integers(0, len(y), size=(n_bootstrap, len(y)))  # (B, n)
    yb = y[idx]  # (B, n)
    reps = [np.nanmean(balanced_accuracy_rows(yb[:, None], p[:, idx].transpose(1, 0, 2)), axis=1)
            for p in (pred_a, pred_b)]  # each (B,)
    return diff, reps[0] - reps[1]


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
