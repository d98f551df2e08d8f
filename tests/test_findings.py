"""The findings table (anatcl_core.report.findings, finding_measures): every verdict branch from
synthetic result tables, the orderings' worst-case combination, the measures' pairing, and the
lifespan probes that feed them (anatcl_core.evaluation.lifespan)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anatcl_core.report import findings as fd
from anatcl_core.report.finding_measures import LIFESPAN, RunMeasures, median_icc_replicates


@pytest.mark.parametrize("low, high, target, expected", [
    (0.01, 0.05, None, fd.REPRODUCED), (-0.05, -0.01, None, fd.NOT_REPRODUCED), (-0.01, 0.02, None, fd.INCONCLUSIVE),
    (0.0, 0.02, None, fd.INCONCLUSIVE), (float("nan"), 0.1, None, fd.INCONCLUSIVE),
    (0.86, 0.89, (0.85, 0.90), fd.REPRODUCED), (0.91, 0.95, (0.85, 0.90), fd.NOT_REPRODUCED),
    (0.70, 0.80, (0.85, 0.90), fd.NOT_REPRODUCED), (0.80, 0.87, (0.85, 0.90), fd.INCONCLUSIVE),
    (0.80, 0.95, (0.85, 0.90), fd.INCONCLUSIVE),
])
def test_verdict_rule(low, high, target, expected):
    assert fd.verdict(low, high, target) == expected


def fake_measure(values: dict[tuple[str, str], tuple[float, float]], n: int = 400):
    """A measure whose replicates are ``point + sd * z`` with the same ``z`` for every row (paired)."""
    z = np.random.default_rng(0).standard_normal(n)
    return lambda measure, row: None if (measure, row) not in values else (
        values[(measure, row)][0], values[(measure, row)][0] + values[(measure, row)][1] * z)


FINDINGS = (
    fd.Finding("chain", "a ≥ b ≥ c", "src", "loso_mean", (("a",), ("b",), ("c",))),
    fd.Finding("both", "a ≥ b and c", "src", "loso_mean", (("a",), ("b", "c"))),
    fd.Finding("mae", "a ≥ b on MAE", "src", "age_mae", (("a",), ("b",))),
    fd.Finding("tie", "a ≥ c", "src", "sex_bacc", (("a",), ("c",))),
    fd.Finding("missing", "a ≥ z", "src", "loso_mean", (("a",), ("z",))),
    fd.Finding("inside", "a in range", "src", "loso:ad", (("a",),), (0.80, 0.90)),
    fd.Finding("outside", "b in range", "src", "loso:ad", (("b",),), (0.80, 0.90)),
)


def test_findings_table_reaches_every_verdict_from_synthetic_tables():
    measure = fake_measure({
        ("loso_mean", "a"): (0.80, 0.0), ("loso_mean", "b"): (0.75, 0.0), ("loso_mean", "c"): (0.70, 0.0),
        ("age_mae", "a"): (6.0, 0.0), ("age_mae", "b"): (5.0, 0.0),  # a has the larger error: reversed
        ("sex_bacc", "a"): (0.70, 0.05), ("sex_bacc", "c"): (0.70, 0.0),
        ("loso:ad", "a"): (0.85, 0.01), ("loso:ad", "b"): (0.60, 0.01)})
    table = fd.findings_table(measure, lambda r: r.upper(), FINDINGS)
    assert list(table.index) == [f.key for f in FINDINGS]
    assert table["verdict"].to_dict() == {
        "chain": fd.REPRODUCED, "both": fd.REPRODUCED, "mae": fd.NOT_REPRODUCED, "tie": fd.INCONCLUSIVE,
        "missing": fd.NOT_RUN, "inside": fd.REPRODUCED, "outside": fd.NOT_REPRODUCED}
    assert table.loc["chain", "value"] == pytest.approx(0.05)  # min(a - b, b - c)
    assert table.loc["mae", "value"] == pytest.approx(-1.0)  # oriented: worse minus better MAE
    assert "A vs B +0.050" in table.loc["chain", "detail"] and "Z" in table.loc["missing", "detail"]
    metrics = fd.findings_metrics(table)
    assert set(metrics) == {f.key for f in FINDINGS}
    assert metrics["chain"]["verdict_code"] == 1 and metrics["mae"]["verdict_code"] == -1
    assert metrics["tie"]["verdict_code"] == 0 and metrics["missing"] == {"verdict": fd.NOT_RUN}
    shown = fd.display_table(table)
    assert shown.loc["inside", "this run [95% CI]"].startswith("0.850 [") and shown.loc["missing", "this run [95% CI]"] == "–"


def test_an_ordering_fails_when_any_comparison_is_reversed():
    measure = fake_measure({("loso_mean", "a"): (0.80, 0.0), ("loso_mean", "b"): (0.70, 0.0),
                            ("loso_mean", "c"): (0.85, 0.0)})
    row = fd.evaluate_finding(FINDINGS[1], measure)  # a ≥ b holds, a ≥ c does not
    assert row["verdict"] == fd.NOT_REPRODUCED and row["value"] == pytest.approx(-0.05)


def test_every_published_finding_is_cited_and_well_formed():
    keys = [f.key for f in fd.FINDINGS]
    assert len(keys) == len(set(keys)) >= 13
    for f in fd.FINDINGS:
        assert f.source and f.measure in fd.MEASURES or f.measure[5:] in fd.FAMILIES
        assert (f.target is None) == (len(f.levels) > 1)


def _predictions(pred_a, pred_b, y, ids):
    def run(pred):
        return {"ids": ids, "loso/ad/index": np.arange(len(ids)), "loso/ad/y": y, "loso/ad/pred": pred,
                f"{LIFESPAN}/ids": ids, f"{LIFESPAN}/age": y * 10.0, f"{LIFESPAN}/age_pred": pred * 10.0,
                f"{LIFESPAN}/sex": y, f"{LIFESPAN}/sex_pred": pred}
    return {"a": [run(pred_a)], "b": [run(pred_b), run(pred_b)]}


def test_run_measures_pair_the_rows_on_the_same_resamples():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 2
    ids = np.array([f"s{i:02d}" for i in range(60)])
    pred = np.where(rng.random(60) < 0.8, y, 1 - y)
    measures = RunMeasures(_predictions(pred, pred[::-1][::-1].copy(), y, ids), {}, 200)
    (pa, ra), (pb, rb) = measures("loso_mean", "a"), measures("loso:ad", "b")
    assert pa == pb and np.array_equal(ra, rb)  # identical predictions: a zero difference in every replicate
    bacc = np.mean([(pred[y == c] == c).mean() for c in (0, 1)])
    assert pa == pytest.approx(bacc) and measures("sex_bacc", "a")[0] == pytest.approx(bacc)
    assert measures("age_mae", "a")[0] == pytest.approx(10.0 * np.mean(pred != y))
    assert measures("loso:scz", "a") is None and measures("icc", "a") is None and measures("loso_mean", "z") is None
    # another subject order in one row: aligned by id before resampling
    order = rng.permutation(60)
    shuffled = _predictions(pred[order], pred, y[order], ids[order])
    shuffled["b"] = _predictions(pred, pred, y, ids)["b"]
    moved = RunMeasures(shuffled, {}, 200)
    assert np.array_equal(moved("age_mae", "a")[1], moved("age_mae", "b")[1])


def test_median_icc_replicates():
    rng = np.random.default_rng(2)
    subject = rng.standard_normal((12, 1, 5))
    perfect = np.repeat(subject, 4, axis=1)  # (12 subjects, 4 sites, 5 dims): no site, no error
    point, reps = median_icc_replicates(perfect, 30, 0)
    assert point == pytest.approx(1.0) and np.allclose(reps, 1.0)
    noisy = perfect + rng.standard_normal(perfect.shape)
    point, reps = median_icc_replicates(noisy, 300, 0)
    assert 0 < point < 1 and reps.shape == (300,) and np.percentile(reps, 2.5) < point < np.percentile(reps, 97.5)


def test_lifespan_prefix_and_probes():
    from anatcl_core.evaluation import lifespan, probes
    from conftest import params_section

    assert lifespan.PREFIX == LIFESPAN
    rng = np.random.default_rng(3)
    n = 120
    sex = np.arange(n) % 2
    age = rng.uniform(20, 80, n)
    x = np.column_stack([sex + 0.1 * rng.standard_normal(n), age + rng.standard_normal(n), rng.standard_normal((n, 3))])
    table = pd.DataFrame({"participant_id": [f"p{i}" for i in range(n)], "age": age, "sex": sex,
                          "split": np.where(np.arange(n) < 80, "train", np.where(np.arange(n) < 100, "internal_test",
                                                                                 "external_test"))})
    config = params_section("evaluate", n_bootstrap=50)
    summary, arrays = lifespan.lifespan_probes(config, x, table, alpha=1.0)
    test = np.arange(n) >= 80
    assert summary["n"] == 40 and summary["balanced_accuracy"] == 1.0  # sex is the first feature
    assert list(arrays[f"{LIFESPAN}/ids"]) == list(table["participant_id"][test])
    expected = probes.ridge_path(x[~test], age[~test], x[test], [1.0])[0]
    np.testing.assert_allclose(arrays[f"{LIFESPAN}/age_pred"], expected)
    assert np.array_equal(arrays[f"{LIFESPAN}/sex"], sex[test])


def _lifespan_runs(errors: dict[str, np.ndarray], ids: np.ndarray, age: np.ndarray) -> dict[str, list[dict]]:
    return {row: [{f"{LIFESPAN}/ids": ids, f"{LIFESPAN}/age": age, f"{LIFESPAN}/age_pred": age + e,
                   f"{LIFESPAN}/sex": (np.arange(len(ids)) % 2), f"{LIFESPAN}/sex_pred": np.arange(len(ids)) % 2}]
            for row, e in errors.items()}


def test_a_published_finding_verdict_flips_when_the_run_does():
    # the real finding (un-CNN >= AnatCL on age) on real measures: computed from the predictions, not written
    finding = next(f for f in fd.FINDINGS if f.key == "uncnn_age")
    rng = np.random.default_rng(4)
    n = 200
    ids, age = np.array([f"s{i:03d}" for i in range(n)]), rng.uniform(20, 80, n)
    small, large = rng.normal(0, 3, n), rng.normal(0, 8, n)
    better = _lifespan_runs({"ref_uncnn": small, "anatcl_global": large, "anatcl_local": large * 1.1}, ids, age)
    worse = _lifespan_runs({"ref_uncnn": large, "anatcl_global": small, "anatcl_local": small * 1.1}, ids, age)
    row = fd.evaluate_finding(finding, RunMeasures(better, {}, 300))
    assert row["verdict"] == fd.REPRODUCED and row["value"] > 0
    flipped = fd.evaluate_finding(finding, RunMeasures(worse, {}, 300))
    assert flipped["verdict"] == fd.NOT_REPRODUCED and flipped["value"] == pytest.approx(-row["value"], rel=0.2)
    tied = _lifespan_runs({"ref_uncnn": small, "anatcl_global": small[::-1], "anatcl_local": small}, ids, age)
    assert fd.evaluate_finding(finding, RunMeasures(tied, {}, 300))["verdict"] == fd.INCONCLUSIVE


def test_power_is_read_from_the_paired_ci_half_widths():
    from anatcl_core.report import power

    def pair(lo, hi):
        return {"difference": (lo + hi) / 2, "ci": [lo, hi]}

    vs_random = {"a": {"loso_mean": pair(0.0, 0.02), "loso/ad": pair(-0.1, 0.1), "le_n25": pair(0.0, 0.06)},
                 "b": {"loso_mean": pair(0.1, 0.14), "le_n50": pair(0.0, 0.04)}}
    vs_uncnn = {"a": {"loso_mean": pair(-0.5, -0.44), "loso/asd": pair(0.0, 0.3)},
                "c": {"loso_mean": pair(float("nan"), float("nan"))}}  # no CI: left out
    table = power.resolution_table(vs_random, vs_uncnn)
    assert list(table.index) == ["loso_mean", "loso (one task)", "le_n25", "le_n50"]
    assert table.loc["loso_mean"].tolist() == pytest.approx([3, 0.02, 0.01, 0.03])
    assert table.loc["loso (one task)"].tolist() == pytest.approx([2, 0.125, 0.1, 0.15])
    said = power.resolution_sentence(table)
    assert "about 0.020 across unseen sites" in said and "0.125 for a single task" in said and "25 labels" in said
    assert power.power_metrics(table) == pytest.approx(
        {"loso_mean_resolvable": 0.02, "loso_one_task_resolvable": 0.125, "le_n25_resolvable": 0.03,
         "le_n50_resolvable": 0.02})
    assert power.resolution_sentence(power.resolution_table({})) is None
