"""Linear probes: metrics against scikit-learn, signal versus noise, and no test-fold leakage."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import params_section
from scipy.stats import pearsonr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, r2_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.evaluation import linear, metrics, probes

EVALUATE = params_section("evaluate")
#: Smaller CV than params.yaml's; the grids and the seed are the pipeline's.
FAST = dict(n_splits=3, n_repeats=2, inner_splits=3, n_bootstrap=200, seed=EVALUATE.seed)
DX = dict(FAST, c_grid=EVALUATE.c_grid)
SCORE = dict(FAST, alpha_grid=EVALUATE.alpha_grid)
#: The OpenBHB protocol's grids and seed (params.yaml), with fewer folds.
BRAIN_AGE = dict(alpha_grid=EVALUATE.alpha_grid, c_grid=EVALUATE.site_c_grid, cv_splits=3, seed=EVALUATE.seed)


def _cohort(n=120, f=8, signal=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(float)  # imbalanced: a third are cases
    x = rng.normal(size=(n, f))
    x[:, 0] += signal * y
    return x, y


def test_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=(4, 50))
    pred = rng.integers(0, 2, size=(4, 50))
    score = np.round(rng.normal(size=(4, 50)), 1)  # ties on purpose
    for r in range(4):
        assert metrics.balanced_accuracy_rows(y[r], pred[r]) == pytest.approx(
            balanced_accuracy_score(y[r], pred[r]))
        assert metrics.roc_auc_rows(y[r], score[r]) == pytest.approx(roc_auc_score(y[r], score[r]))
    t, p = rng.normal(size=30), rng.normal(size=30)
    rows = metrics.regression_rows(t, p)
    assert rows["mae"] == pytest.approx(np.abs(t - p).mean())
    assert rows["pearson_r"] == pytest.approx(pearsonr(t, p)[0])
    assert rows["r2"] == pytest.approx(r2_score(t, p))


def test_metrics_single_class_is_nan():
    assert np.isnan(metrics.balanced_accuracy_rows(np.ones(5), np.ones(5)))
    assert np.isnan(metrics.roc_auc_rows(np.zeros(5), np.arange(5)))


def test_diagnosis_signal_versus_noise():
    x, y = _cohort(signal=3.0)
    good = probes.diagnosis_probe(x, y, **DX)
    assert good["balanced_accuracy"] > 0.85 and good["roc_auc"] > 0.9
    lo, hi = good["balanced_accuracy_ci"]
    assert lo <= good["balanced_accuracy"] <= hi
    noise = probes.diagnosis_probe(x[:, 1:], y, **DX)
    assert abs(noise["balanced_accuracy"] - 0.5) < 0.15
    assert noise["roc_auc_ci"][0] < 0.5 + 0.1
    assert len(good["C"]) == FAST["n_splits"] * FAST["n_repeats"]


def test_diagnosis_drops_subjects_outside_task_and_is_deterministic():
    x, y = _cohort()
    y_nan = y.copy()
    y_nan[::7] = np.nan
    a = probes.diagnosis_probe(x, y_nan, **dict(DX, seed=3))
    b = probes.diagnosis_probe(x, y_nan, **dict(DX, seed=3))
    assert a == b
    assert a["n"] == int(np.isfinite(y_nan).sum())
    c = probes.diagnosis_probe(x, y_nan, **dict(DX, seed=4))
    assert c["C"] != a["C"] or c["balanced_accuracy"] != a["balanced_accuracy"]


def test_diagnosis_refuses_bad_input():
    x, y = _cohort(n=12)
    with pytest.raises(ValueError, match="smaller class"):
        probes.diagnosis_probe(x, y, **dict(DX, n_splits=5, n_repeats=1, n_bootstrap=0))
    with pytest.raises(ValueError, match="0/1"):
        probes.diagnosis_probe(*_cohort()[:1], _cohort()[1] * 2, **DX)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        probes.diagnosis_probe(x[:, 0], y, **DX)


def test_probes_never_tune_on_the_rows_they_predict(monkeypatch):
    """The hyper-parameter search sees only the outer training fold (nested CV)."""
    x, y = _cohort(n=60)
    x = np.column_stack([x, np.arange(len(y)) + 0.5])  # a row id, unique per subject
    score = x[:, 0] + np.random.default_rng(0).normal(size=len(y))
    for selector, probe, target, kwargs in (("select_c", probes.diagnosis_probe, y, DX),
                                            ("select_alpha", probes.score_probe, score, SCORE)):
        seen = []
        real = getattr(probes, selector)

        def spy(xs, *args, real=real, **kwargs):
            seen.append(set(xs[:, -1]))
            return real(xs, *args, **kwargs)

        monkeypatch.setattr(probes, selector, spy)
        probe(x, target, **dict(kwargs, n_splits=3, n_repeats=2, inner_splits=3, n_bootstrap=0))
        assert len(seen) == 6
        for r in range(2):
            # every subject is missing from exactly one of the three searches of a repeat
            counts = [sum(i + 0.5 in s for s in seen[3 * r: 3 * r + 3]) for i in range(len(y))]
            assert set(counts) == {2}
        monkeypatch.undo()


def test_ridge_path_matches_sklearn_pipeline():
    rng = np.random.default_rng(5)
    x, xt = rng.normal(size=(40, 6)) * [1, 2, 3, 4, 5, 6], rng.normal(size=(10, 6))
    y = x @ rng.normal(size=6) + 3 + rng.normal(size=40)
    alphas = [0.01, 1.0, 100.0]
    path = probes.ridge_path(x, y, xt, alphas)
    for a, pred in zip(alphas, path):
        ref = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x, y).predict(xt)
        np.testing.assert_allclose(pred, ref, rtol=1e-8, atol=1e-8)


def _balanced_reference(x, labels, c, **options):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", **options)).fit(x, labels)


def test_binary_logistic_path_predicts_what_sklearns_logistic_regression_predicts():
    """The lean binary logistic (scikit-learn's objective, solver and stopping rule without its
    per-call overhead) along a warm-started C path, against LogisticRegression fitted afresh."""
    rng = np.random.default_rng(8)
    x, xt = rng.normal(size=(150, 12)) * rng.uniform(0.5, 3, 12), rng.normal(size=(40, 12))
    labels = (x[:, 0] + x[:, 1] + rng.normal(size=150) > 1).astype(int)  # imbalanced
    grid = [1e-3, 1e-2, 1e-1, 1.0]
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(class_weight="balanced", warm_start=True)  # the same warm-started path
    for c, model, xs_test in probes.logistic_path(x, labels, xt, grid, balanced=True):
        ref.set_params(C=c).fit(scaler.transform(x), labels)
        np.testing.assert_allclose(model.decision_function(xs_test), ref.decision_function(scaler.transform(xt)),
                                   atol=1e-6)
        np.testing.assert_array_equal(model.predict(xs_test), ref.predict(scaler.transform(xt)))
        fresh = _balanced_reference(x, labels, c)  # and a fresh fit, within the solver's tolerance
        np.testing.assert_allclose(model.decision_function(xs_test), fresh.decision_function(xt), atol=1e-2)


def test_wide_features_give_sklearns_predictions_from_their_row_space(monkeypatch):
    """More features than subjects (the un-CNN's 3,528 on a few hundred): ridge and the class-balanced
    logistic path are fitted in the training rows' span, and predict what scikit-learn's
    StandardScaler -> model pipeline predicts on the full features (both solved tightly)."""
    rng = np.random.default_rng(7)
    x, xt = rng.normal(size=(30, 200)) * rng.uniform(0.5, 3, 200), rng.normal(size=(12, 200))
    x[:, 5] = 1.0  # a constant column, as dead feature channels give
    y = x[:, :3].sum(1) + rng.normal(size=30)
    z, _ = linear.row_space(*linear.standardise(x, xt))
    assert z.shape == (30, 29)  # centring leaves N - 1 directions
    for a, pred in zip([0.1, 10.0], probes.ridge_path(x, y, xt, [0.1, 10.0])):
        np.testing.assert_allclose(pred, make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(x, y).predict(xt),
                                   rtol=1e-8, atol=1e-8)
    labels = (y > np.median(y)).astype(int)
    labels[:4] = 1  # imbalanced: class weights matter
    monkeypatch.setattr(linear.BinaryLogistic, "TOL", 1e-10)
    for c, model, xs_test in probes.logistic_path(x, labels, xt, [0.01, 1.0], balanced=True):
        ref = _balanced_reference(x, labels, c, tol=1e-10, max_iter=100_000)
        np.testing.assert_allclose(model.decision_function(xs_test), ref.decision_function(xt), rtol=1e-4, atol=1e-4)


def test_selection_matches_grid_search():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 10))
    y = x[:, 0] + 2 * rng.normal(size=60)
    grid = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
    cv = KFold(3, shuffle=True, random_state=0)
    ref = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": grid},
                       cv=cv, scoring="neg_mean_absolute_error").fit(x, y)
    assert probes.select_alpha(x, y, grid, cv, "mae") == ref.best_params_["ridge__alpha"]
    labels = (x[:, 0] + rng.normal(size=60) > 0).astype(int)
    cgrid = [1e-3, 1e-2, 1e-1, 1.0]
    scv = StratifiedKFold(3, shuffle=True, random_state=0)
    ref = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")),
                       {"logisticregression__C": cgrid}, cv=scv, scoring="balanced_accuracy").fit(x, labels)
    assert probes.select_c(x, labels, cgrid, scv, balanced=True) == ref.best_params_["logisticregression__C"]


def test_score_probe_recovers_a_linear_score():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 6))
    target = 2 * x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=100)
    target[::10] = np.nan
    out = probes.score_probe(x, target, **SCORE)
    assert out["n"] == 90
    assert out["pearson_r"] > 0.95 and out["r2"] > 0.9 and out["mae"] < 0.3
    noise = probes.score_probe(rng.normal(size=(100, 6)), target, **SCORE)
    assert noise["r2"] < 0.1


def test_brain_age_protocol():
    rng = np.random.default_rng(3)

    def split(n, sites):
        age = rng.uniform(20, 80, n)
        site = rng.integers(0, sites, n)
        x = np.column_stack([age / 10 + 0.05 * rng.normal(size=n), rng.normal(size=(n, 4))])
        return x, age, site

    train, internal = split(200, 4), split(80, 4)
    external = split(80, 4)[:2]
    out = probes.brain_age_probe(train, internal, external, **BRAIN_AGE)
    assert out["mae_internal"] < 2.0 and out["mae_external"] < 2.0
    # no site information in the features: the classifier is near chance
    assert out["site_chance"] == 0.25
    assert out["site_bacc_internal"] < 0.45
    assert out["challenge_score"] == pytest.approx(
        out["mae_external"] * out["site_bacc_internal"] ** 0.3)
    # site written into the features: leakage is detected
    leaky = [(np.column_stack([x, np.eye(4)[s] * 3]), a, s) for x, a, s in (train, internal)]
    out2 = probes.brain_age_probe(leaky[0], leaky[1], (np.column_stack([external[0], np.zeros((80, 4))]),
                                                       external[1]), **BRAIN_AGE)
    assert out2["site_bacc_internal"] > 0.9


def _with_dead_columns(x):
    """``x`` with dead feature channels: all zero, and constants whose float std is not exactly 0."""
    n = len(x)
    dead = np.column_stack([np.zeros(n), np.full(n, 0.1), np.full(n, np.float32(123.456))])
    assert dead[:, 1].std() > 0  # rounding: a naive StandardScaler would divide by ~1e-17
    return np.column_stack([x[:, :2], dead, x[:, 2:]])


def test_zero_variance_columns_pass_every_probe_without_nan():
    x, y = _cohort(signal=1.5)
    dx, dx_dead = probes.diagnosis_probe(x, y, **DX), probes.diagnosis_probe(_with_dead_columns(x), y, **DX)
    score = x[:, 0] * 2.0 + np.random.default_rng(4).normal(size=len(x))
    sc, sc_dead = probes.score_probe(x, score, **SCORE), probes.score_probe(_with_dead_columns(x), score, **SCORE)
    rng = np.random.default_rng(5)
    age = rng.uniform(20, 80, len(x))
    site = np.arange(len(x)) % 3
    feats = np.column_stack([age / 10 + rng.normal(size=len(x)), rng.normal(size=(len(x), 3))])
    train, internal, external = slice(0, 60), slice(60, 90), slice(90, 120)

    def brain_age(f):
        return probes.brain_age_probe((f[train], age[train], site[train]), (f[internal], age[internal], site[internal]),
                                      (f[external], age[external]), **BRAIN_AGE)  # fmt: skip

    ba, ba_dead = brain_age(feats), brain_age(_with_dead_columns(feats))
    for clean, with_dead in ((dx, dx_dead), (sc, sc_dead), (ba, ba_dead)):
        for key, value in clean.items():
            values = np.asarray(with_dead[key], float)
            assert np.isfinite(values).all(), key
            # a dead channel carries nothing: the probes give what they give without it
            np.testing.assert_allclose(values, np.asarray(value, float), rtol=1e-6, atol=1e-9, err_msg=key)
