"""Notebook hygiene and their wiring in dvc.yaml.

One ``parameters`` cell holding only str/int literals; no ``def`` / ``class`` / ``lambda``; tags
survive jupytext in both directions; every library module a notebook imports (transitively) is a
``deps`` of its stage; no stage depends on an executed notebook; stage = section = notebook =
output folder; the ``-p`` parameters of each command are the notebook's parameters. The exploration
notebook (``notebooks/explore.py``, not a stage) follows the same hygiene.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest
import yaml
from IPython.core.inputtransformer2 import TransformerManager

from anatcl_core.cli.runner import parse_value
from anatcl_core.project import library_closure

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
#: Notebooks that are not stages (read outputs, write nothing).
EXPLORATION = {"explore"}
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _code(path: Path) -> list:
    return [c for c in jupytext.read(path).cells if c.cell_type == "code"]


def _parameters(path: Path) -> dict:
    (cell,) = [c for c in _code(path) if "parameters" in c.metadata.get("tags", [])]
    values = {}
    for node in ast.parse(cell.source).body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), (
            f"{path.name}: the parameters cell may only assign literals")
        assert type(node.value.value) in (str, int), f"{path.name}: parameters are str or int only"
        values[node.targets[0].id] = node.value.value
    return values


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _outs(stage: dict) -> list[str]:
    return [o if isinstance(o, str) else next(iter(o))
            for key in ("outs", "metrics", "plots") for o in stage.get(key, [])]


def test_notebooks_exist_for_every_stage():
    stages = {p.stem for p in NOTEBOOKS} - EXPLORATION
    assert stages == set(STAGES) == {"cohort", "pretrain", "evaluate", "reference", "report"}
    assert EXPLORATION <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_and_no_definitions(path):
    cells = _code(path)
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert _parameters(path)  # literals only
    for cell in cells:  # magics (%matplotlib inline) as IPython runs them
        for node in ast.walk(ast.parse(TransformerManager().transform_cell(cell.source))):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)), (
                f"{path.name}: logic belongs in anatcl_core, not in a notebook")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tags_survive_jupytext_both_ways(path):
    notebook = jupytext.read(path)
    again = jupytext.reads(jupytext.writes(notebook, fmt="ipynb"), fmt="ipynb")
    as_py = jupytext.reads(jupytext.writes(again, fmt="py:percent"), fmt="py:percent")
    for nb in (again, as_py):
        assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_library_it_imports(stage):
    definition = STAGES[stage].get("do", STAGES[stage])
    notebook = REPO / "notebooks" / f"{stage}.py"
    deps = set(_deps(definition))
    needed = {f"notebooks/{stage}.py", "anatcl_core/cli/runner.py", *library_closure(notebook)}
    assert needed <= deps, f"{stage}: missing deps {sorted(needed - deps)}"
    extra = {d for d in deps if d.startswith("anatcl_core/")} - needed
    assert not extra, f"{stage}: depends on modules it does not import {sorted(extra)}"


def test_no_stage_depends_on_an_executed_notebook():
    for name, stage in STAGES.items():
        for dep in _deps(stage):
            assert not dep.endswith(".ipynb") and not dep.startswith("outputs/notebooks"), (name, dep)
            for other in STAGES.values():  # a dep folder must not contain executed notebooks
                for out in _outs(other):
                    if out.endswith(".ipynb"):
                        assert not out.startswith(dep.rstrip("/") + "/"), (name, dep, out)


def test_stage_section_notebook_and_output_folder_share_a_name():
    for name, stage in STAGES.items():
        cmd = " ".join(stage["cmd"].split())
        assert f"notebooks/{name}.py" in cmd
        assert f"-p out_dir outputs/{name}" in cmd
        sections = {str(p).split(".")[0] for p in stage["params"]}
        assert name in sections
        for out in _outs(stage):
            assert out.startswith((f"outputs/{name}", f"outputs/notebooks/{name}")), (name, out)


def test_command_parameters_are_notebook_parameters():
    for name, stage in STAGES.items():
        given = dict(re.findall(r"-p (\S+) (\S+)", stage["cmd"]))
        declared = _parameters(REPO / "notebooks" / f"{name}.py")
        assert set(given) <= set(declared), f"{name}: unknown parameters {set(given) - set(declared)}"
        for key, value in given.items():
            if "${" not in value:
                assert type(parse_value(value)) is type(declared[key]), (name, key)


def test_runner_parameters_are_never_booleans():
    assert parse_value("0") == 0 and parse_value("-3") == -3
    assert parse_value("false") == "false" and parse_value("1.5") == "1.5"


def test_runner_command_keeps_every_output_and_skips_the_iri_grammar(tmp_path):
    """The kernel is stopped at once after the last cell (runner docstring): the last cell's output
    and a file it writes are still there. As a command, the runner loads papermill (and so
    jsonschema) without the ``rfc3987_syntax`` grammar."""
    import json
    import subprocess
    import sys

    source = tmp_path / "nb.py"
    source.write_text('# %% tags=["parameters"]\nvalue = 1\n\n# %%\nimport pathlib\n'
                      f'pathlib.Path({str(tmp_path / "written.txt")!r}).write_text(str(value * 7))\n'
                      'print("last cell", value * 7)\n')
    probe = ("import sys; from anatcl_core.cli import runner; "
             f"code = runner.main([{str(source)!r}, {str(tmp_path / 'out.ipynb')!r}, '-p', 'value', '6']); "
             "print('jsonschema' in sys.modules, sys.modules.get('rfc3987_syntax', 'absent')); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["True", "None"]  # jsonschema loaded, the grammar refused
    assert (tmp_path / "written.txt").read_text() == "42"
    cells = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    assert "last cell 42" in "".join("".join(o.get("text", "")) for o in cells[-1]["outputs"])
