"""num_threads: auto (anatcl_core.cores): what it resolves to, and that results barely depend on it."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import params_section

from anatcl_core import cores
from anatcl_core.config import ConfigError
from anatcl_core.evaluation.features import extract_features
from anatcl_core.model.network import build_model


def test_an_integer_is_used_as_given_up_to_the_cores(monkeypatch) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    monkeypatch.setenv(cores.THREADS_ENV, "7")
    assert cores.resolve_threads(3) == 3
    assert cores.resolve_threads(8) == 8


def test_auto_is_the_pipelines_share_when_it_sets_one(monkeypatch) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    monkeypatch.setenv(cores.THREADS_ENV, "5")
    assert cores.resolve_threads("auto") == 5
    monkeypatch.setenv(cores.THREADS_ENV, "0")
    with pytest.raises(ValueError, match=r"\$ANATCL_NUM_THREADS = '0': expected a positive integer"):
        cores.resolve_threads("auto")


def test_auto_is_capped_at_the_usable_cores_with_a_note(monkeypatch, caplog) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    monkeypatch.setenv(cores.THREADS_ENV, "99999")
    assert cores.resolve_threads("auto") == 2
    assert "$ANATCL_NUM_THREADS = 99999 lowered to 2: the usable cores" in caplog.text
    caplog.clear()
    assert cores.resolve_threads(1024) == 2  # an integer in params.yaml too (issue 23: 2,048 OS threads, 17x slower)
    assert [r.getMessage() for r in caplog.records] == [
        "num_threads: 1024 lowered to 2: the usable cores (more threads than cores wait on each other)"]


@pytest.mark.parametrize("bad", [0, -3, 10**18, 10**5000, True, 2.0, "4"],
                         ids=["0", "-3", "19-digits", "5001-digits", "True", "2.0", "text"])
def test_a_thread_count_that_is_no_count_is_refused_not_lowered(monkeypatch, bad) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 2)
    with pytest.raises(ValueError, match=r"^num_threads = .*: expected 'auto' or a positive integer of at most 18") as err:
        cores.resolve_threads(bad)
    assert len(str(err.value)) < 150  # a 5,000-digit value is not echoed whole


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "\u00b2", " 2", "9" * 5000])
def test_malformed_thread_variables_are_refused_in_one_line(monkeypatch, bad: str) -> None:
    with pytest.raises(ValueError, match=r"^\$ANATCL_NUM_THREADS = .*: expected a positive integer") as err:
        cores.check_environment({cores.THREADS_ENV: bad})
    assert "\n" not in str(err.value) and len(str(err.value)) < 200
    cores.check_environment({})  # unset is fine
    cores.check_environment({cores.THREADS_ENV: "3"})


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity mask on this OS")
def test_auto_is_the_affinity_mask_otherwise(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cores.THREADS_ENV, raising=False)
    mask = os.sched_getaffinity(0)
    assert cores.usable_cores(tmp_path / "no-cgroup") == len(mask)
    os.sched_setaffinity(0, {min(mask)})  # as `taskset -c N` would
    try:
        assert cores.usable_cores(tmp_path / "no-cgroup") == 1
    finally:
        os.sched_setaffinity(0, mask)


@pytest.mark.parametrize("text, quota", [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000", 1),
                                         ("400000 100000", 4), ("garbage", None), ("", None)])
def test_cgroup_quota_caps_the_cores(tmp_path: Path, text: str, quota) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert cores._cgroup_quota(path) == quota
    expected = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                   quota or 10**6)
    assert cores.usable_cores(path) == expected


@pytest.mark.parametrize("value, ok", [("auto", True), (1, True), (16, True), (10**18 - 1, True), ("2", False),
                                       (0, False), ("all", False), (2.0, False), (10**18, False)])
def test_params_accept_auto_or_a_positive_integer(value, ok: bool) -> None:
    if ok:
        assert params_section("evaluate", num_threads=value).num_threads == value
    else:
        with pytest.raises(ConfigError, match="num_threads"):
            params_section("evaluate", num_threads=value)


def _features(threads: int, workers: int | None = None) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        encoder = build_model("resnet18", 8, "batch", 16, None).encoder
        images = torch.rand(7, 1, 20, 22, 20, generator=torch.Generator().manual_seed(1))
        return extract_features(encoder, images, batch_size=2, progress=False, workers=workers)
    finally:
        assert torch.get_num_threads() == threads  # the stage's setting is given back
        torch.set_num_threads(before)


def test_features_are_the_same_bytes_for_any_thread_count() -> None:
    """One intra-op thread per batch, batches side by side: the stage's thread count changes nothing."""
    one = _features(1)
    for threads, workers in ((2, None), (3, None), (1, 3), (2, 1), (4, 2)):
        np.testing.assert_array_equal(_features(threads, workers), one, err_msg=f"{threads} threads, {workers} workers")


def test_side_by_side_batches_are_each_the_one_thread_forward_of_that_batch() -> None:
    torch.manual_seed(0)
    encoder = build_model("resnet18", 8, "batch", 16, None).encoder.eval().to(memory_format=torch.channels_last_3d)
    images = torch.rand(5, 1, 20, 22, 20, generator=torch.Generator().manual_seed(2))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            expected = [encoder(images[i:i + 2].contiguous(memory_format=torch.channels_last_3d)).numpy()
                        for i in (0, 2, 4)]
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(extract_features(encoder, images, 2, False, workers=2), np.concatenate(expected))


@pytest.mark.slow
def test_an_evaluate_stage_writes_the_same_probes_with_1_and_2_threads(tiny_pipeline, tmp_path: Path) -> None:
    """The issue-24 property, checked here rather than discovered on another host: probes.json,
    features and predictions are the same bytes whatever the evaluate section's num_threads."""
    from anatcl_core.config import load_section
    from anatcl_core.evaluation import evaluate

    root = tiny_pipeline.root
    config = load_section(root / "params.yaml", "evaluate", evaluate.EvaluateConfig)
    checkpoint = root / "outputs/pretrain/anatcl_global-s0/checkpoint.pt"
    outputs = {}
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        evaluate.evaluate_checkpoint(replace(config, num_threads=threads), checkpoint,
                                     root / "outputs/cohort/arrays", out, progress=False)
        outputs[threads] = out
    assert (outputs[1] / "probes.json").read_bytes() == (outputs[2] / "probes.json").read_bytes()
    # dvclive's metrics: every result the same; the extraction's wall time and thread count are
    # provenance (anatcl compare leaves them out too) and record the layout each run had
    metrics = {t: json.loads((outputs[t] / "dvclive/metrics.json").read_text()) for t in (1, 2)}
    layouts = {t: metrics[t].pop("feature_extraction") for t in (1, 2)}
    assert metrics[1] == metrics[2] and json.dumps(metrics[1]) == json.dumps(metrics[2])
    assert (layouts[1]["threads"], layouts[2]["threads"]) == (1, min(2, cores.usable_cores()))  # capped at the cores
    assert layouts[1]["volumes"] == layouts[2]["volumes"] > 0
    for name in ("features.npz", "predictions.npz"):
        with np.load(outputs[1] / name) as one, np.load(outputs[2] / name) as two:
            assert one.files == two.files
            for key in one.files:
                np.testing.assert_array_equal(one[key], two[key], err_msg=f"{name}: {key}")
    # and the stage's own output, written by the pipeline with one thread per stage
    assert (outputs[2] / "probes.json").read_bytes() == (
        root / "outputs/evaluate/anatcl_global-s0/probes.json").read_bytes()
