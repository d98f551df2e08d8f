"""Train on the GPU box, evaluate anywhere: the DVC remote workflow of the README, on a toy pipeline.

One git + DVC clone runs the pipeline (``python -m anatcl_core.cli.pipeline``, what ``make repro``
runs), commits ``dvc.lock`` and ``dvc push``es the outputs to a local-directory remote. A second,
fresh ``git clone`` ``dvc pull``s them: ``dvc status`` is clean and the checkpoints are the first
clone's bytes; after an edit of the ``evaluate`` section of ``params.yaml`` its ``dvc repro`` reruns
the evaluate stages and the report only (no pretrain stage runs: the checkpoints come from the cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

RUNS = ["a", "b"]
SCRIPTS = {
    "pretrain": 'import os, sys, yaml; p = yaml.safe_load(open("params.yaml"))["pretrain"]; '
                'os.makedirs("out/pretrain", exist_ok=True); '
                'open(f"out/pretrain/{sys.argv[1]}.pt", "w").write(f"{sys.argv[1]} epochs={p[\'epochs\']}")',
    "evaluate": 'import os, sys, yaml; p = yaml.safe_load(open("params.yaml"))["evaluate"]; '
                'os.makedirs("out/evaluate", exist_ok=True); '
                'open(f"out/evaluate/{sys.argv[1]}.json", "w").write(open(f"out/pretrain/{sys.argv[1]}.pt").read()'
                ' + f" folds={p[\'n_splits\']}")',
    "report": 'import glob; open("out/report.txt", "w").write("\\n".join(open(p).read() for p in '
              'sorted(glob.glob("out/evaluate/*.json"))))',
}


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=300)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _project(root: Path, env: dict) -> None:
    py = sys.executable
    for name, code in SCRIPTS.items():
        (root / f"{name}.py").write_text(code)
    (root / "params.yaml").write_text(yaml.safe_dump({"pretrain": {"epochs": 3}, "evaluate": {"n_splits": 5}}))
    stages = {
        "pretrain": {"foreach": RUNS, "do": {"cmd": f"{py} pretrain.py ${{item}}", "params": ["pretrain"],
                                             "deps": ["pretrain.py"], "outs": ["out/pretrain/${item}.pt"]}},
        "evaluate": {"foreach": RUNS, "do": {"cmd": f"{py} evaluate.py ${{item}}", "params": ["evaluate"],
                                             "deps": ["evaluate.py", "out/pretrain/${item}.pt"],
                                             "outs": ["out/evaluate/${item}.json"]}},
        "report": {"cmd": f"{py} report.py", "deps": ["report.py", "out/evaluate"], "outs": ["out/report.txt"]},
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    _run(["git", "init", "-q"], root, env)
    dvc = [py, "-m", "dvc"]
    _run([*dvc, "init", "-q"], root, env)
    _run([*dvc, "config", "core.analytics", "false"], root, env)


def test_pull_then_an_evaluate_edit_reruns_no_pretrain_stage(tmp_path: Path) -> None:
    py = sys.executable
    dvc = [py, "-m", "dvc"]
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": f"{Path(py).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    gpu_box, laptop, remote = tmp_path / "gpu-box", tmp_path / "laptop", tmp_path / "remote"
    gpu_box.mkdir()
    _project(gpu_box, {**env, "DVC_SITE_CACHE_DIR": str(gpu_box / ".dvc" / "site_cache")})
    box_env = {**env, "DVC_SITE_CACHE_DIR": str(gpu_box / ".dvc" / "site_cache")}
    _run([*dvc, "remote", "add", "-d", "store", str(remote)], gpu_box, box_env)
    _run([py, "-m", "anatcl_core.cli.pipeline", "--jobs", "2", "--gpus", "0"], gpu_box, box_env)
    _run(["git", "add", "-A"], gpu_box, box_env)
    _run(["git", "commit", "-qm", "a finished run: dvc.lock"], gpu_box, box_env)
    _run([*dvc, "push"], gpu_box, box_env)

    _run(["git", "clone", "-q", str(gpu_box), str(laptop)], tmp_path, env)
    lap_env = {**env, "DVC_SITE_CACHE_DIR": str(laptop / ".dvc" / "site_cache")}
    _run([*dvc, "pull"], laptop, lap_env)
    assert "up to date" in _run([*dvc, "status"], laptop, lap_env)
    for run in RUNS:
        assert (laptop / "out" / "pretrain" / f"{run}.pt").read_bytes() == \
            (gpu_box / "out" / "pretrain" / f"{run}.pt").read_bytes()

    params = yaml.safe_load((laptop / "params.yaml").read_text())
    params["evaluate"]["n_splits"] = 10
    (laptop / "params.yaml").write_text(yaml.safe_dump(params))
    log = _run([*dvc, "repro"], laptop, lap_env)
    ran = {line.split("'")[1] for line in log.splitlines() if line.startswith("Running stage")}
    assert ran == {"evaluate@a", "evaluate@b", "report"}, log
    assert (laptop / "out" / "report.txt").read_text() == "a epochs=3 folds=10\nb epochs=3 folds=10"
    assert "up to date" in _run([*dvc, "status"], laptop, lap_env)
