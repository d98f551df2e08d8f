"""Site-held-out linear probes: trained on some sites, tested on unseen ones (OpenBHB external-test style).

The reliability section's brain-age MAE with whole sites held out
(:mod:`anatcl_core.evaluation.reliability` measures the embeddings themselves).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from anatcl_core.evaluation import probes


def site_held_out_probe(
    features: np.ndarray,
    target: np.ndarray,
    site: np.ndarray,
    held_out: Sequence[Sequence],
    *,
    task: str = "regression",
    alpha_grid: Sequence[float],
    c_grid: Sequence[float],
    inner_splits: int,
    seed: int,
) -> list[dict]:
    """Linear probes trained on some sites and tested on unseen ones (OpenBHB external-test style).

    Each fold trains :mod:`anatcl_core.evaluation.probes`' standardise -> ridge (regression) or
    class-balanced logistic (classification) on every site not in the fold's group, its
    hyper-parameter chosen by an inner (stratified) K-fold on those training scans only, as in the
    OpenBHB protocol, and predicts the held-out sites.

    Args:
        features: ``(N, F)`` frozen features, one row per scan.
        target: ``(N,)`` age/score (regression) or class labels (classification).
        site: ``(N,)`` site labels.
        held_out: one group of site labels per fold, e.g. ``[["s1"], ["s2", "s3"]]``.
        task: ``"regression"`` or ``"classification"``.
        alpha_grid / c_grid: ridge penalties / logistic C searched by the inner CV.
        inner_splits: inner folds; seed: their shuffling seed.

    Returns:
        One dict per fold: ``held_out`` (list of sites), ``n_train``, ``n_test``, the chosen
        ``alpha`` or ``C``, and ``mae``, ``pearson_r``, ``r2`` (regression) or
        ``balanced_accuracy`` (+ ``roc_auc`` when binary) (classification).

    Raises:
        ValueError: on an unknown task or site, an empty group, or a group holding out every site.
    """
    if task not in ("regression", "classification"):
        raise ValueError(f"task: expected 'regression' or 'classification', got {task!r}")
    x, y = np.asarray(features, float), np.asarray(target)
    site = np.asarray(site)
    if x.ndim != 2 or y.shape != (len(x),) or site.shape != (len(x),):
        raise ValueError(f"expected features (N, F), target (N,), site (N,), got {x.shape}, {y.shape}, "
                         f"{site.shape}")
    known = set(site.tolist())
    folds = []
    with probes.lean_fits():
        for group in held_out:
            group = list(group)
            unknown = [s for s in group if s not in known]
            if not group or unknown or set(group) >= known:
                raise ValueError(f"held_out group {group}: needs known sites ({sorted(known)}) and must "
                                 f"leave at least one site for training (unknown: {unknown})")
            test = np.isin(site, group)
            fold = {"held_out": group, "n_train": int((~test).sum()), "n_test": int(test.sum())}
            fold.update(_fit_predict(x[~test], y[~test], x[test], y[test], task, alpha_grid, c_grid,
                                     inner_splits, seed))
            folds.append(fold)
    return folds


def _fit_predict(x_tr, y_tr, x_te, y_te, task, alpha_grid, c_grid, inner_splits, seed) -> dict:
    """One fold: the inner-CV choice of alpha (ridge) or C (logistic) on the training sites, then the test metrics."""
    if task == "regression":
        y_tr, y_te = y_tr.astype(float), y_te.astype(float)
        inner = KFold(inner_splits, shuffle=True, random_state=seed)
        alpha = probes.select_alpha(x_tr, y_tr, alpha_grid, inner, "mae")
        pred = probes.ridge_path(x_tr, y_tr, x_te, [alpha])[0]
        return {"alpha": alpha, **{k: float(v) for k, v in probes.regression_rows(y_te, pred).items()}}
    inner = StratifiedKFold(inner_splits, shuffle=True, random_state=seed)
    c = probes.select_c(x_tr, y_tr, c_grid, inner, balanced=True)
    # probes' warm-started logistic path at the chosen C (same model as its diagnosis probe)
    (_, model, xs_te), = probes.logistic_path(x_tr, y_tr, x_te, [c], True)
    out = {"C": c, "balanced_accuracy": probes.multiclass_balanced_accuracy(y_te, model.predict(xs_te))}
    if len(model.classes_) == 2:
        out["roc_auc"] = float(probes.roc_auc_rows(y_te == model.classes_[1], model.decision_function(xs_te)))
    return out
