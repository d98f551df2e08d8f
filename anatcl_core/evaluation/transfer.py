"""Probes where the foundation-model claims live: unseen sites and few labels.

- **Leave-one-site-out** (:func:`loso_probe`): each downstream site of a task is held out in turn;
  the class-balanced logistic probe of :mod:`anatcl_core.evaluation.probes` is trained on the other sites,
  its C chosen by an inner *group* K-fold over those training sites only (no validation subject
  shares a site with its training subjects). Balanced accuracy of the pooled out-of-site
  predictions is the headline; a site holding a single class (possible with real recruitment) still
  contributes its predictions to the pooled score, and its own per-site balanced accuracy is NaN
  and listed under ``single_class_sites``. With a single training site the inner CV falls back to
  stratified K-fold inside it (``inner``: ``"stratified"``), stated in the result.
- **Label efficiency** (:func:`label_efficiency_probe`): outer stratified K-fold per draw; the
  training part is subsampled (stratified, nested: 25 subjects ⊂ 50 ⊂ ...) to each size, the probe
  is fitted on the subsample and predicts the held-out fold, so each (size, draw) gives one
  out-of-fold prediction for every subject of the task.

Folds and subsamples depend only on the seed, the subject ids and the labels (never on the
features), so every method and reference row is probed on the same folds and draws and two
methods can be compared subject by subject (:mod:`anatcl_core.evaluation.paired`). Both probes return the
per-subject predictions and decision scores beside their summaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, PredefinedSplit, StratifiedKFold

from anatcl_core.evaluation import probes
from anatcl_core.evaluation.metrics import balanced_accuracy_rows, bootstrap_ci


@dataclass
class ProbeOutput:
    """A probe's JSON-ready ``summary`` and its per-subject ``predictions`` (name -> array)."""

    summary: dict
    predictions: dict[str, np.ndarray]


def _check_task(features, labels, site, name: str):
    x, y = np.asarray(features, float), np.asarray(labels, float)
    site = np.asarray(site).astype(str)
    if x.ndim != 2 or y.shape != (len(x),) or site.shape != (len(x),):
        raise ValueError(f"{name}: expected features (N, F), labels (N,), site (N,), got "
                         f"{x.shape}, {y.shape}, {site.shape}")
    keep = np.isfinite(y)
    if not set(np.unique(y[keep])) <= {0.0, 1.0}:
        raise ValueError(f"{name}: labels must be 0/1 (or NaN), got {np.unique(y[keep])}")
    return x[keep], y[keep].astype(int), site[keep], np.flatnonzero(keep)


def fit_predict(x_train, y_train, x_test, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels and decision scores of the class-balanced logistic probe at ``C = c``."""
    (_, model, xs_test), = probes.logistic_path(x_train, y_train, x_test, [c], True)
    return model.predict(xs_test), model.decision_function(xs_test)


def group_inner_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int):
    """Inner CV over the training sites: GroupKFold, or stratified K-fold with one site.

    A group fold whose training part holds a single class (single-class sites) is dropped, its
    subjects then only ever train; with no usable group fold left, stratified K-fold is used.

    Returns:
        ``(splitter, kind)``: a :class:`~sklearn.model_selection.PredefinedSplit` (usable by
        :func:`anatcl_core.evaluation.probes.select_c` and by ``GridSearchCV``) and ``"group"`` or
        ``"stratified"``.
    """
    n_groups = len(np.unique(groups))
    test_fold = np.full(len(y), -1)  # -1: never validated, always trained on
    if n_groups >= 2:
        usable = [val for train, val in GroupKFold(min(n_splits, n_groups)).split(y, y, groups)
                  if len(np.unique(y[train])) == 2]  # a fold training on one class cannot score C
        for k, val in enumerate(usable):
            test_fold[val] = k
    if (test_fold < 0).all():
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(y, y)
        for k, (_, val) in enumerate(folds):
            test_fold[val] = k
        return PredefinedSplit(test_fold), "stratified"
    return PredefinedSplit(test_fold), "group"


def loso_probe(features, labels, site, *, c_grid: Sequence[float], inner_splits: int, n_bootstrap: int,
               seed: int, name: str = "diagnosis") -> ProbeOutput:
    """Leave-one-site-out logistic probe of a binary diagnosis (module docstring).

    Args:
        features: ``(N, F)``; labels: ``(N,)`` 0/1, NaN = not in the task; site: ``(N,)``.
        c_grid: C values of the inner group CV; inner_splits: its folds (at most the training sites).
        n_bootstrap: subject resamples of the 95% CI; seed: bootstrap (and fallback CV) seed.
        name: task name for errors.

    Returns:
        Summary: ``n``, ``sites``, ``balanced_accuracy`` (pooled) and ``_ci``, ``per_site`` (NaN ->
        None), ``single_class_sites``, ``C`` and ``inner`` per held-out site; predictions:
        ``index`` (rows of the input), ``pred``, ``score`` (each ``(n,)``).

    Raises:
        ValueError: fewer than two sites, or a training set with a single class.
    """
    x, y, site, index = _check_task(features, labels, site, name)
    sites = sorted(set(site.tolist()))
    if len(sites) < 2:
        raise ValueError(f"{name}: leave-one-site-out needs at least 2 sites, got {sites}")
    pred, score = np.zeros(len(y), int), np.zeros(len(y))
    out = {"n": int(len(y)), "sites": sites, "per_site": {}, "single_class_sites": [], "C": [], "inner": []}
    with probes.lean_fits():
        for held in sites:
            test = site == held
            train = ~test
            if len(np.unique(y[train])) < 2:
                raise ValueError(f"{name}: the sites other than {held} hold a single class")
            inner, kind = group_inner_splits(y[train], site[train], inner_splits, seed)
            c = probes.select_c(x[train], y[train], c_grid, inner, balanced=True)
            pred[test], score[test] = fit_predict(x[train], y[train], x[test], c)
            bacc = float(balanced_accuracy_rows(y[test], pred[test]))
            out["per_site"][held] = None if np.isnan(bacc) else bacc
            if len(np.unique(y[test])) < 2:
                out["single_class_sites"].append(held)
            out["C"].append(c)
            out["inner"].append(kind)
    out["balanced_accuracy"] = float(balanced_accuracy_rows(y, pred))
    out["balanced_accuracy_ci"] = bootstrap_ci(balanced_accuracy_rows, (y[None], pred[None]), n_bootstrap, seed)
    return ProbeOutput(out, {"index": index, "pred": pred, "score": score})


def _id_order(ids: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the rows fixed by the ids and the seed only (not by the row order)."""
    keys = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids]
    return np.argsort(keys, kind="stable")


def nested_subsample(y: np.ndarray, size: int, rng: np.random.Generator, min_per_class: int) -> np.ndarray:
    """Positions of a stratified subsample of ``size`` rows, nested over sizes for one ``rng`` state.

    Each class is permuted once; the first ``k_c`` rows of class c are taken, ``k_c`` its share of
    ``size`` (at least ``min_per_class``), so a smaller size draws a subset of a larger one.
    """
    classes, counts = np.unique(y, return_counts=True)
    share = np.maximum(np.round(size * counts / counts.sum()).astype(int), min_per_class)
    share[np.argmax(counts)] += size - share.sum()  # exact total
    perms = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    return np.sort(np.concatenate([p[:k] for p, k in zip(perms, np.minimum(share, counts))]))


def label_efficiency_splits(ids, labels, sizes: Sequence[int], n_draws: int, n_splits: int, seed: int,
                            min_per_class: int = 3) -> list[dict]:
    """Outer folds and nested training subsamples of the label-efficiency curve.

    Args:
        ids: ``(n,)`` subject ids; labels: ``(n,)`` 0/1. sizes: labelled training subjects per point
        (sizes not below the training part are dropped; ``0`` = the whole training part).
        n_draws: repetitions (outer K-fold reshuffled and subsamples redrawn); n_splits: outer folds.
        seed: the only source of randomness besides the ids. min_per_class: floor per class.

    Returns:
        One dict per (draw, fold): ``draw``, ``test`` (row positions) and ``train`` (size -> rows).
    """
    ids, y = np.asarray(ids).astype(str), np.asarray(labels, int)
    order = _id_order(ids, seed)
    splits = []
    for draw in range(n_draws):
        outer = StratifiedKFold(n_splits, shuffle=True, random_state=seed + draw)
        for fold, (train, test) in enumerate(outer.split(order, y[order])):
            train, test = order[train], order[test]
            rng = np.random.default_rng([seed, draw, fold])
            state = rng.bit_generator.state
            subsets = {}
            for size in sizes:
                if size == 0 or size >= len(train):
                    continue
                rng.bit_generator.state = state  # same permutation for every size: nested
                subsets[int(size)] = train[nested_subsample(y[train], int(size), rng, min_per_class)]
            subsets[0] = np.sort(train)
            splits.append({"draw": draw, "test": np.sort(test), "train": subsets})
    return splits


def label_efficiency_probe(features, labels, ids, *, sizes: Sequence[int], n_draws: int, n_splits: int,
                           inner_splits: int, c_grid: Sequence[float], n_bootstrap: int, seed: int,
                           name: str = "diagnosis") -> ProbeOutput:
    """Balanced accuracy against the number of labelled training subjects (module docstring).

    Args:
        features: ``(N, F)``; labels: ``(N,)`` 0/1, NaN = not in the task; ids: ``(N,)``.
        sizes: labelled subjects per point (plus the whole training part, key ``all``).
        n_draws, n_splits: see :func:`label_efficiency_splits`; inner_splits: stratified folds
            choosing C on the subsample; c_grid, n_bootstrap, seed, name: as :func:`loso_probe`.

    Returns:
        Summary ``points``: ``{"n25": {...}, ..., "all": {...}}`` each with ``n_train`` (mean),
        ``balanced_accuracy`` (mean over draws), ``_std`` and ``_ci``; predictions: ``index``,
        ``sizes`` ``(S,)`` (0 = all), ``pred`` and ``score`` ``(S, D, n)``.
    """
    x, y, _, index = _check_task(features, labels, np.zeros(len(labels)), name)
    ids = np.asarray(ids).astype(str)[index]
    splits = label_efficiency_splits(ids, y, sizes, n_draws, n_splits, seed, max(inner_splits, 2))
    kept = sorted({s for split in splits for s in split["train"]}, key=lambda s: (s == 0, s))
    kept = [s for s in kept if all(s in split["train"] for split in splits)]
    pred = np.zeros((len(kept), n_draws, len(y)), int)
    score = np.zeros((len(kept), n_draws, len(y)))
    n_train = np.zeros((len(kept), len(splits)))
    with probes.lean_fits():
        for j, split in enumerate(splits):
            d, test = split["draw"], split["test"]
            for i, size in enumerate(kept):
                train = split["train"][size]
                inner = StratifiedKFold(inner_splits, shuffle=True, random_state=seed + d)
                c = probes.select_c(x[train], y[train], c_grid, inner, balanced=True)
                pred[i, d, test], score[i, d, test] = fit_predict(x[train], y[train], x[test], c)
                n_train[i, j] = len(train)
    points = {}
    yy = np.broadcast_to(y, (n_draws, len(y)))
    for i, size in enumerate(kept):
        bacc = balanced_accuracy_rows(yy, pred[i])
        points["all" if size == 0 else f"n{size}"] = {
            "n_train": float(n_train[i].mean()), "balanced_accuracy": float(bacc.mean()),
            "balanced_accuracy_std": float(bacc.std()),
            "balanced_accuracy_ci": bootstrap_ci(balanced_accuracy_rows, (yy, pred[i]), n_bootstrap, seed)}
    summary = {"n": int(len(y)), "n_draws": n_draws, "n_splits": n_splits, "points": points}
    return ProbeOutput(summary, {"index": index, "sizes": np.asarray(kept), "pred": pred, "score": score})

