"""dvclive logging (issue 10, item 5): DVC's layout, curves that survive a resume, metrics as written."""

from __future__ import annotations

import json
import math

import pytest

from anatcl_core import live


def test_curves_and_summary_in_dvclive_layout(tmp_path):
    history = [{"epoch": 1, "loss": 2.5, "lr": 1e-3, "seconds": math.nan},
               {"epoch": 2, "loss": 1.25, "lr": 9e-4, "seconds": 0.5}]  # fmt: skip
    logger = live.open_live(tmp_path)
    live.log_history(logger, history)
    live.finish(logger, {"epochs": 2, "final_loss": 1.25})
    folder = tmp_path / live.LIVE_DIR
    assert (folder / live.CURVES_DIR / "loss.tsv").read_text() == "step\tloss\n1\t2.5\n2\t1.25\n"
    assert (folder / live.CURVES_DIR / "seconds.tsv").read_text() == "step\tseconds\n2\t0.5\n"  # untimed epoch left out
    summary = json.loads((folder / live.METRICS_FILE).read_text())
    assert summary == {"loss": 1.25, "lr": 9e-4, "seconds": 0.5, "step": 2, "epochs": 2, "final_loss": 1.25}
    assert not (folder / "dvc.yaml").exists() and not (folder / "report.html").exists()
    curves = live.read_curves(tmp_path)
    assert curves["epoch"].tolist() == [1, 2] and curves["loss"].tolist() == [2.5, 1.25]
    assert math.isnan(curves["seconds"][0]) and curves["seconds"][1] == 0.5
    # a new run in the same folder starts from nothing (a run owns its curves)
    live.finish(live.open_live(tmp_path), {"epochs": 0})
    assert list((folder / live.CURVES_DIR).iterdir()) == [] and len(live.read_curves(tmp_path)) == 0


def test_write_metrics_keeps_every_key(tmp_path):
    metrics = {"mae_internal": 2.5, "bacc_ad": 0.75, "travelling_icc_2_1_median": 0.9}
    path = live.write_metrics(tmp_path, metrics)
    assert path == tmp_path / live.LIVE_DIR / live.METRICS_FILE
    assert json.loads(path.read_text()) == pytest.approx(metrics)
    assert not (tmp_path / live.LIVE_DIR / live.CURVES_DIR).exists()
