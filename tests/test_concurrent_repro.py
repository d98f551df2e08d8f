"""``make repro`` and a plain ``dvc repro`` at the same time in one project (issue 23).

On the toy diamond of test_pipeline_parallel, whose ``right`` stage waits for a gate file: whichever
starts second while the other runs a stage is refused with a clear line (DVC's per-output locks:
the running stage's files are "busy"), and once the first finishes the project is consistent:
``dvc.lock`` parses and records the outputs' hashes, the cache holds those bytes, ``dvc status`` is
clean. (Two pipelines: tests/test_bad_inputs_pipeline.py, refused by the pipeline's own lock.)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_pipeline_parallel import RIGHT, toy_project

GATED_RIGHT = ("import os, time\nopen('right.running', 'w').close()\n"
               "while not os.path.exists('gate'):\n    time.sleep(0.05)\n" + RIGHT)
PIPELINE = [sys.executable, "-m", "anatcl_core.cli.pipeline", "-j", "2"]
DVC_REPRO = [sys.executable, "-m", "dvc", "repro"]


def _project(root: Path) -> dict:
    env = toy_project(root)
    env.update(ANATCL_NUM_THREADS="1", OMP_NUM_THREADS="1")  # what the pipeline sets for its stages
    (root / "right.py").write_text(GATED_RIGHT)
    (root / "right.started").touch()  # left need not wait for right: dvc repro runs one stage at a time
    return env


def _consistent(root: Path, env: dict) -> None:
    """dvc.lock parses, names every output with its bytes' md5, the cache holds them, status is clean."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"make", "left", "right", "join"}
    for stage in lock.values():
        for out in stage["outs"]:
            data = (root / out["path"]).read_bytes()
            md5 = hashlib.md5(data).hexdigest()
            assert out["md5"] == md5 and out["size"] == len(data), out
            assert (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == data
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=env, text=True,
                            capture_output=True, check=True).stdout
    assert "up to date" in status, status
    assert (root / "join.txt").read_text() == "mleft1 1"


@pytest.mark.parametrize("first, second", [(PIPELINE, DVC_REPRO), (DVC_REPRO, PIPELINE)], ids=["pipeline-first", "dvc-first"])
def test_the_second_of_two_runs_is_refused_and_nothing_is_corrupted(first, second, tmp_path):
    env = _project(tmp_path)
    running = subprocess.Popen(first, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "right.running").exists():
        assert running.poll() is None and time.monotonic() < deadline, running.communicate()
        time.sleep(0.1)
    refused = subprocess.run(second, cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120)
    (tmp_path / "gate").touch()
    out, err = running.communicate(timeout=120)
    assert running.returncode == 0, out + err
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    assert "right.txt' is busy, it is being blocked by" in refused.stderr or "make.txt' is busy" in refused.stderr
    if second is PIPELINE:  # ours: one line, naming the project and the process holding it
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"pipeline: DVC could not read the pipeline here ({tmp_path})")
        assert "dvc/__main__.py repro" in lines[0], lines
    _consistent(tmp_path, env)
