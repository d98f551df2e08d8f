"""anatcl_core.report.explore (tidy tables of the stage outputs) and the seaborn figures it feeds.

Hand-written probe results with known means: the tidy table holds every scalar and nothing else,
the headline table is the report's ``metrics.json`` (same numbers, computed independently), and
features come back beside their cohort's covariates, refusing stale or missing ones.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from anatcl_core.data import stacking
from anatcl_core.report import build as report, explore, plots
from anatcl_core.report.results import Results
from conftest import params_section, write_manifest, write_openbhb


def _probes(bacc: dict[str, float], mae_external: float) -> dict:
    return {
        "method": "m", "seed": 0, "feature_dim": 8,
        "diagnosis": {t: {"balanced_accuracy": b, "roc_auc": b + 0.05, "balanced_accuracy_ci": [b - 0.1, b + 0.1]}
                      for t, b in bacc.items()},
        "scores": {"mmse": {"mae": 2.0, "pearson_r": 0.4, "r2": 0.1}},
        "brain_age": {"mae_internal": 5.0, "mae_external": mae_external, "site_bacc_internal": 0.3,
                      "challenge_score": mae_external * 0.3 ** 0.3},
        "reliability": {"available": True, "median_icc_2_1": 0.6, "icc_2_1": [0.5, 0.7]},
        "site_held_out": {"folds": [{"mae": 7.0}], "mae": 7.0, "pearson_r": 0.5},
    }


@pytest.fixture
def results() -> Results:
    probes = {("a", 0): _probes({"ad": 0.6, "scz": 0.8}, 8.0), ("a", 1): _probes({"ad": 0.7, "scz": 0.9}, 10.0),
              ("b", 0): _probes({"ad": 0.5, "scz": 0.5}, 12.0)}
    curves = pd.DataFrame({"method": ["a"] * 4 + ["b"] * 2, "seed": [0, 0, 1, 1, 0, 0],
                           "epoch": [1, 2, 1, 2, 1, 2], "loss": [3.0, 2.0, 3.2, 2.2, 1.0, 0.9]})
    return Results(probes, curves)


def test_metrics_table_holds_every_scalar_and_nothing_else(results):
    metrics = explore.metrics_table(results)
    assert list(metrics.columns) == explore.METRIC_COLUMNS
    per_run = 2 * 2 + 3 + 4 + 1 + 2  # dx (bacc, auc) x 2 tasks, score, brain age, reliability, sites
    assert len(metrics) == 3 * per_run
    assert not metrics["metric"].isin(["available", "icc_2_1", "balanced_accuracy_ci", "folds", "seed"]).any()
    row = metrics.query("method == 'a' and seed == 1 and task == 'scz' and metric == 'roc_auc'")
    assert row["value"].item() == pytest.approx(0.95)


def test_headline_table_is_the_reports_metrics(results, tmp_path):
    table = explore.headline_table(explore.metrics_table(results), {"a": "Method A"})
    bacc = "diagnosis BAcc (mean over tasks)"
    assert list(table.index) == ["Method A", "b"]
    assert table.loc["Method A", (bacc, "mean")] == pytest.approx(0.75)  # seeds 0.7 and 0.8
    assert table.loc["Method A", (bacc, "std")] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert table.loc["b", (bacc, "std")] == 0.0  # one seed
    report.make_tables(results, params_section("report"), tmp_path)
    headline = json.loads((tmp_path / "metrics.json").read_text())
    table = explore.headline_table(explore.metrics_table(results))
    for method, entry in headline.items():
        assert table.loc[method, (bacc, "mean")] == pytest.approx(entry["bacc_average"])
        assert table.loc[method, (bacc, "std")] == pytest.approx(entry["bacc_average_std"])
        assert table.loc[method, ("brain-age MAE external", "mean")] == pytest.approx(entry["brain_age_mae_external"])
        assert table.loc[method, ("site BAcc", "mean")] == pytest.approx(entry["site_bacc"])
        assert table.loc[method, ("challenge score", "mean")] == pytest.approx(entry["challenge_score"])


def test_runs_table_reads_each_training_summary(results, tmp_path):
    (tmp_path / "a-s0" / "dvclive").mkdir(parents=True)
    (tmp_path / "a-s0" / "dvclive" / "metrics.json").write_text(json.dumps({"epochs": 3, "final_loss": 1.5}))
    runs = explore.runs_table(results, tmp_path)
    assert runs[["method", "seed"]].values.tolist() == [["a", 0], ["a", 1], ["b", 0]]
    assert runs.loc[0, "epochs"] == 3 and np.isnan(runs.loc[1, "epochs"])
    assert runs.loc[0, "checkpoint"] == str(tmp_path / "a-s0" / "checkpoint.pt")


def test_features_come_with_their_covariates(tmp_path):
    data = tmp_path / "arrays"  # the cohort stage's arrays of a tiny data/
    write_openbhb(tmp_path / "data" / "openbhb")
    manifest = pd.read_csv(write_manifest(tmp_path / "data" / "downstream"), sep="\t", dtype={"participant_id": str})
    stacking.write_arrays(tmp_path / "data", data, progress=False)
    run = tmp_path / "evaluate" / "m-s0"
    run.mkdir(parents=True)
    x = np.random.default_rng(0).normal(size=(len(manifest), 4)).astype(np.float32)
    ids = manifest["participant_id"].tolist()
    np.savez(run / "features.npz", downstream_features=x, downstream_ids=np.asarray(ids, dtype=str))
    frame = explore.features(tmp_path / "evaluate", "m", 0, data)
    assert frame.index.tolist() == ids
    np.testing.assert_array_equal(frame[["f0", "f1", "f2", "f3"]].to_numpy(), x)
    np.testing.assert_allclose(frame["age"].to_numpy(float), manifest["age"].to_numpy(float))
    with pytest.raises(KeyError, match="no cohort 'travelling'"):
        explore.features(tmp_path / "evaluate", "m", 0, data, cohort="travelling")
    with pytest.raises(FileNotFoundError, match="m-s1"):
        explore.features(tmp_path / "evaluate", "m", 1, data)
    np.savez(run / "features.npz", downstream_features=x, downstream_ids=np.asarray(ids[::-1], dtype=str))
    with pytest.raises(ValueError, match="rerun evaluate"):
        explore.features(tmp_path / "evaluate", "m", 0, data)


def test_seed_spread_shows_every_seed_and_the_mean(results):
    long = explore.headline_long(explore.metrics_table(results))
    fig = plots.seed_spread(long, {"a": "Method A"}, dpi=40)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(dict.fromkeys(long["metric"]))
    bacc = panels[0]
    dots = np.concatenate([c.get_offsets()[:, 1] for c in bacc.collections])
    assert sorted(dots) == pytest.approx(sorted([0.7, 0.8, 0.5]))  # one dot per run
    means = [line for line in bacc.lines if len(line.get_ydata()) == 2 and line.get_marker() == "_"]
    assert means and list(means[0].get_ydata()) == pytest.approx([0.75, 0.5])
    assert [t.get_text() for t in bacc.get_xticklabels()] == ["Method A", "b"]


def test_mean_curves_average_over_seeds(results):
    fig = plots.mean_curves(results.curves, {}, dpi=40)
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2] and list(line.get_ydata()) == pytest.approx([3.1, 2.1])
