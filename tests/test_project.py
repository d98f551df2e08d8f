"""Path resolution of the notebooks (anatcl_core.project): the project root from any kernel folder,
identical strings in the pipeline, pipeline outputs redirected to outputs/scratch outside it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from anatcl_core import project


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
