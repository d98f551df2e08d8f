"""The parallel pipeline (anatcl_core.cli.pipeline) on a toy DVC project: concurrency, order, failures.

The toy graph is a diamond, ``make`` -> ``left``, ``right`` -> ``join``. ``left`` only finishes once
``right`` has started, so a scheduler that ran them one after the other fails the test (no timing
is measured). The stages record the thread count they were given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from anatcl_core.cli import pipeline, schedule
from anatcl_core.cores import THREADS_ENV

WAIT_FOR_RIGHT = """
import os, sys, time
t = time.time()
while not os.path.exists("right.started"):
    time.sleep(0.05)
    if time.time() - t > 60:
        sys.exit("right never started while left ran: stages were not run side by side")
open("left.txt", "w").write(open("make.txt").read() + "left")
"""
RIGHT = f"""
import os
open("right.started", "w").close()
open("right.txt", "w").write(os.environ["{THREADS_ENV}"] + " " + os.environ["OMP_NUM_THREADS"])
"""
SCRIPTS = {
    "make": 'open("make.txt", "w").write("m")',
    "left": WAIT_FOR_RIGHT,
    "right": RIGHT,
    "join": 'open("join.txt", "w").write(open("left.txt").read() + open("right.txt").read())',
    "fail": 'import sys; print("toy failure in this stage"); sys.exit(3)',
}


def toy_project(root: Path, fail: str | None = None) -> dict:
    for name, code in SCRIPTS.items():
        (root / f"{name}.py").write_text(code)
    script = {name: name for name in ("make", "left", "right", "join")}
    if fail:
        script[fail] = "fail"
    stages = {
        "make": {"outs": ["make.txt"]},
        "left": {"deps": ["make.txt"], "outs": ["left.txt"]},
        "right": {"deps": ["make.txt"], "outs": ["right.txt"]},
        "join": {"deps": ["left.txt", "right.txt"], "outs": ["join.txt"]},
    }
    for name, stage in stages.items():
        stage["cmd"] = f"{sys.executable} {script[name]}.py"
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(root / ".dvc_site"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, check=True)
    return env


def run_pipeline(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anatcl_core.cli.pipeline", *args], cwd=root, env=env,
                          text=True, capture_output=True, timeout=300)


def test_side_by_side_in_graph_order_and_as_dvc_leaves_it(tmp_path: Path) -> None:
    env = toy_project(tmp_path)
    threads = pipeline.usable_cores()  # the most it accepts; auto would give cores // 2
    done = run_pipeline(tmp_path, env, "--jobs", "2", "--threads-per-job", str(threads))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "join.txt").read_text() == f"mleft{threads} {threads}"  # right saw its threads (auto, BLAS pools)
    record = json.loads((tmp_path / "outputs" / "logs" / "pipeline.json").read_text())
    assert (record["jobs"], record["threads_per_job"]) == (min(2, threads), threads)
    times = {s["stage"]: s for s in record["stages"]}
    assert set(times) == {"make", "left", "right", "join"} and all(s["ran"] for s in times.values())
    assert times["make"]["end_s"] <= min(times["left"]["start_s"], times["right"]["start_s"])
    assert times["right"]["start_s"] < times["left"]["end_s"]  # side by side
    assert times["join"]["start_s"] >= max(times["left"]["end_s"], times["right"]["end_s"])
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=tmp_path, env=env, text=True,
                            capture_output=True, check=True).stdout
    assert "up to date" in status, status
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"make", "left", "right", "join"}
    # nothing left to do: an empty plan, no stage started
    again = run_pipeline(tmp_path, env)
    assert again.returncode == 0 and "0 stage(s) to run" in again.stdout, again.stdout + again.stderr


def test_an_edited_stage_reruns_with_what_follows_it_only(tmp_path: Path) -> None:
    env = toy_project(tmp_path)
    assert run_pipeline(tmp_path, env, "-j", "2").returncode == 0
    spec = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    spec["stages"]["right"]["cmd"] += " # edited"
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert pipeline_plan(tmp_path) == ["right", "join"]


def pipeline_plan(root: Path) -> list[str]:
    cwd = Path.cwd()
    os.chdir(root)
    try:
        return pipeline.plan(".").order
    finally:
        os.chdir(cwd)


def test_a_failing_stage_stops_what_depends_on_it_and_says_where(tmp_path: Path) -> None:
    env = toy_project(tmp_path, fail="right")
    (tmp_path / "right.started").touch()  # left must not wait for a stage that fails
    done = run_pipeline(tmp_path, env, "-j", "2")
    assert done.returncode == 1
    assert "FAILED     right (exit" in done.stdout and "toy failure in this stage" in done.stdout
    assert "stage(s) ['right'] failed; not run: 1 stage(s) (join)" in done.stderr
    assert not (tmp_path / "join.txt").exists()
    record = json.loads((tmp_path / "outputs" / "logs" / "pipeline.json").read_text())
    assert {s["stage"]: s["returncode"] for s in record["stages"]}["right"] != 0


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_job_counts_are_checked(tmp_path: Path, bad: str) -> None:
    done = subprocess.run([sys.executable, "-m", "anatcl_core.cli.pipeline", "--jobs", bad], cwd=tmp_path,
                          text=True, capture_output=True)
    assert done.returncode == 2 and "--jobs must be 'auto' or a positive integer" in done.stderr


def test_stage_env_sizes_every_pool() -> None:
    env = schedule.stage_env(4, base={"PATH": "/bin"})
    assert {k: env[k] for k in (THREADS_ENV, *schedule.POOL_ENVS)} == {k: "4" for k in (THREADS_ENV, *schedule.POOL_ENVS)}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["PATH"] == "/bin"
    assert schedule.DEVICES_ENV not in env  # without GPUs the environment is today's
    assert schedule.stage_env(1, "3", base={})[schedule.DEVICES_ENV] == "3"
    assert schedule.stage_env(1, hide_gpus=True, base={})[schedule.DEVICES_ENV] == ""


def test_default_jobs_follow_cores_and_memory() -> None:
    assert schedule.default_jobs(2, 2.5, total_gb=24) == 2
    assert schedule.default_jobs(64, 2.5, total_gb=10) == 4  # memory, not cores
    assert schedule.default_jobs(64, memory_per_job_gb=1e6) == 1
    assert 1 <= schedule.default_jobs(10**6, 2.5) < 10**6


def test_an_interrupted_run_stops_its_stages_and_keeps_the_record(tmp_path: Path) -> None:
    import signal
    import time

    env = toy_project(tmp_path)  # left waits for right.started: give right a long sleep first
    (tmp_path / "right.py").write_text("import os, time\nopen('right.pid', 'w').write(str(os.getpid()))\n"
                                       "time.sleep(600)\n" + RIGHT)
    proc = subprocess.Popen([sys.executable, "-m", "anatcl_core.cli.pipeline", "-j", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "right.pid").exists():
        assert time.time() < deadline and proc.poll() is None, "the right stage never started"
        time.sleep(0.1)
    stage_pid = int((tmp_path / "right.pid").read_text())
    proc.send_signal(signal.SIGTERM)  # as a CI timeout would
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted; 2 running stage(s) stopped: ['left', 'right']" in err
    with pytest.raises(ProcessLookupError):  # the stage's own command is gone, not orphaned
        os.kill(stage_pid, 0)
    record = json.loads((tmp_path / "outputs" / "logs" / "pipeline.json").read_text())
    assert {s["stage"] for s in record["stages"]} == {"make", "left", "right"}
    assert all(s["returncode"] != 0 for s in record["stages"] if s["stage"] != "make")


def test_no_pipeline_here_is_one_clear_line(tmp_path: Path) -> None:
    env = toy_project(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages:\n  broken: {cmd: [unclosed\n")
    done = run_pipeline(tmp_path, env)
    assert done.returncode == 2 and "pipeline: DVC could not read the pipeline here" in done.stderr
    assert "Traceback" not in done.stderr
