"""Linear probes on frozen features: diagnosis, clinical scores, OpenBHB brain age and site leakage.

Every probe is standardisation -> linear model, its hyper-parameter chosen by an inner CV that only
ever sees the outer training fold, so no hyper-parameter is chosen on a test subject (nested
cross-validation, REFERENCE §1.5). This is ``GridSearchCV(Pipeline([StandardScaler, model]))``
written out (and tested against it) in :mod:`anatcl_core.evaluation.linear`: a closed-form ridge
path over all alphas from one SVD, and a warm-started logistic path over C, ~10x faster than the
generic search on these small problems, under single-threaded BLAS (two busy cores make threaded
BLAS 40x slower here). One row of ``features`` is one subject, so the folds are subject-level.

- Diagnosis: logistic regression (class-balanced), C tuned by inner stratified CV; outer stratified
  K-fold repeated over seeds. Balanced accuracy and ROC-AUC of the out-of-fold predictions, mean
  (and std) over repeats, with a subject bootstrap 95% CI.
- Clinical scores: ridge, alpha tuned by inner K-fold; MAE, Pearson r and R^2 out of fold.
- Brain age (OpenBHB challenge protocol): ridge fitted on the train split, MAE on internal and
  external test; site leakage = balanced accuracy of a logistic site classifier on internal test;
  challenge score = MAE_ext * BAcc_int ** 0.3 (lower is better).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from anatcl_core.evaluation.linear import (  # noqa: F401 (lean_fits, ridge_path, select_alpha: probes' API)
    lean_fits,
    logistic_path,
    ridge_path,
    select_alpha,
    select_c,
)
from anatcl_core.evaluation.metrics import (
    balanced_accuracy_rows,
    bootstrap_ci,
    mean_std,
    multiclass_balanced_accuracy,
    regression_rows,
    roc_auc_rows,
)

logger = logging.getLogger(__name__)


def check_finite(features: np.ndarray, name: str) -> None:
    """Raise if ``features`` holds NaN or infinity (an encoder that diverged, a broken input)."""
    bad = ~np.isfinite(np.asarray(features, float))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=tuple(range(1, bad.ndim))))
        raise ValueError(f"{name}: {int(bad.sum())} non-finite feature value(s) in {len(rows)} row(s) "
                         f"(first rows {rows[:5].tolist()}); the probes need finite features")


def _check_xy(features: np.ndarray, target: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    features, target = np.asarray(features, float), np.asarray(target, float)
    if features.ndim != 2 or target.shape != (features.shape[0],):
        raise ValueError(f"{name}: expected features (N, F) and target (N,), got "
                         f"{features.shape} and {target.shape}")
    keep = np.isfinite(target)  # subjects outside the task have an empty cell
    return features[keep], target[keep]


# ----------------------------------------------------------------------------------- probes
def diagnosis_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    c_grid: Sequence[float],
    n_splits: int,
    n_repeats: int,
    inner_splits: int,
    n_bootstrap: int,
    seed: int,
    name: str = "diagnosis",
) -> dict:
    """Nested-CV class-balanced logistic probe of a binary diagnosis.

    Args:
        features: ``(N, F)`` frozen features, one row per subject.
        labels: ``(N,)`` 1 = case, 0 = control, NaN = subject not in this task (dropped).
        c_grid: inverse regularisation strengths searched by the inner CV.
        n_splits: outer stratified folds; n_repeats: outer CV repeats (seeds ``seed + r``).
        inner_splits: inner stratified folds choosing C on the outer training fold only.
        n_bootstrap: subject resamples for the 95% CIs (0 disables them).
        seed: base seed of every split and of the bootstrap.
        name: task name for error messages.

    Returns:
        JSON-ready dict: ``n``, ``n_cases``, ``balanced_accuracy`` (+ ``_std`` over repeats,
        ``_ci``), ``roc_auc`` (+ ``_std``, ``_ci``) and the chosen ``C`` per outer fold.

    Raises:
        ValueError: if labels are not 0/1 or a class has fewer subjects than the folds.
    """
    x, y = _check_xy(features, labels, name)
    if not set(np.unique(y)) <= {0.0, 1.0}:
        raise ValueError(f"{name}: labels must be 0/1 (or NaN), got {np.unique(y)}")
    y = y.astype(int)
    smallest = np.bincount(y, minlength=2).min()
    if smallest < max(n_splits, inner_splits):
        raise ValueError(f"{name}: {smallest} subjects in the smaller class; need at least "
                         f"{max(n_splits, inner_splits)} for {n_splits}-fold CV")
    preds = np.zeros((n_repeats, len(y)), int)
    scores = np.zeros((n_repeats, len(y)))
    chosen = []
    with lean_fits():
        for r in range(n_repeats):
            outer = StratifiedKFold(n_splits, shuffle=True, random_state=seed + r)
            inner = StratifiedKFold(inner_splits, shuffle=True, random_state=seed + r)
            for train, test in outer.split(x, y):
                c = select_c(x[train], y[train], c_grid, inner, balanced=True)
                (_, model, xs_test), = logistic_path(x[train], y[train], x[test], [c], True)
                preds[r, test] = model.predict(xs_test)
                scores[r, test] = model.decision_function(xs_test)
                chosen.append(c)
    yy = np.broadcast_to(y, preds.shape)
    out = {"n": int(len(y)), "n_cases": int(y.sum())}
    out["balanced_accuracy"], out["balanced_accuracy_std"] = mean_std(balanced_accuracy_rows(yy, preds))
    out["balanced_accuracy_ci"] = bootstrap_ci(balanced_accuracy_rows, (yy, preds), n_bootstrap, seed)
    out["roc_auc"], out["roc_auc_std"] = mean_std(roc_auc_rows(yy, scores))
    out["roc_auc_ci"] = bootstrap_ci(roc_auc_rows, (yy, scores), n_bootstrap, seed)
    out["C"] = chosen
    return out


def score_probe(
    features: np.ndarray,
    target: np.ndarray,
    *,
    alpha_grid: Sequence[float],
    n_splits: int,
    n_repeats: int,
    inner_splits: int,
    n_bootstrap: int,
    seed: int,
    name: str = "score",
) -> dict:
    """Nested-CV ridge probe of a clinical score (subjects with a NaN score are dropped).

    Args: as :func:`diagnosis_probe`, with ``target`` ``(N,)`` continuous and ``alpha_grid`` the
    ridge penalties searched by the inner K-fold (scored by MAE).

    Returns:
        JSON-ready dict: ``n``, ``mae``, ``pearson_r``, ``r2`` (each + ``_std`` over repeats;
        ``mae_ci`` and ``pearson_r_ci`` by subject bootstrap) and the chosen ``alpha`` per fold.
    """
    x, y = _check_xy(features, target, name)
    if len(y) < 2 * n_splits:
        raise ValueError(f"{name}: {len(y)} subjects with a score; need at least {2 * n_splits}")
    preds = np.zeros((n_repeats, len(y)))
    chosen = []
    with lean_fits():
        for r in range(n_repeats):
            outer = KFold(n_splits, shuffle=True, random_state=seed + r)
            inner = KFold(inner_splits, shuffle=True, random_state=seed + r)
            for train, test in outer.split(x):
                alpha = select_alpha(x[train], y[train], alpha_grid, inner, "mae")
                preds[r, test] = ridge_path(x[train], y[train], x[test], [alpha])[0]
                chosen.append(alpha)
    yy = np.broadcast_to(y, preds.shape)
    out: dict = {"n": int(len(y))}
    for key, values in regression_rows(yy, preds).items():
        out[key], out[f"{key}_std"] = mean_std(values)
    for key in ("mae", "pearson_r"):
        out[f"{key}_ci"] = bootstrap_ci(lambda a, b, k=key: regression_rows(a, b)[k],
                                         (yy, preds), n_bootstrap, seed)
    out["alpha"] = chosen
    return out


def brain_age_probe(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    internal: tuple[np.ndarray, np.ndarray, np.ndarray],
    external: tuple[np.ndarray, np.ndarray],
    *,
    alpha_grid: Sequence[float],
    c_grid: Sequence[float],
    cv_splits: int,
    seed: int,
) -> dict:
    """OpenBHB challenge probes: brain age MAE and site leakage (REFERENCE §1.5).

    Args:
        train: ``(features (N, F), age (N,), site (N,))`` of the pretraining train split.
        internal: the same for the internal test split (sites seen in training).
        external: ``(features, age)`` of the external test split (unseen sites).
        alpha_grid: ridge penalties (``cv_splits``-fold CV on train, R^2).
        c_grid: C values of the multinomial logistic site classifier (CV balanced accuracy).
        cv_splits: folds of both searches; seed: their shuffling seed.

    Returns:
        ``mae_train``, ``mae_internal``, ``mae_external``, ``site_bacc_internal``, ``site_chance``
        (1 / number of sites), ``challenge_score`` = ``mae_external * site_bacc_internal ** 0.3``,
        and the chosen ``alpha`` and ``C``.
    """
    (x_tr, age_tr, site_tr), (x_in, age_in, site_in), (x_ex, age_ex) = train, internal, external
    x_tr, x_in, x_ex = (np.asarray(a, float) for a in (x_tr, x_in, x_ex))
    age_tr = np.asarray(age_tr, float)
    site_tr, site_in = np.asarray(site_tr), np.asarray(site_in)
    with lean_fits():
        alpha = select_alpha(x_tr, age_tr, alpha_grid, KFold(cv_splits, shuffle=True, random_state=seed), "r2")
        out = {}
        for split, x, age in (("train", x_tr, age_tr), ("internal", x_in, age_in), ("external", x_ex, age_ex)):
            pred = ridge_path(x_tr, age_tr, x, [alpha])[0]
            out[f"mae_{split}"] = float(np.mean(np.abs(pred - np.asarray(age, float))))
        inner = StratifiedKFold(cv_splits, shuffle=True, random_state=seed)
        c = select_c(x_tr, site_tr, c_grid, inner, balanced=False)
        (_, model, xs_in), = logistic_path(x_tr, site_tr, x_in, [c], False)
        bacc = multiclass_balanced_accuracy(site_in, model.predict(xs_in))
    out.update(
        site_bacc_internal=bacc,
        site_chance=1.0 / len(np.unique(site_tr)),
        challenge_score=out["mae_external"] * bacc**0.3,
        alpha=alpha,
        C=c,
    )
    return out
