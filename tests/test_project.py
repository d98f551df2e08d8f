"""Path resolution of the notebooks (anatcl_core.project): the project root from any kernel folder,
identical strings in the pipeline, pipeline outputs redirected to outputs/scratch outside it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anatcl_core import project

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path: Path, monkeypatch) -> Path:
    """A project root with the markers, a notebooks/ folder and a nested folder below it."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    monkeypatch.delenv(project.WRITE_OUTPUTS_ENV, raising=False)
    monkeypatch.delenv(project.DVC_STAGE_ENV, raising=False)
    return tmp_path


def test_root_is_found_from_any_folder_below_it(tree, monkeypatch):
    for start in (tree, tree / "notebooks", tree / "notebooks" / "deep"):
        monkeypatch.chdir(start)
        assert project.find_root() == tree.resolve()
    (tree / "notebooks" / "deep" / "dvc.yaml").write_text("")  # one marker is not a root
    assert project.find_root(tree / "notebooks" / "deep") == tree.resolve()


def test_no_root_names_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dvc\.yaml and params\.yaml"):
        project.find_root(tmp_path)


def test_inputs_are_the_same_files_from_notebooks(tree, monkeypatch):
    monkeypatch.chdir(tree / "notebooks")
    params, data = project.inputs("params.yaml", "data")
    assert (params, data) == (os.path.join("..", "params.yaml"), os.path.join("..", "data"))
    assert Path(params).resolve() == (tree / "params.yaml").resolve()
    elsewhere = tree.parent / "cohort_elsewhere"
    assert Path(project.resolve(elsewhere)).resolve() == elsewhere.resolve()  # absolute paths kept


def test_in_the_pipeline_paths_are_the_strings_given(tree, monkeypatch):
    monkeypatch.chdir(tree)
    monkeypatch.setenv(project.DVC_STAGE_ENV, "report")  # as DVC sets it for a stage
    assert project.inputs("params.yaml", "outputs/pretrain/m-s0/checkpoint.pt") == (
        "params.yaml", os.path.join("outputs", "pretrain", "m-s0", "checkpoint.pt"))
    assert project.output("outputs/report") == os.path.join("outputs", "report")


def test_interactive_runs_never_write_pipeline_outputs(tree, monkeypatch, caplog):
    monkeypatch.chdir(tree / "notebooks")
    scratch = os.path.join("..", "outputs", "scratch")
    assert project.output("outputs/scratch/report") == os.path.join(scratch, "report")
    with caplog.at_level(logging.WARNING, logger="anatcl_core.project"):
        assert project.output("outputs/evaluate/m-s0") == os.path.join(scratch, "evaluate", "m-s0")
    assert "pipeline output" in caplog.text and project.WRITE_OUTPUTS_ENV in caplog.text
    assert project.output("elsewhere/run") == os.path.join("..", "elsewhere", "run")  # not DVC's
    monkeypatch.setenv(project.WRITE_OUTPUTS_ENV, "1")  # asked for
    assert project.output("outputs/evaluate/m-s0") == os.path.join("..", "outputs", "evaluate", "m-s0")


def test_a_dvc_stage_writes_its_outputs(tree, monkeypatch):
    """DVC sets DVC_STAGE for each stage command; the runner's kernel inherits it."""
    monkeypatch.chdir(tree)
    monkeypatch.setenv(project.DVC_STAGE_ENV, "evaluate@m-0")
    assert project.output("outputs/evaluate/m-s0") == os.path.join("outputs", "evaluate", "m-s0")
    monkeypatch.setenv(project.DVC_STAGE_ENV, "")
    assert project.output("outputs/evaluate/m-s0") == os.path.join("outputs", "scratch", "evaluate", "m-s0")


def test_the_site_cache_is_the_roots_from_any_folder(tree, monkeypatch):
    monkeypatch.delenv(project.SITE_CACHE_ENV, raising=False)
    monkeypatch.chdir(tree / "notebooks")
    assert project.use_site_cache() is None  # no .dvc/: DVC keeps its default, nothing is set
    assert project.SITE_CACHE_ENV not in os.environ
    (tree / ".dvc").mkdir()
    expected = str(tree.resolve() / ".dvc" / "site_cache")
    assert project.use_site_cache() == expected == os.environ[project.SITE_CACHE_ENV]
    monkeypatch.setenv(project.SITE_CACHE_ENV, "/elsewhere")  # the Makefile's (or a user's) wins
    assert project.use_site_cache() == "/elsewhere"


def _committed(clone: Path, message: str):
    """Make ``clone`` a git repository with everything in it committed; return a ``git(*args) -> stdout`` there."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=clone,
                              check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", message)
    return git


#: What a notebook run from notebooks/ does with DVC: resolve its paths, then log through dvclive
#: (pretrain and evaluate, via anatcl_core.live), which opens the DVC project of the working directory.
NOTEBOOK_CODE = """
from dvc.repo import Repo
from anatcl_core import live, project
params_file, = project.inputs("params.yaml")
live.write_metrics(project.output("outputs/scratch/check"), {"a": 1.0})
with Repo("..") as repo:
    print(repo.root_dir)
print(Repo.find_root())
"""


def test_a_kernel_in_notebooks_makes_no_nested_dvc_project(tmp_path):
    """Issue 23: a kernel started in notebooks/ (plain jupyter, no Makefile environment) left
    notebooks/.dvc/ behind (.dvc/config's relative site_cache_dir), which `dvc root` then took for
    the project. Now the work tree stays clean and the project is the clone's root."""
    clone = tmp_path / "clone"
    for name in (".dvc/config", ".dvc/.gitignore", ".gitignore", "dvc.yaml", "params.yaml", "notebooks/pretrain.py"):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, clone / name)  # the work tree's files, committed or not

    git = _committed(clone, "scratch clone")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}  # as a plain jupyter lab
    env.update(PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE")
    run = subprocess.run([sys.executable, "-c", NOTEBOOK_CODE], cwd=clone / "notebooks", env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(clone.resolve())] * 2
    assert not (clone / "notebooks" / ".dvc").exists()
    assert git("status", "--porcelain") == ""
    assert (clone / ".dvc" / "site_cache").is_dir()  # the project's own, git-ignored
    assert (clone / "outputs" / "scratch" / "check" / "dvclive" / "metrics.json").is_file()


#: The exploration notebook run as a plain Jupyter kernel runs it: papermill with the ``python3`` kernel, started
#: in notebooks/, none of make's or DVC's variables set, the executed copy written outside the project.
RUN_NOTEBOOK = """
import sys, jupytext, papermill
notebook = jupytext.read("explore.py")
papermill.execute_notebook(notebook, sys.argv[1], kernel_name="python3", language="python", progress_bar=False)
"""


def test_the_exploration_notebook_run_from_notebooks_leaves_the_work_tree_clean(tiny_pipeline, tmp_path):
    """Issue 23: a whole notebook (explore.py, the one users open in JupyterLab), run from notebooks/
    without make's environment on a finished run, leaves nothing that `git status` shows and no nested .dvc."""
    clone = tmp_path / "clone"
    shutil.copytree(tiny_pipeline.root, clone, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".dvc_site"))
    shutil.copyfile(REPO / ".gitignore", clone / ".gitignore")

    git = _committed(clone, "a finished run")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DVC_", "ANATCL_", "MAKE", "MFLAGS")) and k != project.SITE_CACHE_ENV}
    env.update(PYTHONPATH=str(REPO), OMP_WAIT_POLICY="PASSIVE", MPLBACKEND="Agg")
    run = subprocess.run([sys.executable, "-c", RUN_NOTEBOOK, str(tmp_path / "explore.ipynb")], cwd=clone / "notebooks",
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "explore.ipynb").stat().st_size > 10_000  # executed, with its tables and figures
    assert not (clone / "notebooks" / ".dvc").exists()
    assert git("status", "--porcelain", "--untracked-files=all") == ""
