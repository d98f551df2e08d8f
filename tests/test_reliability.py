"""Reliability: ICC against closed cases, a loop ANOVA and Shrout & Fleiss; site shares; held-out sites."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.evaluation import reliability, site_held_out

# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; published ICC(2,1) = .29, ICC(3,1) = .71
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8],
                          [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def _simulate(n, k, d, subject_var, noise_var, bias_var=0.0, seed=0):
    """x_ijd = mu_d + s_id + b_jd + e_ijd with the given variances: (n, k, d)."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, np.sqrt(subject_var), (n, 1, d))
    b = rng.normal(0, np.sqrt(bias_var), (1, k, d))
    e = rng.normal(0, np.sqrt(noise_var), (n, k, d))
    return 5.0 + s + b + e


def _loop_icc(x):
    """Two-way ANOVA by explicit loops over an (n, k) table -> (ICC(2,1), ICC(3,1))."""
    n, k = x.shape
    grand = sum(x[i, j] for i in range(n) for j in range(k)) / (n * k)
    rows = [sum(x[i, j] for j in range(k)) / k for i in range(n)]
    cols = [sum(x[i, j] for i in range(n)) / n for j in range(k)]
    ssr = sum(k * (rows[i] - grand) ** 2 for i in range(n))
    ssc = sum(n * (cols[j] - grand) ** 2 for j in range(k))
    sst = sum((x[i, j] - grand) ** 2 for i in range(n) for j in range(k))
    msr, msc = ssr / (n - 1), ssc / (k - 1)
    mse = (sst - ssr - ssc) / ((n - 1) * (k - 1))
    icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    icc3 = (msr - mse) / (msr + (k - 1) * mse)
    return icc2, icc3


def test_published_shrout_fleiss_values():
    assert reliability.icc(SHROUT_FLEISS, "2,1")[0] == pytest.approx(0.29, abs=0.005)
    assert reliability.icc(SHROUT_FLEISS, "3,1")[0] == pytest.approx(0.71, abs=0.005)


def test_matches_loop_anova_and_is_vectorised():
    x = _simulate(7, 3, 12, subject_var=2.0, noise_var=1.0, bias_var=0.5, seed=3)
    icc2, icc3 = reliability.icc(x, "2,1"), reliability.icc(x, "3,1")
    assert icc2.shape == icc3.shape == (12,)
    for dim in range(12):
        ref2, ref3 = _loop_icc(x[:, :, dim])
        assert icc2[dim] == pytest.approx(ref2, rel=1e-10)
        assert icc3[dim] == pytest.approx(ref3, rel=1e-10)
        assert reliability.icc(x[:, :, dim], "2,1")[0] == pytest.approx(icc2[dim], rel=1e-12)
    assert reliability.icc(SHROUT_FLEISS, "2,1")[0] == pytest.approx(_loop_icc(SHROUT_FLEISS)[0], rel=1e-12)


def test_identical_measurements_give_one():
    x = np.repeat(np.random.default_rng(0).normal(size=(10, 1, 5)), 4, axis=1)
    np.testing.assert_allclose(reliability.icc(x, "2,1"), 1.0)
    np.testing.assert_allclose(reliability.icc(x, "3,1"), 1.0)


def test_pure_noise_gives_about_zero():
    x = _simulate(1000, 4, 20, subject_var=0.0, noise_var=1.0, seed=1)
    for kind in ("2,1", "3,1"):
        values = reliability.icc(x, kind)
        assert np.abs(values).max() < 0.06  # SE ~ 0.015 at n=1000, k=4
        assert abs(values.mean()) < 0.01


@pytest.mark.parametrize("subject_var,noise_var", [(3.0, 1.0), (1.0, 1.0), (0.5, 2.0)])
def test_known_variance_split(subject_var, noise_var):
    x = _simulate(2000, 5, 20, subject_var, noise_var, seed=2)
    expected = subject_var / (subject_var + noise_var)
    for kind in ("2,1", "3,1"):
        assert reliability.icc(x, kind).mean() == pytest.approx(expected, abs=0.01)


def test_site_bias_lowers_agreement_but_not_consistency():
    x = _simulate(2000, 5, 10, subject_var=3.0, noise_var=1.0, seed=4)
    bias = np.random.default_rng(5).normal(0, 2.0, (1, 5, 10))  # large per-site offsets
    # consistency removes column effects exactly; absolute agreement counts them as error
    np.testing.assert_allclose(reliability.icc(x + bias, "3,1"), reliability.icc(x, "3,1"), rtol=1e-9)
    assert (reliability.icc(x + bias, "2,1") < reliability.icc(x, "2,1") - 0.1).all()
    # in expectation ICC(2,1) = s2 / (s2 + b2 + e2) for random site offsets of variance b2
    biased = _simulate(500, 40, 30, subject_var=3.0, noise_var=1.0, bias_var=2.0, seed=6)
    assert np.median(reliability.icc(biased, "2,1")) == pytest.approx(3.0 / 6.0, abs=0.06)


def test_affine_invariance_per_dimension():
    x = _simulate(30, 4, 6, subject_var=1.0, noise_var=0.5, bias_var=0.3, seed=7)
    scale, shift = np.array([0.01, 3.0, -2.0, 100.0, 1.0, 7.0]), np.arange(6) * 10.0
    for kind in ("2,1", "3,1"):
        np.testing.assert_allclose(reliability.icc(x * scale + shift, kind), reliability.icc(x, kind),
                                   rtol=1e-8)


def test_degenerate_dimensions_are_nan_and_counted():
    x = _simulate(20, 3, 5, subject_var=1.0, noise_var=0.5, seed=8)
    x[:, :, 1] = 0.0  # dead ReLU unit
    x[:, :, 3] = 0.3  # constant non-zero (rounding must not make it "vary")
    x[:, :, 4] = np.array([1.0, 2.0, 4.0])  # only the site varies
    icc2, icc3 = reliability.icc(x, "2,1"), reliability.icc(x, "3,1")
    assert np.isnan(icc2[[1, 3]]).all() and np.isnan(icc3[[1, 3, 4]]).all()
    assert icc2[4] == pytest.approx(0.0, abs=1e-12)  # pure site offset: no agreement at all
    assert np.isfinite(icc2[[0, 2]]).all() and np.isfinite(icc3[[0, 2]]).all()
    table = reliability.icc_table({"m": x})
    assert table.loc["m", "n_degenerate"] == 2 and table.loc["m", "n_dims"] == 5
    finite = icc2[np.isfinite(icc2)]
    assert table.loc["m", "icc_2_1_median"] == pytest.approx(np.median(finite))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n_subjects >= 2"):
        reliability.icc(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        reliability.icc(np.full((3, 3, 2), np.nan))
    with pytest.raises(ValueError, match="kind"):
        reliability.icc(SHROUT_FLEISS, "1,1")


# --------------------------------------------------------------------------- site variance
def test_site_variance_share_on_constructed_data():
    sizes = [6, 10, 14, 20]  # unbalanced on purpose; even, so the +-1 pattern has mean 0 per site
    site = np.repeat(["a", "b", "c", "d"], sizes)
    offsets = {"a": -3.0, "b": -1.0, "c": 1.0, "d": 2.0}
    within = np.tile([-1.0, 1.0], 25)  # mean 0 inside every site
    x = np.stack([np.array([offsets[s] for s in site]), within, within + [offsets[s] for s in site]], 1)
    shares = reliability.site_variance_per_dimension(x, site)
    grand = sum(offsets[s] * n for s, n in zip("abcd", sizes)) / 50
    between = sum(n * (offsets[s] - grand) ** 2 for s, n in zip("abcd", sizes))
    np.testing.assert_allclose(shares, [1.0, 0.0, between / (between + 50.0)], atol=1e-12)
    pooled = reliability.site_variance_share(x, site)
    assert pooled == pytest.approx((2 * between) / (2 * between + 100.0))
    x[:, 1] = 4.0  # constant dimension: NaN per dimension, contributes nothing pooled
    assert np.isnan(reliability.site_variance_per_dimension(x, site)[1])
    assert reliability.site_variance_share(x, site) == pytest.approx(2 * between / (2 * between + 50.0))


def test_site_share_in_table_matches_anova():
    x = _simulate(15, 4, 8, subject_var=1.0, noise_var=0.5, bias_var=1.0, seed=9)
    ms = reliability.anova_mean_squares(x)
    table = reliability.icc_table({"m": x})
    assert table.loc["m", "site_share"] == pytest.approx(ms["ss_site"].sum() / ms["ss_total"].sum())
    long = x.reshape(15 * 4, 8)
    np.testing.assert_allclose(reliability.site_variance_per_dimension(long, np.tile(np.arange(4), 15)),
                               ms["ss_site"] / ms["ss_total"], rtol=1e-10)


# ------------------------------------------------------------------------ arrangement
def test_arrange_by_site_round_trip_and_errors():
    x = _simulate(4, 3, 2, subject_var=1.0, noise_var=1.0, seed=10)  # n x k x d
    subjects, sites = np.array(["s1", "s2", "s3", "s4"]), np.array(["A", "B", "C"])
    rows = [(subjects[i], sites[j], x[i, j]) for i in range(4) for j in range(3)]
    order = np.random.default_rng(0).permutation(len(rows))  # manifest order is arbitrary
    manifest = pd.DataFrame([rows[o][:2] for o in order], columns=["subject", "site"])
    feats = np.stack([rows[o][2] for o in order])
    arranged, subj, st = reliability.arrange_by_site(feats, manifest["subject"], manifest["site"])
    np.testing.assert_array_equal(arranged, x)
    assert list(subj) == list(subjects) and list(st) == list(sites)
    # ROI tables (N, C, R) are flattened to d = C * R
    tables = np.zeros((12, 3, 68))
    assert reliability.arrange_by_site(tables, manifest["subject"], manifest["site"])[0].shape == (4, 3, 204)
    keep = ~((manifest["subject"] == "s2") & (manifest["site"] == "B")).to_numpy()
    with pytest.raises(ValueError, match=r"unbalanced.*'s2', 'B'"):
        reliability.arrange_by_site(feats[keep], manifest["subject"][keep], manifest["site"][keep])
    dup = np.r_[np.arange(12), 0]
    with pytest.raises(ValueError, match="more than once"):
        reliability.arrange_by_site(feats[dup], manifest["subject"].to_numpy()[dup],
                                    manifest["site"].to_numpy()[dup])


def test_icc_table_orders_methods_by_reliability():
    methods = {
        "reliable": _simulate(40, 4, 16, subject_var=9.0, noise_var=0.3, seed=11),
        "site_driven": _simulate(40, 4, 16, subject_var=1.0, noise_var=0.3, bias_var=5.0, seed=12),
        "noise": _simulate(40, 4, 16, subject_var=0.2, noise_var=1.0, seed=13),
    }
    table = reliability.icc_table(methods)
    assert list(table.index) == list(methods)
    med = table["icc_2_1_median"]
    assert med["reliable"] > 0.9 and med["reliable"] > med["site_driven"] and med["reliable"] > med["noise"]
    assert table.loc["site_driven", "icc_3_1_median"] > 0.6  # consistency ignores the offsets
    assert table["site_share"].idxmax() == "site_driven"
    assert (table["icc_2_1_iqr"] == table["icc_2_1_q3"] - table["icc_2_1_q1"]).all()
    per_dim = reliability.icc_per_dimension(methods)
    assert len(per_dim) == 48
    assert set(per_dim.columns) >= {"method", "dimension", "icc_2_1", "icc_3_1", "site_share"}


# -------------------------------------------------------------------- site-held-out probe
def _sites_cohort(n_per_site=40, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    site = np.repeat(np.array(["s0", "s1", "s2", "s3"]), n_per_site)
    age = rng.uniform(20, 80, len(site))
    code = np.repeat(np.arange(4), n_per_site)
    x = rng.normal(size=(len(site), 6))
    # age is encoded in feature 0 with a per-site offset; s3's offset lies outside the others' range
    x[:, 0] += age / 4 + shift * np.array([0.0, 1.0, -1.0, 6.0])[code]
    return x, age, site


#: The probe's settings in these tests (the pipeline passes params.yaml's evaluate grids).
SITE_PROBE = {"alpha_grid": (1e-2, 1e-1, 1.0, 1e1, 1e2), "c_grid": (1e-2, 1e-1, 1.0, 1e1, 1e2), "inner_splits": 3, "seed": 0}


def test_site_held_out_matches_gridsearch_reference():
    x, age, site = _sites_cohort(seed=1)
    folds = site_held_out.site_held_out_probe(x, age, site, [["s0"], ["s2", "s3"]], **SITE_PROBE)
    assert [f["held_out"] for f in folds] == [["s0"], ["s2", "s3"]]
    for fold in folds:
        test = np.isin(site, fold["held_out"])
        assert fold["n_test"] == test.sum() and fold["n_train"] == (~test).sum()
        search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()),
                              {"ridge__alpha": [1e-2, 1e-1, 1.0, 1e1, 1e2]},
                              cv=KFold(3, shuffle=True, random_state=0), scoring="neg_mean_absolute_error")
        search.fit(x[~test], age[~test])
        assert fold["alpha"] == search.best_params_["ridge__alpha"]
        assert fold["mae"] == pytest.approx(np.abs(search.predict(x[test]) - age[test]).mean(), rel=1e-8)


def test_site_held_out_exposes_site_dependent_features():
    groups = [["s3"]]
    clean = site_held_out.site_held_out_probe(*_sites_cohort(shift=0.0, seed=2), groups, **SITE_PROBE)[0]
    shifted = site_held_out.site_held_out_probe(*_sites_cohort(shift=1.0, seed=2), groups, **SITE_PROBE)[0]
    assert clean["mae"] < 5 and clean["pearson_r"] > 0.9
    assert shifted["mae"] > 3 * clean["mae"]  # s3's offset was never seen in training


def test_site_held_out_classification_and_errors():
    x, age, site = _sites_cohort(seed=3)
    label = (age > 50).astype(int)
    folds = site_held_out.site_held_out_probe(x, label, site, [["s1"], ["s2"]], task="classification",
                                              **SITE_PROBE)
    assert all(f["balanced_accuracy"] > 0.8 and f["roc_auc"] > 0.9 for f in folds)
    with pytest.raises(ValueError, match="unknown"):
        site_held_out.site_held_out_probe(x, age, site, [["nowhere"]], **SITE_PROBE)
    with pytest.raises(ValueError, match="at least one site"):
        site_held_out.site_held_out_probe(x, age, site, [["s0", "s1", "s2", "s3"]], **SITE_PROBE)
    with pytest.raises(ValueError, match="task"):
        site_held_out.site_held_out_probe(x, age, site, [["s0"]], task="ordinal", **SITE_PROBE)
