"""num_threads: auto (anatcl_core.cores): what it resolves to, and that results barely depend on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import params_section

from anatcl_core import cores
from anatcl_core.config import ConfigError
from anatcl_core.evaluation.features import extract_features
from anatcl_core.model.network import build_model


def test_an_integer_is_used_as_given(monkeypatch) -> None:
    monkeypatch.setenv(cores.THREADS_ENV, "7")
    assert cores.resolve_threads(3) == 3


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
    assert cores.resolve_threads(4) == 4 and "num_threads: 4 is more than the 2 usable core(s)" in caplog.text


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1.5", "\u00b2", " 2", "9" * 5000])
def test_malformed_thread_variables_are_refused_in_one_line(monkeypatch, bad: str) -> None:
    with pytest.raises(ValueError, match=r"^\$ANATCL_NUM_THREADS = .*: expected a positive integer") as err:
        cores.check_environment({cores.THREADS_ENV: bad})
    assert "\n" not in str(err.value)
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


@pytest.mark.parametrize("value, ok", [("auto", True), (1, True), (16, True), ("2", False), (0, False),
                                       ("all", False), (2.0, False)])
def test_params_accept_auto_or_a_positive_integer(value, ok: bool) -> None:
    if ok:
        assert params_section("evaluate", num_threads=value).num_threads == value
    else:
        with pytest.raises(ConfigError, match="num_threads"):
            params_section("evaluate", num_threads=value)


def _features(threads: int) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        encoder = build_model("resnet18", 8, "batch", 16, None).encoder
        images = torch.rand(6, 1, 20, 22, 20, generator=torch.Generator().manual_seed(1))
        return extract_features(encoder, images, batch_size=3, progress=False)
    finally:
        torch.set_num_threads(before)


def test_features_agree_across_thread_counts_to_float_rounding() -> None:
    one, two, again = _features(1), _features(2), _features(1)
    np.testing.assert_array_equal(one, again)  # same threads: the same bits
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6 * np.abs(one).max())
