"""Bad-input corpus, part 4: the parallel pipeline's options and environment, and ``anatcl compare``'s runs (issue 23).

Each case runs ``python -m anatcl_core.cli.pipeline`` as a user would, in a toy DVC project that has
already run once (so ``outputs/logs/pipeline.json`` and the stages' outputs exist): it is refused with
one line naming the option or variable and what was expected, exit status 2, no traceback, and the
project exactly as it was (no record overwritten, no output deleted).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from refusal import assert_read_refused, assert_refused, run_cli, snapshot
from test_pipeline_parallel import toy_project

from anatcl_core.cli import pipeline

#: case -> (arguments, extra environment, the one line must contain)
CASES = {
    "jobs-superscript": (["--jobs", "\u00b2"], {},
                         "--jobs must be 'auto' or a positive integer of at most 18 digits, got '\u00b2'"),
    "jobs-5000-digits": (["--jobs", "9" * 5000], {},
                         "--jobs must be 'auto' or a positive integer of at most 18 digits, got '9999"),
    "jobs-19-digits": (["--jobs", "1" + "0" * 18], {},  # no count: refused, not lowered to the cores
                       "--jobs must be 'auto' or a positive integer of at most 18 digits, got '1000"),
    "jobs-signed": (["--jobs", "+2"], {}, "--jobs must be 'auto' or a positive integer"),
    "threads-zero": (["--threads-per-job", "0"], {}, "--threads-per-job must be 'auto' or a positive integer"),
    "gpus-text": (["--gpus", "all"], {}, "--gpus must be 'auto' or a non-negative integer"),
    "memory-zero": (["--memory-per-job", "0"], {}, "--memory-per-job must be a positive number of GB, got '0'"),
    "memory-nan": (["--memory-per-job", "nan"], {}, "--memory-per-job must be a positive number of GB, got 'nan'"),
    "memory-inf": (["--memory-per-job", "inf"], {}, "--memory-per-job must be a positive number of GB"),
    "memory-text": (["--memory-per-job", "lots"], {}, "--memory-per-job must be a positive number of GB"),
    "dvc-missing": (["--dvc", "/nonexistent"], {}, "--dvc '/nonexistent': no such executable"),
    "threads-variable-text": ([], {"ANATCL_NUM_THREADS": "abc"},
                              "$ANATCL_NUM_THREADS = 'abc': expected a positive integer"),
    "threads-variable-19-digits": ([], {"ANATCL_NUM_THREADS": "1" + "0" * 18},
                                   "$ANATCL_NUM_THREADS = '1000000000000000000': expected a positive integer"),
    "threads-variable-zero": ([], {"ANATCL_NUM_THREADS": "0"},
                              "$ANATCL_NUM_THREADS = '0': expected a positive integer"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict]:
    """A toy project the pipeline has run once; its environment."""
    root = tmp_path_factory.mktemp("pipeline-corpus")
    env = toy_project(root)
    (root / "right.started").touch()  # left waits for right: let it through whichever order
    done = _pipeline(root, env, "-j", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    return root, env


def _pipeline(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anatcl_core.cli.pipeline", *args], cwd=root, env=env,
                          text=True, capture_output=True, timeout=300)


def _message_lines(done: subprocess.CompletedProcess) -> list[str]:
    """stdout and stderr lines, argparse's usage lines left out (they repeat --help)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(("usage:", " "))]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_option_or_variable_is_refused_before_anything_is_written(case, project) -> None:
    root, env = project
    args, extra, problem = CASES[case]
    before = snapshot(root)
    done = _pipeline(root, {**env, **extra}, *args)
    lines = _message_lines(done)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "invalid" not in done.stderr, done.stderr
    assert len(lines) == 1, lines
    assert problem in lines[0], lines[0]
    assert len(lines[0]) < 300, lines[0]  # a 5,000-digit value is not echoed whole
    assert snapshot(root) == before


def test_counts_above_the_cores_are_lowered_with_a_note(project) -> None:
    root, env = project
    done = _pipeline(root, env, "--jobs", "1000000000", "--threads-per-job", "1000000000", "--dry")
    cores = pipeline.usable_cores()
    assert done.returncode == 0, done.stderr
    assert f"--jobs 1000000000 lowered to {cores} (the usable cores)" in done.stderr
    assert f"--threads-per-job 1000000000 lowered to {cores} (the usable cores)" in done.stderr
    assert f"{cores} CPU stage(s) at a time, {cores} thread(s) each" in done.stdout


def test_a_second_pipeline_in_the_same_project_is_refused(project) -> None:
    root, env = project
    (root / "outputs" / "logs").mkdir(parents=True, exist_ok=True)
    with (root / pipeline.LOG_DIR / pipeline.LOCK_FILE).open("a") as held:  # as a running pipeline holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(root)
        done = _pipeline(root, {**env, "ANATCL_TEST": "second"})
        assert done.returncode == 2, done.stdout + done.stderr
        assert "another pipeline is running in this project" in done.stderr
        assert "Traceback" not in done.stderr
        assert snapshot(root) == before  # no record overwritten, no stage started


def test_the_stage_command_refuses_a_bad_thread_variable_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "cohort.ipynb"
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "anatcl_core.cli.runner", str(repo / "notebooks" / "cohort.py"),
                           str(out)], env={**os.environ, "ANATCL_NUM_THREADS": "abc"}, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "$ANATCL_NUM_THREADS = 'abc': expected a positive integer" in lines[0], lines
    assert not out.exists()


NOTEBOOK = '# %% tags=["parameters"]\nx = 1\n# %%\nopen("out.txt", "w").write(str(x))\n'


def test_dvc_repro_of_a_stage_with_a_bad_thread_variable_says_how_to_restore_its_outputs(tmp_path: Path) -> None:
    """``ANATCL_NUM_THREADS=abc dvc repro --single-item -f <stage>`` (issue 23, case 1): DVC removes the
    stage's outputs before its command runs (nothing inside the command can prevent it); the runner then
    refuses in one line before papermill starts, and ``dvc checkout <stage>`` brings the outputs back."""
    (tmp_path / "nb.py").write_text(NOTEBOOK)
    stage = {"cmd": f"{sys.executable} -m anatcl_core.cli.runner nb.py nb.ipynb", "outs": ["out.txt", "nb.ipynb"]}
    (tmp_path / "dvc.yaml").write_text(f"stages:\n  toy:\n    cmd: {stage['cmd']}\n    outs: [out.txt, nb.ipynb]\n")
    env = {**os.environ, "DVC_SITE_CACHE_DIR": str(tmp_path / ".dvc_site"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ANATCL_NUM_THREADS", None)

    def dvc(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, env={**env, **extra}, text=True,
                              capture_output=True, timeout=300)

    for args in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"], ["repro", "-q"]):
        assert dvc(*args).returncode == 0
    outputs = {name: (tmp_path / name).read_bytes() for name in stage["outs"]}
    done = dvc("repro", "--single-item", "-f", "toy", ANATCL_NUM_THREADS="abc")
    text = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in text and "papermill" not in text.lower(), text
    ours = [line for line in text.splitlines() if line.startswith("runner:")]
    assert ours == ["runner: nb.py: $ANATCL_NUM_THREADS = 'abc': expected a positive integer of at most 18 digits "
                    "(threads of one stage), or unset it (auto then means the usable cores); the outputs DVC "
                    "removed before this command come back with `dvc checkout toy`"], text
    assert not (tmp_path / "out.txt").exists()  # DVC's doing, before the command: what the line is for
    assert dvc("checkout", "toy").returncode == 0
    assert {name: (tmp_path / name).read_bytes() for name in stage["outs"]} == outputs


def _run_folder(root: Path, probes: str = '{"age": {"mae": 4.2}}') -> Path:
    """The smallest folder ``anatcl compare`` takes as a run: outputs/evaluate/<run>/probes.json."""
    (root / "outputs" / "evaluate" / "m-s0").mkdir(parents=True)
    (root / "outputs" / "evaluate" / "m-s0" / "probes.json").write_text(probes)
    return root


#: case -> (folder B as a function of tmp_path, what the one line must say)
COMPARE_CASES = {
    "not-a-run": (lambda t: _tree(t / "share"), "not a run of the pipeline"),
    "missing-folder": (lambda t: t / "nonexistent", "not a folder"),
    "json-500-deep": (lambda t: _run_folder(t / "b", "[" * 500 + "]" * 500), "nested deeper than 100 levels"),
    "json-100000-deep": (lambda t: _run_folder(t / "b", "[" * 100_000 + "]" * 100_000),
                         "nested deeper than 100 levels"),
    "json-not-json": (lambda t: _run_folder(t / "b", "{oops"), "not JSON text"),
}


def _tree(root: Path) -> Path:
    """A folder of files (as /usr/share is) that the pipeline never wrote."""
    for i in range(50):
        (root / f"pkg{i}" / "doc").mkdir(parents=True)
        (root / f"pkg{i}" / "doc" / "README.txt").write_text("text")
    return root


@pytest.mark.parametrize("case", sorted(COMPARE_CASES))
def test_compare_refuses_what_is_not_a_run_in_one_line(case, tmp_path: Path, capsys, caplog) -> None:
    a = _run_folder(tmp_path / "a")
    make, problem = COMPARE_CASES[case]
    b = make(tmp_path)
    before = snapshot(tmp_path)
    status, lines = run_cli(["compare", a, b], capsys, caplog)
    assert status == 2
    assert_refused(status, lines, str(b.name), problem)
    assert len(lines[0]) < 300
    assert snapshot(tmp_path) == before


def test_compare_prints_one_line_per_entry_whatever_the_file_names(tmp_path: Path, capsys, caplog) -> None:
    """A file name holding a newline cannot forge a "differs:" line of its own: names are printed escaped."""
    a, b = _run_folder(tmp_path / "a"), _run_folder(tmp_path / "b")
    forged = "x.tsv\n  differs: forged.tsv"
    (a / "outputs" / forged).write_text("1")
    (b / "outputs" / forged).write_text("2")
    status, lines = run_cli(["compare", a, b], capsys, caplog)
    assert status == 1
    assert lines[1:] == ["  differs: x.tsv\\n  differs: forged.tsv"], lines
    assert lines[0].startswith("2 entries compared: 1 differ")


# ------------------------------------------------ files of runs and submissions (issue 23, fuzzing)
def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _run_file_case(name: str):
    import numpy as np

    from anatcl_core import live
    from anatcl_core.evaluation import external
    from anatcl_core.export import sandbox
    from anatcl_core.report import claims

    def npz(t: Path) -> Path:
        path = t / "run" / "predictions.npz"
        path.parent.mkdir()
        np.savez(path, y_true=np.zeros(50), y_pred=np.ones(50))
        return _file(path, path.read_bytes()[:300])  # a truncated zip: numpy / zipfile errors used to escape

    return {
        "features-empty": (lambda t: _file(t / "features.csv", b""),
                           lambda t: external.read_features(t / "features.csv", ["a"], 2), ValueError, "EmptyDataError"),
        "features-ragged": (lambda t: _file(t / "features.csv", b"subject_id,f0,f1\na,1,2\nb,1,2,3,4\n"),
                            lambda t: external.read_features(t / "features.csv", ["a"], 2), ValueError, "ParserError"),
        "curve-latin1": (lambda t: _file(t / live.LIVE_DIR / live.CURVES_DIR / "loss.tsv", b"step\tloss\n1\t\xe9\n"),
                         live.read_curves, ValueError, "UnicodeDecodeError"),
        "predictions-truncated": (npz, lambda t: claims.load_predictions({"m": [t / "run"]}), ValueError, "cannot read"),
        "requirements-latin1": (lambda t: _file(t / "requirements.txt", b"numpy==1.0  # caf\xe9\n"),
                                lambda t: sandbox.read_requirements(t / "requirements.txt"), sandbox.SandboxError,
                                "not UTF-8 text"),
        "requirements-missing": (lambda t: t / "requirements.txt",
                                 lambda t: sandbox.read_requirements(t / "requirements.txt"), sandbox.SandboxError,
                                 "missing file"),
    }[name]


@pytest.mark.parametrize("case", ["features-empty", "features-ragged", "curve-latin1", "predictions-truncated",
                                  "requirements-latin1", "requirements-missing"])
def test_run_files_refused_in_one_line_naming_them(case, tmp_path: Path) -> None:
    assert_read_refused(*_run_file_case(case), tmp_path)
