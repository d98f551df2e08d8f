"""The report's observations are computed from the result tables, both ways round; every figure's
caption names the stage and the file that made it."""

import re

import pandas as pd
import pytest

from anatcl_core.report.html import CAPTIONS, figure_html
from anatcl_core.report.sections import figure_source, observations

LABELS = {"random": "random init", "anatcl_global": "AnatCL-global"}


def _tables(random_bacc: float):
    bacc = pd.DataFrame({"ad": [0.8, random_bacc], "average": [0.81, random_bacc]}, index=["anatcl_global", "random"])
    brain_age = pd.DataFrame({"MAE internal": [4.0, 8.0], "MAE external": [12.0, 20.0]},
                             index=["anatcl_global", "random"])
    return bacc, brain_age


def test_floor_above_trained_methods_is_said_plainly():
    found = observations(*_tables(0.84), LABELS)
    assert "at or above every trained method" in found[0] and "0.840" in found[0] and "AnatCL-global" in found[0]
    assert "2.5-3.0 times" in found[1] and "12.0-20.0 years" in found[1] and "do not transfer" in found[1]


@pytest.mark.parametrize("external, verdict", [([4.2, 8.4], "cost the brain-age probes little"),
                                                ([4.4, 14.0], "cost some methods more than others")])
def test_brain_age_transfer_is_judged_from_the_ratios(external, verdict):
    bacc, brain_age = _tables(0.84)
    brain_age["MAE external"] = external
    found = observations(bacc, brain_age, LABELS)[1]
    assert verdict in found and "do not transfer" not in found


def test_trained_method_above_floor():
    found = observations(*_tables(0.70), LABELS)
    assert found[0].startswith("The best trained method on diagnosis, AnatCL-global (0.810), is +0.110 above")


def test_missing_columns_give_no_finding():
    assert observations(pd.DataFrame(), pd.DataFrame(), LABELS) == []


def _pairs(lo: float, hi: float):
    s = {"difference": (lo + hi) / 2, "ci": [lo, hi], "p_le_0": 0.0}
    return {"anatcl_global": {"loso_mean": s, "le_n25": s}, "ref_descriptors": {"loso_mean": s}}


def test_claim_observations_follow_the_paired_cis_both_ways_round():
    from anatcl_core.report.sections import claim_observations

    loso = pd.DataFrame({"average": [0.70, 0.66, 0.85]}, index=["anatcl_global", "random", "ref_descriptors"])
    tables = {"loso_bacc": loso, "representation": pd.DataFrame({"descriptor R²": [0.6, 0.8, 1.0]}, index=loso.index)}
    above = claim_observations(tables, _pairs(0.01, 0.07), LABELS)
    assert above[0].startswith("Across unseen sites (leave-one-site-out): 1 of 1 pretrained encoders beat random")
    assert "With 25 labelled subjects per task: 1 of 1" in above[1]
    assert "FreeSurfer" not in above[2] and "ref_descriptors 0.850" in above[2] and "best encoder AnatCL-global" in above[2]
    assert "0.60-0.80" in above[3] and "random init 0.80" in above[3]
    tie = claim_observations(tables, _pairs(-0.02, 0.03), LABELS)
    assert "0 of 1 pretrained encoders beat random init" in tie[0] and "0 fall below" in tie[0]


def test_claim_tables_and_metrics_from_probes_and_predictions(tmp_path):
    import numpy as np

    from anatcl_core.report import claims

    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(40)])
    y = np.arange(40) % 2

    def run(folder, accuracy):
        pred = np.where(rng.random(40) < accuracy, y, 1 - y)
        folder.mkdir()
        np.savez(folder / "predictions.npz", ids=ids, **{"loso/a/index": np.arange(40), "loso/a/y": y,
                 "loso/a/pred": pred, "le/a/index": np.arange(40), "le/a/y": y, "le/a/sizes": np.array([10, 0]),
                 "le/a/pred": np.stack([pred[None], pred[None]])})
        bacc = float(np.mean([(pred[y == c] == c).mean() for c in (0, 1)]))
        return {"loso": {"a": {"balanced_accuracy": bacc}},
                "label_efficiency": {"a": {"points": {"n10": {"balanced_accuracy": bacc, "n_train": 10},
                                                      "all": {"balanced_accuracy": bacc, "n_train": 20}}}},
                "representation": {"descriptor_r2": 0.5, "age_r2": 0.4, "site_balanced_accuracy": 0.3,
                                   "site_chance": 0.25}}, bacc

    (pa, ba), (pr, br) = run(tmp_path / "m", 0.95), run(tmp_path / "r", 0.6)
    tables = claims.claim_tables({"m": [pa], "random": [pr]})
    assert tables["loso_bacc"].loc["m", "average"] == ba and list(tables["label_efficiency"].columns) == ["n10", "all"]
    pairs = claims.paired_against(claims.load_predictions({"m": [tmp_path / "m"], "random": [tmp_path / "r"]}),
                                  "random", 200)
    assert set(pairs) == {"m"} and pairs["m"]["loso_mean"]["difference"] == pytest.approx(ba - br)
    assert pairs["m"]["loso_mean"]["ci"][0] > 0  # 0.95 vs 0.6 accuracy on 40 subjects
    metrics = claims.claim_metrics(tables, pairs)
    assert metrics["m"]["loso_bacc_mean"] == ba and "vs_random_le_n10_ci_low" in metrics["m"]
    assert "vs_random_loso_mean" not in metrics["random"]


@pytest.mark.parametrize("path, source", [
    ("outputs/cohort/figures/age_histograms.png", "cohort stage, outputs/cohort/figures/age_histograms.png"),
    ("/tmp/run/outputs/report/figures/radar.png", "report stage, outputs/report/figures/radar.png"),
    ("/tmp/out/report/figures/radar.png", "report stage, report/figures/radar.png"),  # no outputs/ above it
])
def test_figure_source_names_the_stage_and_the_file(path, source):
    assert figure_source(path) == source


def test_every_figure_caption_names_the_stage_and_file_that_made_it(tmp_path):
    made = {"radar": tmp_path / "outputs" / "report" / "figures" / "radar.png",
            "qc_age_histograms": tmp_path / "outputs" / "cohort" / "figures" / "age_histograms.png"}
    for name, path in made.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG")
        caption = re.search(r"<figcaption>(.*)</figcaption>", figure_html(name, path)).group(1)
        stage = path.parent.parent.name
        assert caption.startswith(CAPTIONS[name].split(" ")[0])
        assert caption.endswith(f"({stage} stage, outputs/{stage}/figures/{path.name})")
