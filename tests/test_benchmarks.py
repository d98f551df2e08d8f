"""benchmarks/: each script runs in --quick mode on tiny generated inputs and writes the JSON it
promises; `anatcl embed`'s features equal the eager forward's. No timing is asserted (the numbers
of a smoke run on shared cores mean nothing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CASE_KEYS = {"seconds", "median_s", "min_s", "per_s", "max_rss_mib"}
MACHINE_KEYS = {"cpu_model", "cpu_count", "load_average", "torch", "torch_threads", "device"}


def run_quick(script: str, out: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", "--threads", "1",
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)})  # this checkout's code
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"wrote {out}" in proc.stdout  # the table was printed before the JSON was written
    return json.loads(out.read_text())


def check_case(case: dict) -> None:
    assert CASE_KEYS <= set(case), sorted(CASE_KEYS - set(case))
    assert case["per_s"] > 0 and math.isfinite(case["per_s"])
    assert case["max_rss_mib"] > 50  # a process with torch imported, measured in MiB not KiB


def test_input_pipeline_quick(tmp_path):
    result = run_quick("bench_input_pipeline.py", tmp_path / "pipeline.json")
    assert result["benchmark"] == "input_pipeline" and result["quick"] is True
    assert MACHINE_KEYS <= set(result["machine"])
    cases = result["cases"]
    for case in cases:
        check_case(case)
        assert case["input_shape"][0] == case["batch_size"] * (1 if case["method"] == "anatcl_global" else 2)
    assert {(c["profile"], c["mode"]) for c in cases} == {
        ("cpu_profile", "pure"), ("cpu_profile", "memory"),
        ("full_res", "pure"), ("full_res", "memory"), ("full_res", "disk")}
    pipelines = [c for c in cases if c["mode"] != "pure"]
    assert len(result["ratios"]) == len(pipelines)
    for row in result["ratios"]:
        assert {"profile", "method", "pipeline", "ratio", "ratio_medians", "ratio_separate"} <= set(row)
        assert row["ratio"] > 0 and row["ratio_separate"] > 0


def test_embed_quick_features_identical(tmp_path):
    result = run_quick("bench_embed.py", tmp_path / "embed.json", "--bf16")
    assert result["benchmark"] == "embed" and MACHINE_KEYS <= set(result["machine"])
    assert set(result["cases"]) == {"files", "memory", "memory_channels_last", "files_bf16", "read"}
    for case in result["cases"].values():
        check_case(case)
        assert case["n_volumes"] == 6
    comparison = result["comparison"]
    assert result["features_identical"] is True
    assert comparison["memory"]["max_abs_diff"] <= result["tolerance"]
    assert comparison["memory_channels_last"]["max_abs_diff"] <= 1e-4
    # bf16 is approximate but not garbage: within a few percent of the feature scale, not exact
    assert 0 < comparison["files_bf16"]["max_abs_diff_rel_max"] < 0.1
    assert result["ratio_files_vs_memory"] > 0


def test_embed_quick_workers_give_the_serial_features(tmp_path):
    result = run_quick("bench_embed.py", tmp_path / "embed.json", "--workers", "2")
    assert "files_workers" in result["cases"] and result["features_identical"] is True
    assert result["comparison"]["files_workers"]["max_abs_diff"] == 0.0


def test_gpu_quick_reports_throughput_against_the_peak(tmp_path):
    result = run_quick("bench_gpu.py", tmp_path / "gpu.json")
    assert result["benchmark"] == "gpu" and MACHINE_KEYS <= set(result["machine"])
    cases = {c["variant"]: c for c in result["cases"]}
    assert set(cases) == {"fp32", "channels_last"}  # the CUDA-only variants are listed, not run
    assert set(result["not_tried"]) == {"bf16", "cudnn_benchmark", "fused_adam", "cuda_graph"}
    for case in cases.values():
        check_case(case)
        assert case["flops"] > 0 and case["subjects_per_s"] > 0 and case["tflops_per_s"] > 0
        assert case["peak"].startswith("fp32 of 1 core")
        assert 0 < case["share_of_peak"] < 1
    assert cases["fp32"]["flops"] == cases["channels_last"]["flops"]  # the layout changes no arithmetic
    top = cases["channels_last"]["top_ops"]
    assert top and any("conv" in row["op"] for row in top) and abs(sum(r["share"] for r in top)) <= 1.0 + 1e-9


def test_gpu_peaks_name_the_chip_and_the_arithmetic():
    sys.path.insert(0, str(BENCHMARKS))
    import bench_gpu

    assert bench_gpu.gpu_peak("NVIDIA H200", "bf16") == 989.0
    assert bench_gpu.gpu_peak("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert bench_gpu.gpu_peak("Some GPU", "bf16") is None
    assert bench_gpu.settings("fp32") == {v: False for v in bench_gpu.VARIANTS[1:]}
    assert bench_gpu.settings("fused_adam") == {"channels_last": True, "bf16": True, "cudnn_benchmark": True,
                                                "fused_adam": True, "cuda_graph": False}


@pytest.mark.parametrize("script", ["bench_input_pipeline.py", "bench_embed.py", "bench_gpu.py"])
def test_help_runs(script):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--device" in proc.stdout


def test_probes_quick(tmp_path):
    out = tmp_path / "probes.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "bench_probes.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "probes" and result["quick"] is True
    assert {"added: leave-one-site-out", "added: label efficiency", "today: diagnosis"} <= set(result["seconds"])
    assert result["added_s"] > 0 and result["ratio"] == pytest.approx(result["added_s"] / result["today_s"])


def test_logistic_quick_compares_the_lean_path_with_sklearn(tmp_path):
    result = run_quick("bench_logistic.py", tmp_path / "logistic.json")
    assert result["benchmark"] == "logistic" and [r["task"] for r in result["rows"]] == ["dx_a", "dx_b"]
    for row in result["rows"]:
        assert row["same_predictions"] == 1.0 and row["max_abs_diff"] < 1e-6, row
        assert row["sklearn_s"] > 0 and row["lean_s"] > 0 and row["ratio"] == pytest.approx(row["sklearn_s"] / row["lean_s"])


@pytest.mark.slow
def test_pipeline_benchmark_splits_a_finished_run(tiny_pipeline, tmp_path):
    from conftest import TINY

    result = run_quick("bench_pipeline.py", tmp_path / "pipeline.json", "--outputs", str(tiny_pipeline.root / "outputs"))
    kinds = {row["kind"]: row for row in result["kinds"]}
    assert set(kinds) == {"cohort", "pretrain", "evaluate", "reference", "report"}
    runs = len(TINY["pretrain"]["run"]) * len(TINY["pretrain"]["seeds"])
    assert kinds["pretrain"]["stages"] == kinds["evaluate"]["stages"] == runs
    for row in kinds.values():  # the notebook is inside its stage; DVC and the kernel's start are not
        assert 0 < row["notebook_s"] < row["wall_s"] and row["overhead_s"] > 0
    assert 0 < kinds["pretrain"]["epoch_loop_s"] < kinds["pretrain"]["notebook_s"]
    assert result["record"]["jobs"] == 2 and result["record"]["wall_s"] > 0


def test_uncnn_quick_states_the_cost_per_volume_beside_the_encoders(tmp_path):
    result = run_quick("bench_uncnn.py", tmp_path / "uncnn.json", "--widths", "8,8,8,8", "16,32,64,128")
    assert result["benchmark"] == "uncnn" and result["quick"] is True
    cases = {c["case"].split(" (")[0]: c for c in result["cases"]}
    encoder = next(c for name, c in cases.items() if name.startswith("encoder ResNet-18"))
    assert encoder["x_encoder"] == 1.0
    assert cases["un-CNN 8/8/8/8"]["features"] == 368 and cases["un-CNN 16/32/64/128"]["features"] == 3528
    for case in result["cases"]:
        assert case["cpu_s_per_volume"] > 0 and case["x_encoder"] == pytest.approx(
            case["cpu_s_per_volume"] / encoder["cpu_s_per_volume"])


def test_stage_overhead_quick_times_each_piece_both_ways(tmp_path):
    result = run_quick("bench_stage_overhead.py", tmp_path / "stage_overhead.json")
    assert [r["piece"] for r in result["rows"]] == ["lock_parse", "runner_imports", "kernel_stop"]
    for row in result["rows"]:  # the script itself refuses pieces whose two ways give different results
        assert row["before_s"] > 0 and row["after_s"] > 0 and row["ratio"] == pytest.approx(row["before_s"] / row["after_s"])
    assert result["saved_per_stage_s"] == pytest.approx(sum(r["saved_per_stage_s"] for r in result["rows"]))
