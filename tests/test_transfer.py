"""Leave-one-site-out and label-efficiency probes, paired differences, representation read-outs:
against scikit-learn references, closed forms and constructed data with a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import params_section
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.evaluation import paired, probes, representation, transfer

EVALUATE = params_section("evaluate")
C_GRID = list(EVALUATE.c_grid)
#: The leave-one-site-out probe's settings in params.yaml.
LOSO = dict(c_grid=C_GRID, inner_splits=EVALUATE.loso_inner_splits, seed=EVALUATE.seed)


def _sites_cohort(n=240, n_sites=4, f=6, signal=1.5, site_shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    site = np.arange(n) % n_sites
    y = (rng.random(n) < 0.3 + 0.1 * site).astype(float)  # case shares differ by site
    x = rng.normal(size=(n, f))
    x[:, 0] += signal * y
    x[:, 1] += site_shift * site  # a pure site feature
    return x, y, site.astype(str)


def test_inner_group_selection_equals_gridsearchcv_with_the_group_splitter():
    x, y, site = _sites_cohort()
    y = y.astype(int)
    inner, kind = transfer.group_inner_splits(y, site, 3, seed=0)
    assert kind == "group"
    for train, val in inner.split(x, y):
        assert not set(site[train]) & set(site[val])  # no validation site is a training site
    ref = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000)),
                       {"logisticregression__C": C_GRID}, scoring="balanced_accuracy",
                       cv=GroupKFold(3), ).fit(x, y, groups=site)
    assert probes.select_c(x, y, C_GRID, inner, balanced=True) == ref.best_params_["logisticregression__C"]


def test_loso_holds_out_each_site_and_reports_single_class_sites():
    x, y, site = _sites_cohort(signal=3.0)
    y[site == "0"] = 0  # a site of controls only
    out = transfer.loso_probe(x, y, site, **LOSO, n_bootstrap=100)
    s = out.summary
    assert s["sites"] == ["0", "1", "2", "3"] and s["single_class_sites"] == ["0"]
    assert s["per_site"]["0"] is None and s["per_site"]["1"] > 0.8
    assert s["balanced_accuracy"] > 0.85 and s["balanced_accuracy_ci"][0] <= s["balanced_accuracy"]
    assert out.predictions["pred"].shape == (len(y),) and set(s["inner"]) == {"group"}
    # a fold is its own site: refitting on the other sites at the chosen C gives the same predictions
    held = site == "2"
    pred, _ = transfer.fit_predict(x[~held], y[~held].astype(int), x[held], s["C"][2])
    np.testing.assert_array_equal(out.predictions["pred"][held], pred)


def test_loso_with_two_sites_falls_back_to_stratified_inner_cv():
    x, y, site = _sites_cohort(n_sites=2)
    out = transfer.loso_probe(x, y, site, **LOSO, n_bootstrap=0)
    assert out.summary["inner"] == ["stratified", "stratified"]
    with pytest.raises(ValueError, match="at least 2 sites"):
        transfer.loso_probe(x, y, np.zeros(len(y)), **LOSO, n_bootstrap=0)


def test_loso_is_lower_than_pooled_cv_when_the_signal_is_a_site_confound():
    rng = np.random.default_rng(1)
    site = np.repeat(np.arange(4), 60)
    y = (rng.random(240) < np.where(site % 2 == 0, 0.8, 0.2)).astype(float)  # case share tied to site
    x = rng.normal(size=(240, 4))
    x[np.arange(240), site] += 3.0  # each site its own offset: features see the site only
    pooled = probes.diagnosis_probe(x, y, c_grid=C_GRID, n_splits=3, n_repeats=1, inner_splits=3, n_bootstrap=0,
                                    seed=EVALUATE.seed)
    loso = transfer.loso_probe(x, y, site.astype(str), **LOSO, n_bootstrap=0)
    assert pooled["balanced_accuracy"] > 0.7 > loso.summary["balanced_accuracy"]


def test_label_efficiency_splits_depend_on_ids_and_seed_only():
    rng = np.random.default_rng(2)
    ids = np.array([f"sub-{i}" for i in range(90)])
    y = (np.arange(90) % 3 == 0).astype(int)
    a = transfer.label_efficiency_splits(ids, y, [10, 30], n_draws=2, n_splits=3, seed=0)
    perm = rng.permutation(90)
    b = transfer.label_efficiency_splits(ids[perm], y[perm], [10, 30], n_draws=2, n_splits=3, seed=0)
    for sa, sb in zip(a, b):  # the same subjects, whatever the row order
        assert set(ids[sa["test"]]) == set(ids[perm][sb["test"]])
        for size in (10, 30, 0):
            assert set(ids[sa["train"][size]]) == set(ids[perm][sb["train"][size]])
    for split in a:
        small, large, full = (set(split["train"][k]) for k in (10, 30, 0))
        assert small < large < full and not full & set(split["test"])  # nested, disjoint from test
        assert len(small) == 10 and y[list(small)].sum() >= 3  # stratified with a floor per class
    c = transfer.label_efficiency_splits(ids, y, [10, 30], n_draws=2, n_splits=3, seed=1)
    assert any(set(sa["test"]) != set(sc["test"]) for sa, sc in zip(a, c))


def test_label_efficiency_folds_are_the_same_for_every_method():
    x, y, _ = _sites_cohort(n=120)
    ids = np.arange(120).astype(str)
    kw = dict(sizes=(20, 40), n_draws=2, n_splits=2, inner_splits=3, c_grid=C_GRID, n_bootstrap=0, seed=0)
    good = transfer.label_efficiency_probe(x, y, ids, **kw)
    noise = transfer.label_efficiency_probe(np.random.default_rng(3).normal(size=x.shape), y, ids, **kw)
    np.testing.assert_array_equal(good.predictions["index"], noise.predictions["index"])
    points = good.summary["points"]
    assert list(points) == ["n20", "n40", "all"] and points["n20"]["n_train"] == 20
    assert points["all"]["balanced_accuracy"] > points["n20"]["balanced_accuracy"] - 0.05
    assert noise.summary["points"]["all"]["balanced_accuracy"] < 0.65 < points["all"]["balanced_accuracy"]
    assert good.predictions["pred"].shape == (3, 2, 120)


def test_paired_difference_ci_covers_the_truth():
    rng = np.random.default_rng(4)
    covered, n = 0, 400
    for _ in range(100):
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < 0.80, y, 1 - y)  # recall 0.80 in both classes: BAcc 0.80
        b = np.where(rng.random(n) < 0.70, y, 1 - y)  # BAcc 0.70
        diff, reps = paired.paired_bootstrap(y, a[None], b[None], 300, seed=0)
        s = paired.summarise(diff, reps)
        covered += s["ci"][0] <= 0.10 <= s["ci"][1]
    assert 88 <= covered <= 100


def test_paired_difference_is_zero_against_itself_and_alignment_checks_subjects():
    y = np.arange(50) % 2
    pred = np.stack([y, 1 - y])
    diff, reps = paired.paired_bootstrap(y, pred, pred, 50, 0)
    assert diff == 0 and np.all(reps == 0)
    np.testing.assert_array_equal(paired.align(["b", "a"], ["a", "b"]), [1, 0])
    with pytest.raises(ValueError, match="different subjects"):
        paired.align(["a", "c"], ["a", "b"])


def test_representation_reads_out_descriptors_age_and_site():
    rng = np.random.default_rng(5)
    n = 300
    descriptors = rng.normal(size=(n, 3)) @ rng.normal(size=(3, 30)) + 0.05 * rng.normal(size=(n, 30))
    age = rng.uniform(20, 80, n)
    site = np.arange(n) % 3
    scores, _ = representation.descriptor_components(descriptors, 3, seed=0)
    features = np.column_stack([scores, age / 10, rng.normal(size=(n, 4))])
    out = representation.representation_probe(features, descriptors, age, site, n_components=3,
                                               alpha_grid=[0.1, 1.0, 10.0], n_splits=3, seed=0)
    assert out["descriptor_r2"] > 0.95 and out["age_r2"] > 0.95
    assert abs(out["site_balanced_accuracy"] - 1 / 3) < 0.12 and out["site_chance"] == pytest.approx(1 / 3)
    blind = representation.representation_probe(rng.normal(size=(n, 5)), descriptors, None, site, n_components=3,
                                                 alpha_grid=[0.1, 1.0, 10.0], n_splits=3, seed=0)
    assert blind["descriptor_r2"] < 0.05 and "age_r2" not in blind


def test_task_probes_keep_the_stratified_diagnosis_probe_unchanged():
    import pandas as pd

    from anatcl_core.evaluation.task_probes import task_probes

    x, y, site = _sites_cohort(n=160)
    down = pd.DataFrame({"participant_id": [f"s{i}" for i in range(160)], "site": site,
                         "dx_a": np.where(np.arange(160) < 80, y, np.nan),
                         "dx_b": np.where(np.arange(160) >= 80, y, np.nan)})
    config = params_section("evaluate", n_splits=3, n_repeats=1, inner_splits=2, n_bootstrap=20,
                            label_sizes=(20,), label_draws=1)
    one = task_probes(config, x, down)
    assert list(one[0]) == list(one[1]["loso"]) == list(one[1]["label_efficiency"]) == ["a", "b"]
    assert {"ids", "loso/a/pred", "loso/a/y", "le/b/sizes", "le/b/score"} <= set(one[2])
    assert one[0]["a"] == probes.diagnosis_probe(x, down["dx_a"].to_numpy(), n_splits=3, n_repeats=1,
                                                 inner_splits=2, n_bootstrap=20, c_grid=config.c_grid,
                                                 seed=config.seed)


def test_bootstrap_by_counts_equals_resampling_subjects():
    from anatcl_core.evaluation.metrics import balanced_accuracy_rows

    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 60)
    pred = rng.integers(0, 2, (3, 60))
    point, reps = paired.bootstrap_bacc(y, pred, 40, seed=7)
    idx = np.random.default_rng(7).integers(0, 60, size=(40, 60))
    naive = [np.nanmean(balanced_accuracy_rows(np.broadcast_to(y[i], (3, 60)), pred[:, i])) for i in idx]
    np.testing.assert_allclose(reps, naive)
    assert point == pytest.approx(np.mean(balanced_accuracy_rows(np.broadcast_to(y, pred.shape), pred)))
