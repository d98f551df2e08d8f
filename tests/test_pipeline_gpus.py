"""Stages scheduled by resource (anatcl_core.cli.schedule): four fake GPUs, CPU stages beside them.

The toy project has the real pipeline's shape: ``cohort`` -> ``pretrain@{a,b,c,d}`` ->
``evaluate@{a,b,c,d}`` -> ``report``, and ``reference@{x,y}`` beside the pretrain runs. The stages
are small Python scripts that meet at barriers made of files, so the test checks concurrency by
order, never by a clock: each pretrain stage writes its ``CUDA_VISIBLE_DEVICES`` and waits until all
four pretrain stages *and* a reference stage have started; each reference stage waits until the
four pretrain stages have started. A scheduler that ran the GPU stages one at a time, or kept the
CPU stages waiting behind them, never opens the barrier: the stage exits non-zero after its wait
and the test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from anatcl_core.cli import schedule

RUNS, REFERENCES = ["a", "b", "c", "d"], ["x", "y"]
BARRIER = """
import os, sys, time
def barrier(names, why):
    t = time.time()
    while not all(os.path.exists(f"started/{n}") for n in names):
        time.sleep(0.05)
        if time.time() - t > 120:
            sys.exit(f"{why}: stages were not run side by side")
"""
PRETRAIN = BARRIER + """
os.makedirs("started", exist_ok=True)
run = sys.argv[1]
open(f"started/pretrain-{run}", "w").write(os.environ["CUDA_VISIBLE_DEVICES"] + " " + os.environ["ANATCL_NUM_THREADS"])
barrier([f"pretrain-{r}" for r in "abcd"], "four GPUs, four pretrain stages")
t = time.time()
while not any(os.path.exists(f"started/reference-{r}") for r in "xy"):
    time.sleep(0.05)
    if time.time() - t > 120:
        sys.exit("no CPU stage ran beside the GPU stages")
os.makedirs("pretrain", exist_ok=True)
open(f"pretrain/{run}.pt", "w").write(run + open("cohort.txt").read())
"""
REFERENCE = BARRIER + """
os.makedirs("started", exist_ok=True)
name = sys.argv[1]
open(f"started/reference-{name}", "w").write(repr(os.environ["CUDA_VISIBLE_DEVICES"]))
barrier([f"pretrain-{r}" for r in "abcd"], "a CPU stage waited behind the GPU stages")
os.makedirs("reference", exist_ok=True)
open(f"reference/{name}.json", "w").write(name)
"""
SIMPLE = {
    "cohort": 'open("cohort.txt", "w").write("c")',
    "evaluate": 'import os, sys; os.makedirs("evaluate", exist_ok=True); '
                'open(f"evaluate/{sys.argv[1]}.json", "w").write(open(f"pretrain/{sys.argv[1]}.pt").read()'
                ' + repr(os.environ.get("CUDA_VISIBLE_DEVICES")))',
    "report": 'import glob; open("report.txt", "w").write("".join(open(p).read() for p in sorted(glob.glob("*/*.json"))))',
}


def gpu_project(root: Path) -> dict:
    """The toy pipeline (module docstring) as a DVC project in ``root``; the environment to run it in."""
    for name, code in {**SIMPLE, "pretrain": PRETRAIN, "reference": REFERENCE}.items():
        (root / f"{name}.py").write_text(code)
    py = sys.executable
    stages = {
        "cohort": {"cmd": f"{py} cohort.py", "outs": ["cohort.txt"]},
        "pretrain": {"foreach": RUNS, "do": {"cmd": f"{py} pretrain.py ${{item}}", "deps": ["cohort.txt"],
                                             "outs": ["pretrain/${item}.pt"]}},
        "evaluate": {"foreach": RUNS, "do": {"cmd": f"{py} evaluate.py ${{item}}", "deps": ["pretrain/${item}.pt"],
                                             "outs": ["evaluate/${item}.json"]}},
        "reference": {"foreach": REFERENCES, "do": {"cmd": f"{py} reference.py ${{item}}", "deps": ["cohort.txt"],
                                                    "outs": ["reference/${item}.json"]}},
        "report": {"cmd": f"{py} report.py", "deps": ["evaluate", "reference"], "outs": ["report.txt"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(root / ".dvc_site"),
           "PATH": f"{Path(py).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([py, "-m", "dvc", *args], cwd=root, env=env, check=True)
    return env


def test_four_gpus_train_four_runs_at_once_with_cpu_stages_beside_them(tmp_path: Path) -> None:
    env = gpu_project(tmp_path)
    done = subprocess.run([sys.executable, "-m", "anatcl_core.cli.pipeline", "--gpus", "4", "--memory-per-job", "0.1"],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 GPU(s) (0,1,2,3): one pretrain stage on each" in done.stdout
    seen = {r: (tmp_path / "started" / f"pretrain-{r}").read_text().split()[0] for r in RUNS}
    assert sorted(seen.values()) == ["0", "1", "2", "3"]  # one device each
    for name in REFERENCES:  # CPU stages see no GPU
        assert (tmp_path / "started" / f"reference-{name}").read_text() == "''"
    record = json.loads((tmp_path / "outputs" / "logs" / "pipeline.json").read_text())
    assert record["gpus"] == ["0", "1", "2", "3"]
    logged = {s["stage"]: s["device"] for s in record["stages"]}
    assert {logged[f"pretrain@{r}"] for r in RUNS} == {"0", "1", "2", "3"}
    assert all(logged[s] is None for s in logged if not s.startswith("pretrain@"))
    assert [seen[r] for r in RUNS] == [logged[f"pretrain@{r}"] for r in RUNS]  # the log says who got what
    # what a serial dvc repro leaves: every stage locked, nothing to do
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=tmp_path, env=env, text=True,
                            capture_output=True, check=True).stdout
    assert "up to date" in status, status
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert len(lock) == 1 + 4 + 4 + 2 + 1
    assert (tmp_path / "report.txt").read_text().startswith("ac''")  # evaluate@a: GPUs hidden


def test_the_layout_shares_out_cores_and_gpus() -> None:
    cpu = schedule.layout(16, (), 2.5, total_gb=128)
    assert (cpu.cpu_jobs, cpu.cpu_threads, cpu.devices) == (16, 1, ())  # today's: one job per core
    one = schedule.layout(16, ("0",), 2.5, total_gb=128)
    assert (one.gpu_threads, one.cpu_jobs, one.cpu_threads) == (8, 8, 1)  # half the cores feed the GPU
    eight = schedule.layout(16, tuple("01234567"), 2.5, total_gb=128)
    assert (eight.gpu_threads, eight.cpu_jobs) == (1, 8)
    small = schedule.layout(16, tuple("0123"), 2.5, total_gb=12.5)  # memory for 5 stages: 4 GPU + 1 CPU
    assert small.cpu_jobs == 1
    assert schedule.layout(2, tuple("0123"), 2.5, total_gb=24).cpu_jobs == 1  # always one CPU stage


def test_device_names_follow_the_callers_list() -> None:
    assert schedule.device_names(2, {}) == ("0", "1")
    assert schedule.device_names(2, {"CUDA_VISIBLE_DEVICES": "5,7,9"}) == ("5", "7")
    assert schedule.device_names(0, {"CUDA_VISIBLE_DEVICES": "5"}) == ()


def test_a_gpu_stage_waiting_for_a_device_does_not_hold_back_a_cpu_stage() -> None:
    plan = schedule.layout(4, ("0",), 2.5, total_gb=64)
    pending = ["pretrain@b", "evaluate@a"]
    waits = {"pretrain@b": set(), "evaluate@a": set()}
    assert schedule.next_stage(pending, waits, set(), plan, [], 0) == ("evaluate@a", None)
    assert schedule.next_stage(pending, waits, set(), plan, ["0"], 0) == ("pretrain@b", "0")
    assert schedule.next_stage(pending, waits, set(), plan, [], plan.cpu_jobs) is None
    cpu_only = schedule.layout(4, (), 2.5, total_gb=64)  # without GPUs a pretrain stage is a CPU stage
    assert schedule.next_stage(pending, waits, set(), cpu_only, [], 0) == ("pretrain@b", None)
