"""The map of the house holds: layering of packages, no import cycle, readable sizes, no import-time
side effects, one atomic writer, and stage dependencies that are exactly what a notebook uses.

The rules are the ones ``anatcl_core/__init__.py`` states; this file is where they are checked.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from anatcl_core.project import library_closure

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "anatcl_core"
#: Packages in import order: a package may import the foundations (top-level modules) and the
#: packages of a lower rank, never one of its own rank or above (its own modules excepted).
RANKS = {"data": 1, "synth": 2, "contrastive": 2, "model": 3, "train": 4, "export": 4, "evaluation": 5, "report": 6, "cli": 7}
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        dotted = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[dotted] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The anatcl_core modules a file imports, at any level (function bodies too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        found |= {n for n in names if n in MODULES and n != "anatcl_core"}
    return found


def _package(module: str) -> str | None:
    """``data`` for ``anatcl_core.data.io``; None for a foundation (``anatcl_core.config``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_the_package_map_names_every_package():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RANKS)
    init = (PACKAGE / "__init__.py").read_text()
    for name in RANKS:
        assert f"``anatcl_core.{name}``" in init, f"anatcl_core/__init__.py does not describe {name}"
        assert ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())), f"{name} has no docstring"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_what_lies_below_it(module):
    mine = _package(module)
    bad = []
    for target in _imports(MODULES[module]):
        theirs = _package(target)
        if theirs == mine:
            continue
        if mine is None and theirs is not None:
            bad.append(f"{target} (a foundation imports a package)")
        elif theirs is not None and RANKS[theirs] >= RANKS[mine]:
            bad.append(f"{target} ({theirs} is not below {mine})")
    assert not bad, f"{module} imports {bad}"


def test_no_import_cycle():
    graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_modules_and_functions_are_of_readable_size():
    long_modules = {m: n for m, p in MODULES.items() if (n := p.read_text().count("\n")) > MAX_MODULE_LINES}
    long_functions = {}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions[f"{module}.{node.name}"] = length
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_one_module_renames_files_into_place():
    """Every output is written through anatcl_core.atomic: nobody else replaces or renames files.

    Flagged: ``os.replace`` / ``os.rename`` / ``shutil.move`` and a path's ``.replace(target)`` or
    ``.rename(target)`` (one positional argument; ``str.replace`` takes two, ``DataFrame.rename``
    keywords).
    """
    offenders = []
    for module, path in MODULES.items():
        if module == "anatcl_core.atomic":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner, name = ast.unparse(node.func.value), node.func.attr
            by_module = owner in ("os", "shutil") and name in ("replace", "rename", "move")
            by_path = name in ("replace", "rename") and len(node.args) == 1 and not node.keywords
            if by_module or by_path:
                offenders.append(f"{module}: {ast.unparse(node)[:60]}")
    assert not offenders, offenders


def test_importing_the_library_has_no_side_effects():
    """Importing every module picks no matplotlib backend and changes no matplotlib setting.

    (seaborn, which the report's plots use, imports pyplot itself; pyplot defers the backend.)
    """
    code = ("import importlib, sys, matplotlib\n"
            "def settings():  # without reading 'backend', which would resolve it\n"
            "    return {k: str(dict.__getitem__(matplotlib.rcParams, k)) for k in matplotlib.rcParams if k != 'backend'}\n"
            "before = settings()\n"
            f"for name in {sorted(m for m in MODULES if not m.endswith('__main__'))!r}:\n"
            "    importlib.import_module(name)\n"
            "assert matplotlib.rcParams._get_backend_or_none() is None, matplotlib.get_backend()\n"
            "changed = {k for k, v in settings().items() if before.get(k) != v}\n"
            "assert not changed, sorted(changed)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    calls = [f"{m}: {ast.unparse(n)[:50]}" for m, p in MODULES.items() for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, ast.Call) and ast.unparse(n.func) in ("matplotlib.use", "plt.switch_backend", "mpl.use")]
    assert not calls, calls


def test_the_cohort_stage_does_not_depend_on_the_model():
    closure = library_closure(REPO / "notebooks" / "cohort.py")
    assert not [p for p in closure if p.startswith(("anatcl_core/model/", "anatcl_core/train/",
                                                     "anatcl_core/contrastive/", "anatcl_core/evaluation/"))], closure
    assert "anatcl_core/model/network.py" in library_closure(REPO / "notebooks" / "pretrain.py")


def test_only_the_report_and_cohort_stages_depend_on_the_plots():
    drawing = {stage for stage in ("cohort", "pretrain", "evaluate", "reference", "report")
               if "anatcl_core/report/plots.py" in library_closure(REPO / "notebooks" / f"{stage}.py")}
    assert drawing == {"report"}
