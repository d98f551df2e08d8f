"""kill -9 at random moments of a cohort-and-pretrain run (issue 23): a rerun writes the same bytes.

A stage-like command in a subprocess stacks a tiny cohort's arrays (the cohort stage's writer) and
pretrains a tiny network on them (``persist: true`` in dvc.yaml: a rerun resumes from the last
checkpoint). SIGKILL lands at seeded random moments, several times in a row; after each, every
array file is absent or complete and the checkpoint, if any, loads. A final uninterrupted rerun
gives byte-identical arrays, checkpoint and curves (wall-clock ``seconds`` aside) to a run never
killed. One kill right after a saved epoch checks that the rerun resumes from it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_openbhb

from anatcl_core import live
from anatcl_core.model.checkpoint import safe_load

TESTS = Path(__file__).resolve().parent
EPOCHS = 5
ARRAYS = ("openbhb.npy", "openbhb_roi.npy", "openbhb.tsv", "openbhb_columns.json")
STAGE = f"""
import sys, time
sys.path.insert(0, {str(TESTS)!r})
from pathlib import Path
from anatcl_core.data import arrays, stacking
from anatcl_core.train import loop as train
from anatcl_core.train.data import load_train_data
from test_train import tiny_config

data, out, stall = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
arrays.write_cohort(out / "arrays", "openbhb", stacking.read_openbhb(data, progress=False))
run = tiny_config(epochs={EPOCHS}).resolve("anatcl_global", 0)

def saved(epoch, row):
    print(f"epoch {{epoch}}", flush=True)
    if epoch == stall:
        time.sleep(60)  # the test kills it here

train.pretrain(run, load_train_data(out / "arrays", run.data, progress=False), out / "pretrain",
               progress=False, on_epoch_end=saved)
"""


def _start(data: Path, out: Path, stall: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-c", STAGE, str(data), str(out), str(stall)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _outputs(out: Path) -> dict[str, bytes]:
    files = [out / "arrays" / n for n in ARRAYS] + [out / "pretrain" / "checkpoint.pt"]
    files += sorted((out / "pretrain" / live.LIVE_DIR / live.CURVES_DIR).glob("*.tsv"))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files if p.is_file() and p.name != "seconds.tsv"}


def _complete(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict[str, bytes], float]:
    """The input cohort, the outputs of a run never killed, and how long its work took (after imports)."""
    root = tmp_path_factory.mktemp("kill")
    data = write_openbhb(root / "openbhb", split_sizes=(10, 3, 3))
    proc = _start(data, root / "reference")
    t0 = time.monotonic()
    _complete(proc)
    outputs = _outputs(root / "reference")
    assert len(outputs) >= len(ARRAYS) + 3, sorted(outputs)  # arrays, checkpoint, curves
    return data, outputs, time.monotonic() - t0


def _check_partial(out: Path, expected: dict[str, bytes], when: str) -> int:
    """What a killed run left: each array file absent or complete; the checkpoint's epoch (0: none)."""
    for name in ARRAYS:
        path = out / "arrays" / name
        assert not path.exists() or path.read_bytes() == expected[f"arrays/{name}"], f"{name} after a kill {when}"
    checkpoint = out / "pretrain" / "checkpoint.pt"
    return safe_load(checkpoint)["epoch"] if checkpoint.exists() else 0


def test_sigkill_at_random_moments_then_a_rerun_gives_the_same_bytes(reference, tmp_path):
    data, expected, seconds = reference
    out = tmp_path / "killed"
    proc = _start(data, out, stall=2)  # first a kill right after epoch 2 was saved: the rerun resumes there
    while (line := proc.stdout.readline().strip()) != "epoch 2":
        assert line, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert _check_partial(out, expected, "after epoch 2") == 2
    for delay in np.random.default_rng(23).uniform(0.0, seconds, size=2):  # then at seeded random moments
        proc = _start(data, out)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        epoch = _check_partial(out, expected, f"at {delay:.2f} s")
        assert 2 <= epoch <= EPOCHS  # resumed, never back to the start
    _complete(_start(data, out))
    assert _outputs(out) == expected
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # the killed writers' leftovers removed
    if epoch < EPOCHS:  # the last run restored ``epoch`` epochs and timed the rest
        assert live.read_curves(out / "pretrain")["seconds"].isna().tolist() == [True] * epoch + [False] * (EPOCHS - epoch)
