"""BrainFMBench's random-forest protocol against a hand-built scikit-learn reference on a fixture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler

from anatcl_core.evaluation import brainfmbench


#: Two of the protocol's seeds: each seed is 6 forests of 200 trees (seconds on a loaded 2-core box).
SEEDS = (0, 42)


def fixture(n: int = 60, f: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f))
    age = 40 + 10 * x[:, 0] + rng.standard_normal(n)
    sex = (x[:, 1] + 0.5 * rng.standard_normal(n) > 0.3).astype(int)  # unbalanced classes
    return x, age, sex


def reference(x, y, classify: bool, seeds=SEEDS):
    """The protocol written out: scaler fitted on the fitting part, the forest's settings spelled out."""
    tests, cvs = [], []
    for seed in seeds:
        train, test = train_test_split(np.arange(len(y)), test_size=0.1, random_state=seed,
                                       stratify=y if classify else None)

        def fit_score(fit, held):
            scaler = StandardScaler().fit(x[fit])
            if classify:
                forest = RandomForestClassifier(n_estimators=200, max_depth=6, min_samples_split=5,
                                                max_features="sqrt", class_weight="balanced", random_state=seed)
                forest.fit(scaler.transform(x[fit]), y[fit])
                xt = scaler.transform(x[held])
                return (balanced_accuracy_score(y[held], forest.predict(xt)),
                        roc_auc_score(y[held], forest.predict_proba(xt)[:, 1]))
            forest = RandomForestRegressor(n_estimators=200, max_depth=6, min_samples_split=5, random_state=seed)
            predicted = forest.fit(scaler.transform(x[fit]), y[fit]).predict(scaler.transform(x[held]))
            return mean_absolute_error(y[held], predicted), r2_score(y[held], predicted)

        splitter = (StratifiedKFold if classify else KFold)(5, shuffle=True, random_state=seed)
        cvs.append(np.mean([fit_score(train[a], train[b]) for a, b in splitter.split(x[train], y[train])], axis=0))
        tests.append(fit_score(train, test))
    return np.array(tests), np.array(cvs)


@pytest.mark.parametrize("target", ["age", "sex"])
def test_protocol_matches_a_hand_built_reference(target):
    assert brainfmbench.SEEDS == (0, 1, 2, 3, 42) and brainfmbench.FOREST == {
        "n_estimators": 200, "max_depth": 6, "min_samples_split": 5}  # BrainFMBench's protocol
    x, age, sex = fixture()
    classify = target == "sex"
    y = sex if classify else age
    ours = brainfmbench.forest_probe(x, y, "classification" if classify else "regression", seeds=SEEDS)
    tests, cvs = reference(x, y, classify)
    metrics = brainfmbench.METRICS[ours["kind"]]
    for j, metric in enumerate(metrics):
        assert ours[metric] == pytest.approx(tests[:, j].mean(), abs=1e-12)
        assert ours[f"{metric}_sd"] == pytest.approx(tests[:, j].std(), abs=1e-12)
        assert ours[f"cv_{metric}"] == pytest.approx(cvs[:, j].mean(), abs=1e-12)
        assert [s["test"][metric] for s in ours["per_seed"]] == pytest.approx(tests[:, j], abs=1e-12)
    if classify:
        assert ours["roc_auc"] > 0.8  # the fixture's sex is readable from x[:, 1]
    else:
        assert ours["r2"] > 0.5 and ours["mae"] < 8


def test_seeds_change_the_result_and_the_downstream_targets_are_all_there():
    x, age, sex = fixture()
    one = brainfmbench.forest_probe(x, age, "regression", seeds=(0,))
    other = brainfmbench.forest_probe(x, age, "regression", seeds=(1,))
    assert one["mae"] != other["mae"]
    table = pd.DataFrame({"age": age, "sex": np.where(sex == 1, "M", "F"),
                          "dx_ad": np.where(np.arange(len(age)) < 40, sex, np.nan)})
    result = brainfmbench.brainfmbench_probes(x, table, seeds=(0,))
    assert set(result) == {"age", "sex", "dx_ad"} and result["dx_ad"]["n"] == 40
    assert set(brainfmbench.headline(result)) == {
        "bfmb_age_mae", "bfmb_age_r2", "bfmb_sex_balanced_accuracy", "bfmb_sex_roc_auc",
        "bfmb_dx_ad_balanced_accuracy", "bfmb_dx_ad_roc_auc"}


@pytest.mark.slow
def test_the_protocol_runs_beside_the_linear_probes_into_dvc_metrics(tiny_pipeline, tmp_path, monkeypatch):
    """evaluate.probes [linear, brainfmbench] on the tiny cohorts: probes.json and dvclive's metrics hold it."""
    import json

    from conftest import params_section

    from anatcl_core.data import arrays
    from anatcl_core.evaluation import evaluate

    run_one_seed = brainfmbench.brainfmbench_probes
    monkeypatch.setattr(brainfmbench, "brainfmbench_probes",  # one seed: seconds, the wiring is the point
                        lambda x, table, n_jobs=1: run_one_seed(x, table, n_jobs, seeds=(0,)))
    cohorts = arrays.load_arrays(tiny_pipeline.root / "outputs/cohort/arrays")
    rng = np.random.default_rng(0)
    x = {name: rng.standard_normal((len(c.table), 5)) for name, c in cohorts.items()}
    x["downstream"][:, 0] += cohorts["downstream"].table["age"].to_numpy(float) / 10  # an age signal
    config = params_section("evaluate", **{**__import__("conftest").TINY["evaluate"],
                                           "probes": ["linear", "brainfmbench"]})
    result = evaluate.evaluate_features(config, x, cohorts, tmp_path, {"method": "toy", "seed": 0, "feature_dim": 5})
    metrics = json.loads((tmp_path / "dvclive" / "metrics.json").read_text())
    assert {"bfmb_age_mae", "bfmb_age_r2", "bfmb_sex_balanced_accuracy", "bfmb_sex_roc_auc"} <= set(metrics)
    assert "bacc_mean" in metrics  # the linear probes are still there
    assert result["brainfmbench"]["age"]["r2"] > 0  # the age signal is found by the forest
    assert json.loads((tmp_path / "probes.json").read_text())["brainfmbench"]["sex"]["per_seed"][0]["seed"] == 0
