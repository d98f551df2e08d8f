"""The whole pipeline (``dvc repro``) on a tiny profile and cohort, in a temporary copy of the repo.

Checks what the README promises: the run leaves report.html, metrics and figures; ``dvc status``
is then clean and a second ``dvc repro`` runs nothing; rerunning a (method, seed) from scratch
gives byte-identical checkpoints and identical metrics; editing one method's parameters reruns
only that method's stages and what depends on them. Also unit-level: evaluating a checkpoint twice
gives identical metrics, and the report refuses missing runs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import TINY, dvc, ran


@pytest.mark.slow
def test_pipeline_end_to_end(tiny_pipeline):
    root, env, first = tiny_pipeline  # the session's `dvc repro` (tests/conftest.py)
    params = yaml.safe_load((root / "params.yaml").read_text())
    stages = {"cohort", "report"} | {f"{s}@{m}-{k}" for s in ("pretrain", "evaluate")
                                     for m in TINY["pretrain"]["run"] for k in TINY["pretrain"]["seeds"]}
    stages |= {f"reference@{r}" for r in params["reference"]["run"]}
    assert ran(first) == stages
    # run as `make repro` runs it: side by side (anatcl_core.cli.pipeline), the timing record beside the logs
    record = json.loads((root / "outputs/logs/pipeline.json").read_text())
    spans = sorted((s["start_s"], s["end_s"]) for s in record["stages"] if s["ran"])
    assert len(spans) == len(stages) and any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # some overlap
    report = (root / "outputs/report/report.html").read_text()
    assert "<script" not in report and "http://" not in report and "https://" not in report
    assert report.count("data:image/png;base64,") >= 5
    assert {p.name for p in (root / "outputs/report/figures").glob("*.png")} >= {
        "radar.png", "embedding.png", "training_curves.png", "brain_age.png"}
    # ablation and reliability sections: built from the runs that exist, the rest listed with a command
    assert "<h2>Ablations</h2>" in report and "<h2>Cross-scanner reliability</h2>" in report
    assert "Not run in this profile" in report and "dvc exp run -S" in report
    assert "ICC(2,1)" in report and "<th>descriptors</th>" in report  # the reference row
    assert {"ablations.png", "icc_distribution.png"} <= {
        p.name for p in (root / "outputs/report/figures").glob("*.png")}
    assert (root / "outputs/report/tables/reliability.tsv").exists()
    assert (root / "outputs/report/tables/ablation_supervision.tsv").exists()
    probes_json = json.loads((root / "outputs/evaluate/anatcl_global-s0/probes.json").read_text())
    assert probes_json["reliability"]["available"] and probes_json["site_held_out"]["folds"]
    # the claims: LOSO and label-efficiency probes with per-subject predictions, references, pairs
    assert probes_json["loso"] and probes_json["label_efficiency"] and "descriptor_r2" in probes_json["representation"]
    with np.load(root / "outputs/evaluate/anatcl_global-s0/predictions.npz") as saved:
        assert any(k.startswith("loso/") for k in saved.files) and any(k.startswith("le/") for k in saved.files)
    for heading in ("Unseen sites", "Few labels", "Paired differences against random init",
                    "What each encoder encodes", "Training budget", "<h2>Cohort</h2>", "Observations"):
        assert heading in report, heading
    assert "profiles/budget.yaml" in report  # budget curve not run in the tiny profile: its command
    assert {"label_efficiency.png", "paired_differences.png", "representation.png"} <= {
        p.name for p in (root / "outputs/report/figures").glob("*.png")}
    headline = json.loads((root / "outputs/report/metrics.json").read_text())
    refs = {f"ref_{r}" for r in params["reference"]["run"]}
    assert set(headline) == set(TINY["pretrain"]["run"]) | refs
    entry = headline["anatcl_global"]
    assert {"loso_bacc_mean", "le_bacc_all", "descriptor_r2", "vs_random_loso_mean",
            "vs_random_loso_mean_ci_low", "vs_random_loso_mean_ci_high"} <= set(entry)
    assert entry["vs_random_loso_mean_ci_low"] <= entry["vs_random_loso_mean"] <= entry["vs_random_loso_mean_ci_high"]
    assert "vs_random_loso_mean" not in headline["random"]
    shown = dvc(root, env, "metrics", "show")
    assert "anatcl_global" in shown and "loso_bacc_mean" in shown
    # dvclive's files are the stages' metrics and plots: DVC reads them with no glue
    metrics_json = json.loads(dvc(root, env, "metrics", "show", "--json"))
    workspace = json.dumps(metrics_json)
    for run in ("pretrain/anatcl_global-s0", "evaluate/anatcl_global-s0"):
        assert f"outputs/{run}/dvclive/metrics.json" in workspace, run
    assert '"final_loss"' in workspace and '"mae_external"' in workspace
    plots_json = dvc(root, env, "plots", "show", "--json")
    assert "outputs/pretrain/anatcl_global-s0/dvclive/plots/metrics/loss.tsv" in plots_json

    # clean afterwards; a second repro runs nothing
    assert "up to date" in dvc(root, env, "status").lower()
    assert ran(dvc(root, env, "repro")) == set()

    # one (method, seed) again from scratch: identical checkpoint bytes and metrics. Training's bytes
    # depend on its thread count (anatcl_core.cores), so it reruns with the count the run recorded;
    # evaluation's do not, so it reruns with another count than the pipeline gave it.
    metrics = (root / "outputs/evaluate/anatcl_global-s1/probes.json").read_text()
    checkpoint = (root / "outputs/pretrain/anatcl_global-s1/checkpoint.pt").read_bytes()
    threads = json.loads((root / "outputs/pretrain/anatcl_global-s1/dvclive/metrics.json").read_text())["threads"]
    (root / "outputs/pretrain/anatcl_global-s1/checkpoint.pt").unlink()  # no resume
    rerun = dvc(root, {**env, "ANATCL_NUM_THREADS": str(threads)}, "repro", "--force", "--single-item",
                "pretrain@anatcl_global-1")
    rerun += dvc(root, {**env, "ANATCL_NUM_THREADS": str(1 if threads > 1 else 2)}, "repro", "--force",
                 "--single-item", "evaluate@anatcl_global-1")
    assert ran(rerun) == {"pretrain@anatcl_global-1", "evaluate@anatcl_global-1"}
    assert (root / "outputs/pretrain/anatcl_global-s1/checkpoint.pt").read_bytes() == checkpoint
    assert (root / "outputs/evaluate/anatcl_global-s1/probes.json").read_text() == metrics

    # one method's parameter: only that method's stages and the report rerun
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrain"]["methods"]["anatcl_global"]["lambda_age"] = 0.5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran(dvc(root, env, "repro")) == {"pretrain@anatcl_global-0", "pretrain@anatcl_global-1",
                                            "evaluate@anatcl_global-0", "evaluate@anatcl_global-1",
                                            "report"}


def test_downstream_subjects_must_not_be_pretraining_subjects():
    from anatcl_core.evaluation.evaluate import check_no_overlap

    check_no_overlap(["1", "2"], ["3"])
    with pytest.raises(ValueError, match="encoder has seen"):
        check_no_overlap(["1", "2"], ["2", "3"])


def test_report_refuses_a_missing_run(tmp_path):
    from anatcl_core.report import results as report

    (tmp_path / "params.yaml").write_text("pretrain:\n  run: [a]\n  seeds: [0, 1]\n")
    assert report.expected_runs(tmp_path / "params.yaml") == [("a", 0), ("a", 1)]
    with pytest.raises(FileNotFoundError, match="a-s0"):
        report.collect(tmp_path, tmp_path, [("a", 0)])


@pytest.mark.slow
def test_pipeline_uncnn_row_findings_and_power(tiny_pipeline):
    """Issue 20: the un-CNN row in every results table and figure, paired against random init and
    each method against it; its features the same bytes when rerun on another thread count; the
    findings' verdicts (one per finding) and the power in ``dvc metrics show``."""
    import pandas as pd

    from anatcl_core.report import findings as fd

    root, env, _ = tiny_pipeline
    params = yaml.safe_load((root / "params.yaml").read_text())
    label = params["report"]["labels"]["ref_uncnn"]
    tables = root / "outputs/report/tables"
    for name in ("diagnosis_bacc", "diagnosis_auc", "scores_r", "scores_mae", "brain_age", "loso_bacc",
                 "label_efficiency", "representation"):
        index = pd.read_csv(tables / f"{name}.tsv", sep="\t", index_col=0).index
        assert "ref_uncnn" in index, name
    paired = pd.read_csv(tables / "paired_vs_random.tsv", sep="\t", index_col=0)
    assert label in paired.index and paired.loc[label].notna().all()
    vs_uncnn = pd.read_csv(tables / "paired_vs_uncnn.tsv", sep="\t", index_col=0)
    others = {params["report"]["labels"].get(m, m) for m in TINY["pretrain"]["run"]}
    others |= {params["report"]["labels"].get(f"ref_{r}", f"ref_{r}") for r in params["reference"]["run"]}
    assert set(vs_uncnn.index) == others - {label}
    cost = pd.read_csv(tables / "feature_cost.tsv", sep="\t", index_col=0)
    assert {label, params["report"]["labels"]["anatcl_global"]} <= set(cost.index)
    assert (cost["s per volume"] > 0).all()
    assert "paired_vs_uncnn.png" in {p.name for p in (root / "outputs/report/figures").glob("*.png")}
    report = (root / "outputs/report/report.html").read_text()
    for heading in ("Does pretraining beat a random network?", "Cost of the features", "Power: the smallest",
                    "Published real-data findings, reproduced or not"):
        assert heading in report, heading
    assert report.count(label) >= 8  # every table of the report (and the answer) has the row

    # findings.json: every finding once, its verdict computed; dvc metrics show lists them
    saved = json.loads((root / "outputs/report/findings.json").read_text())
    assert list(saved["findings"]) == [f.key for f in fd.FINDINGS]
    assert {v["verdict"] for v in saved["findings"].values()} <= {fd.REPRODUCED, fd.NOT_REPRODUCED,
                                                                   fd.INCONCLUSIVE, fd.NOT_RUN}
    for key in ("voxels_vs_tables_age", "voxels_vs_tables_diagnosis", "difficulty_ad_descriptors"):
        entry = saved["findings"][key]  # rows the tiny run has: computed, the value inside its CI
        assert entry["verdict"] in fd.CODES and entry["ci_low"] <= entry["value"] <= entry["ci_high"], key
    # the tiny profile trains no AnatCL-local: the un-CNN vs AnatCL findings say so, with no verdict
    assert saved["findings"]["uncnn_age"] == {"verdict": fd.NOT_RUN}
    assert "AnatCL-local" in pd.read_csv(tables / "findings.tsv", sep="\t", index_col=0).loc["uncnn_age", "detail"]
    assert saved["power"]["loso_mean_resolvable"] > 0
    shown = dvc(root, env, "metrics", "show", "--json")
    for key in saved["findings"]:
        assert key in shown, key
    assert "loso_mean_resolvable" in shown

    # the row's features: the same bytes on another thread count
    features = (root / "outputs/reference/uncnn/features.npz")
    with np.load(features) as before:
        first = {k: before[k].tobytes() for k in before.files}
    probes = (root / "outputs/reference/uncnn/probes.json").read_bytes()
    rerun = dvc(root, {**env, "ANATCL_NUM_THREADS": "2"}, "repro", "--force", "--single-item", "reference@uncnn")
    assert ran(rerun) == {"reference@uncnn"}
    with np.load(features) as after:
        assert {k: after[k].tobytes() for k in after.files} == first
    assert (root / "outputs/reference/uncnn/probes.json").read_bytes() == probes
    # only the extraction's wall time changed, which the report's cost table shows:
    # the report reruns, and the session's workspace is left up to date for the tests after this one
    assert ran(dvc(root, env, "repro")) == {"report"}
    assert "up to date" in dvc(root, env, "status").lower()
