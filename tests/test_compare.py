"""``anatcl compare``: two runs' results entry by entry, provenance left out."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import torch

from anatcl_core.cli import compare
from anatcl_core.model.checkpoint import save_checkpoint


def make_run(root, weight: float = 1.0, seconds: float = 12.5, fingerprint: str = "abc"):
    """A small outputs/ tree: a checkpoint, a probes file, a curve, a table, a timing curve, a log."""
    run = root / "outputs" / "pretrain" / "m-s0"
    (run / "dvclive" / "plots" / "metrics").mkdir(parents=True)
    save_checkpoint({"model": {"w": torch.full((3, 2), weight), "n": torch.tensor(4)}, "epoch": 2,
                     "history": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
                     "config": {"method": "m"}, "fingerprint": fingerprint}, run / "checkpoint.pt")
    (run / "dvclive" / "metrics.json").write_text(json.dumps({"final_loss": 0.25, "train_seconds": seconds}))
    (run / "dvclive" / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n0\t0.5\n1\t0.25\n")
    (run / "dvclive" / "plots" / "metrics" / "seconds.tsv").write_text(f"step\tseconds\n0\t{seconds}\n")
    (root / "outputs" / "logs").mkdir()
    (root / "outputs" / "logs" / "pretrain@m-0.log").write_text(f"took {seconds} s\n")
    np.save(root / "outputs" / "features.npy", np.arange(6, dtype=np.float32))
    return root


def test_runs_differing_only_in_provenance_compare_equal(tmp_path, capsys):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", seconds=99.0, fingerprint="other code")
    found = compare.fingerprint(a)
    assert "pretrain/m-s0/checkpoint.pt:model.w" in found and "pretrain/m-s0/checkpoint.pt:epoch" in found
    assert not [k for k in found if "seconds" in k or "logs/" in k or "fingerprint" in k]
    assert compare.main([str(a), str(b / "outputs")]) == 0  # a project folder or its outputs/
    assert f"{len(found)} entries compared: 0 differ" in capsys.readouterr().out


def test_one_changed_weight_is_named_and_fails(tmp_path, capsys):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", weight=1.0 + 2**-20)
    assert compare.main([str(a), str(b)]) == 1
    assert "differs: pretrain/m-s0/checkpoint.pt:model.w" in capsys.readouterr().out
    shutil.rmtree(b / "outputs" / "pretrain")
    assert compare.compare(compare.fingerprint(a), compare.fingerprint(b))["only_a"][0].startswith("pretrain/m-s0/")


def test_nothing_to_compare_is_a_failure(tmp_path, capsys):
    other = tmp_path / "other" / "outputs" / "evaluate" / "m-s0"  # a run with no entry in common
    other.mkdir(parents=True)
    (other / "probes.json").write_text("{}")
    assert compare.main([str(make_run(tmp_path / "a")), str(tmp_path / "other")]) == 1
    assert "0 entries compared" in capsys.readouterr().out


def test_a_folder_that_holds_no_run_is_refused_before_either_is_read(tmp_path, capsys):
    (tmp_path / "empty" / "outputs" / "pretrain").mkdir(parents=True)  # a stage folder, nothing the stage writes
    assert compare.main([str(make_run(tmp_path / "a")), str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"anatcl compare: {tmp_path / 'empty'}: not a run of the pipeline")


def test_large_files_are_hashed_in_chunks(tmp_path):
    """A result file is never read whole (a 3 GB file took 3.3 GB): peak Python memory stays far below its size."""
    import tracemalloc

    run = make_run(tmp_path / "a")
    big = run / "outputs" / "big.npy"
    with big.open("wb") as handle:
        for _ in range(32):
            handle.write(np.random.default_rng(0).bytes(2**20))
    tracemalloc.start()
    try:
        found = compare.fingerprint(run)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found["big.npy"] == hashlib.sha1(big.read_bytes()).hexdigest()
    assert peak < 4 * 2**20, peak


def test_json_above_the_entry_limit_is_compared_by_its_bytes(tmp_path, monkeypatch):
    run = make_run(tmp_path / "a")
    metrics = run / "outputs" / "pretrain" / "m-s0" / "dvclive" / "metrics.json"
    monkeypatch.setattr(compare, "JSON_ENTRY_LIMIT", metrics.stat().st_size - 1)
    found = compare.fingerprint(run)
    assert found["pretrain/m-s0/dvclive/metrics.json"] == hashlib.sha1(metrics.read_bytes()).hexdigest()
    assert not [k for k in found if k.startswith("pretrain/m-s0/dvclive/metrics.json.")]
