"""What a frozen representation encodes, read from the downstream subjects' features.

Three cross-validated linear read-outs (outer K-fold over subjects; hyper-parameters by inner CV
on the outer training part only):

- **descriptors**: R² of the top principal components of the true FreeSurfer descriptors (the
  selected channels of every region, z-scored, PCA fitted on the downstream subjects themselves:
  the targets are unsupervised summaries of anatomy), by
  ``StandardScaler -> RidgeCV(alpha_per_target)`` (efficient leave-one-out choice of each
  component's penalty on the training part);
- **age**: R² of chronological age, the same ridge;
- **site**: balanced accuracy of a class-balanced linear site classifier, with chance = 1 / number
  of sites: how much acquisition the representation keeps. ``StandardScaler -> RidgeClassifierCV``
  (one-vs-all least squares, penalty by efficient leave-one-out on the training part): the same
  linear read-out family as the logistic probes at a fraction of the cost of a multinomial
  logistic C search (~3 s per evaluate stage saved on 2 shared cores).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeClassifierCV, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.evaluation import probes
from anatcl_core.evaluation.metrics import multiclass_balanced_accuracy


def descriptor_components(descriptors: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top principal components of z-scored descriptors.

    Args:
        descriptors: ``(N, D)`` descriptor values (e.g. CT, GMV, SA of 68 regions flattened).
        n_components: components kept (at most ``min(N, D)``).

    Returns:
        ``(scores (N, K), explained variance ratio (K,))``.
    """
    d = np.asarray(descriptors, float)
    if d.ndim != 2 or not np.isfinite(d).all():
        raise ValueError(f"descriptors: expected a finite (N, D) array, got shape {d.shape}")
    z = StandardScaler().fit_transform(d)
    pca = PCA(min(n_components, *z.shape), random_state=seed).fit(z)
    return pca.transform(z), pca.explained_variance_ratio_


def ridge_r2(features: np.ndarray, targets: np.ndarray, *, alpha_grid: Sequence[float],
             n_splits: int, seed: int) -> np.ndarray:
    """Out-of-fold R² of every target column (``(N, T)`` or ``(N,)`` targets) from ``features``."""
    y = np.asarray(targets, float)
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alpha_grid), alpha_per_target=y.ndim > 1))
    with probes.lean_fits():
        pred = cross_val_predict(model, np.asarray(features, float), y,
                                 cv=KFold(n_splits, shuffle=True, random_state=seed))
    return np.atleast_1d(r2_score(y, pred, multioutput="raw_values"))


def site_probe(features: np.ndarray, site: np.ndarray, *, alpha_grid: Sequence[float], n_splits: int,
               seed: int) -> dict:
    """Cross-validated site balanced accuracy (module docstring), out-of-fold over ``n_splits``."""
    x, site = np.asarray(features, float), np.asarray(site).astype(str)
    model = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=list(alpha_grid), class_weight="balanced"))
    with probes.lean_fits():
        pred = cross_val_predict(model, x, site, cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed))
    n_sites = len(np.unique(site))
    return {"balanced_accuracy": multiclass_balanced_accuracy(site, pred), "chance": 1.0 / n_sites,
            "n_sites": int(n_sites)}


def representation_probe(features: np.ndarray, descriptors: np.ndarray | None, age: np.ndarray | None,
                         site: np.ndarray, *, n_components: int, alpha_grid: Sequence[float],
                         n_splits: int, seed: int) -> dict:
    """The three read-outs of the module docstring for one representation.

    Args:
        features: ``(N, F)`` downstream features. descriptors: ``(N, D)`` true descriptors (None or
            with missing values: no descriptor read-out). age: ``(N,)`` (None: no age read-out, for
            a representation made of age itself). site: ``(N,)``.
        n_components: descriptor PCs read out. alpha_grid: ridge penalties of every read-out.

    Returns:
        ``descriptor_r2`` (mean over components), ``descriptor_r2_per_component``,
        ``descriptor_explained_variance``, ``age_r2``, ``site_balanced_accuracy``, ``site_chance``.
    """
    out: dict = {}
    if descriptors is not None and np.isfinite(descriptors).all():
        scores, explained = descriptor_components(descriptors, n_components, seed)
        r2 = ridge_r2(features, scores, alpha_grid=alpha_grid, n_splits=n_splits, seed=seed)
        out.update(descriptor_r2=float(r2.mean()), descriptor_r2_per_component=[float(v) for v in r2],
                   descriptor_explained_variance=[float(v) for v in explained])
    if age is not None:
        out["age_r2"] = float(ridge_r2(features, age, alpha_grid=alpha_grid, n_splits=n_splits, seed=seed)[0])
    if len(np.unique(np.asarray(site).astype(str))) >= 2:
        s = site_probe(features, site, alpha_grid=alpha_grid, n_splits=n_splits, seed=seed)
        out.update(site_balanced_accuracy=s["balanced_accuracy"], site_chance=s["chance"])
    return out
