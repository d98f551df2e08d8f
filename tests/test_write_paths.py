"""Every file the library writes goes through :mod:`anatcl_core.atomic` (issue 23).

An AST scan of ``anatcl_core``: a call that writes a file (``open`` for writing, ``Path.write_text``,
``np.save``, ``torch.save``, ``DataFrame.to_csv``, ``json.dump``, ``fig.savefig``, ``shutil.copy``,
``os.replace``...) must either sit in ``atomic.py`` or write to the temporary path (or a handle
opened on it) of an enclosing ``with atomic_write(...)`` / ``atomic_open`` / ``atomic_dir`` block.
The few exceptions are listed in :data:`ALLOWED` with the reason; an entry that no longer matches
anything fails too, so the list cannot rot.

Not seen by a syntactic scan (named here so nobody believes otherwise): ``Path.rename``/``.replace``
on a variable (indistinguishable from ``str.replace``), and writes inside third-party code (dvclive's
``metrics.json`` and curves, papermill's executed notebook, DVC's own files).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "anatcl_core"

#: methods writing to a path (or handle) among their arguments: ``np.save(f, a)``, ``torch.save(a, f)``...
PATH_METHODS = frozenset({
    "save", "savez", "savez_compressed", "savefig", "dump", "to_csv", "to_parquet", "to_json", "to_pickle",
    "to_feather", "to_hdf", "to_excel", "to_stata", "to_html", "to_latex", "to_markdown", "to_filename", "tofile",
})
#: ... and without one return text (``frame.to_csv(sep="\t")``, ``frame.to_html()``)
TEXT_WITHOUT_PATH = frozenset({"to_csv", "to_json", "to_html", "to_latex", "to_markdown"})
#: methods writing to their receiver: ``path.write_text(s)``, ``handle.write(b)``
RECEIVER_METHODS = frozenset({"write_text", "write_bytes", "write", "writelines", "symlink_to", "hardlink_to", "touch"})
#: module functions that write (``os.replace``, ``shutil.copy``...)
WRITE_FUNCTIONS = {"os": {"rename", "replace", "link", "symlink", "open", "write", "truncate"},
                   "shutil": {"copy", "copy2", "copyfile", "copytree", "move", "copyfileobj"}}
#: receivers whose ``write`` is a terminal, not a file
STREAMS = {"sys.stdout", "sys.stderr"}
#: library modules whose writers are scanned where they are defined (``checkpointing.save``)
LIBRARY_WRITERS = {"checkpointing", "atomic"}
#: the writer's own entry points (a call to them is the atomic road, not a bypass)
ATOMIC = {"atomic_write", "atomic_open", "atomic_dir"}

#: (module, function) -> why its writes bypass atomic_write
ALLOWED = {
    ("synth/generate.py", "write_nifti_gz"):
        "called only by the synthetic cohort writers below, into atomic_dir's temporary folder",
    ("synth/generate.py", "_write_pretraining"):
        "writes into atomic_dir's temporary folder (synthesize), renamed whole; thousands of maps, no fsync each",
    ("synth/generate.py", "_write_manifest_subject"): "idem (atomic_dir's temporary folder)",
    ("synth/generate.py", "_write_downstream"): "idem (atomic_dir's temporary folder)",
    ("synth/generate.py", "_write_travelling"): "idem (atomic_dir's temporary folder)",
    ("synth/generate.py", "_write_resource_images"): "idem: resource/'s template and atlas, in atomic_dir's temporary folder",
    ("cli/pipeline.py", "_start"):
        "a stage's live log (DVC's and the notebook's output as it runs, read when it fails), no result",
    ("cli/pipeline.py", "main"): "the lock file: opened to flock, never written",
    ("cli/profile.py", "dump"): "YAML into an in-memory StringIO; the file is written by main, atomically",
    ("model/weights.py", "_download"): "streams into the temp path its caller (fetch) got from atomic_write",
    ("export/extract_template.py", "extract"):
        "the self-contained extract.py of a BrainFMBench submission: imports no anatcl_core by contract",
    ("export/sandbox.py", "offline_environment"):
        "links and a .pth in the scratch site-packages of export.check's TemporaryDirectory",
    ("export/sandbox.py", "run_extract"): "the sandbox's driver script, in the same TemporaryDirectory",
    ("export/check.py", "write_validator_inputs"): "synthetic NIfTI inputs in check's TemporaryDirectory",
}


def _name(node: ast.AST) -> str:
    return ast.unparse(node)


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _open_mode(call: ast.Call) -> str:
    mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
    return mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"


def _writes(call: ast.Call) -> list[ast.AST] | None:
    """Where the call writes (nodes naming the file or handle) if it writes a file, else None."""
    func, args = call.func, [*call.args, *(k.value for k in call.keywords)]
    if isinstance(func, ast.Name) and func.id == "open":
        return call.args[:1] if set(_open_mode(call)) & set("wax+") else None
    if not isinstance(func, ast.Attribute):
        return None
    receiver = _name(func.value)
    if receiver in WRITE_FUNCTIONS:
        return call.args[:1] if func.attr in WRITE_FUNCTIONS[receiver] else None
    if func.attr == "open":  # Path.open("w"); a mode-less open reads
        return [func.value] if call.args and set(_open_mode(ast.Call(func, [func, *call.args], call.keywords))) & set("wax+") else None
    if receiver in STREAMS | LIBRARY_WRITERS:
        return None
    if func.attr in TEXT_WITHOUT_PATH:  # a path positionally or by keyword, else it returns text
        paths = call.args[:1] + [k.value for k in call.keywords if k.arg in ("path_or_buf", "buf")]
        return paths or None
    if func.attr in PATH_METHODS:
        return args
    return [func.value] if func.attr in RECEIVER_METHODS else None


class _Scan(ast.NodeVisitor):
    """Writes outside atomic blocks, as (module, function, line, call)."""

    def __init__(self, module: str):
        self.module, self.function, self.bound, self.found = module, "<module>", [set()], []

    def visit_FunctionDef(self, node):
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_With(self, node):
        self.bound.append(set(self.bound[-1]))
        for item in node.items:  # in order: ``atomic_write(p) as tmp, open(tmp, "wb") as handle``
            expr = item.context_expr
            self.visit(expr)
            atomic = isinstance(expr, ast.Call) and _name(expr.func).split(".")[-1] in ATOMIC
            if item.optional_vars is not None and (atomic or _names(expr) & self.bound[-1]):
                self.bound[-1] |= _names(item.optional_vars)  # the temp path, or a handle opened on it
        for statement in node.body:
            self.visit(statement)
        self.bound.pop()

    def visit_Call(self, node):
        targets = _writes(node)
        if targets is not None and not set().union(*map(_names, targets)) & self.bound[-1]:
            self.found.append((self.module, self.function, node.lineno, _name(node)[:90]))
        self.generic_visit(node)


def scan(package: Path = PACKAGE) -> list[tuple[str, str, int, str]]:
    """Every write call of ``package`` outside ``atomic.py`` and outside an atomic block."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module != "atomic.py":
            visitor = _Scan(module)
            visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
            found += visitor.found
    return found


def test_every_write_goes_through_the_atomic_writer():
    found = scan()
    stray = [f"anatcl_core/{m}:{line} in {f}(): {call}" for m, f, line, call in found if (m, f) not in ALLOWED]
    assert not stray, "writes outside anatcl_core.atomic (use atomic_write / atomic_open / write_text):\n" + "\n".join(stray)
    stale = set(ALLOWED) - {(m, f) for m, f, _, _ in found}
    assert not stale, f"allow-list entries matching no write any more (remove them): {sorted(stale)}"


@pytest.mark.parametrize("code, flagged", [
    ("def f(p):\n    p.write_text('x')\n", True),
    ("def f(p, a):\n    np.save(p, a)\n", True),
    ("def f(p):\n    with open(p, 'w') as h:\n        h.write('x')\n", True),
    ("def f(p, d):\n    json.dump(d, open(p, 'w'))\n", True),
    ("def f(p, q):\n    os.replace(p, q)\n", True),
    ("def f(p, q):\n    shutil.copy(p, q)\n", True),
    ("def f(fig, p):\n    fig.savefig(p)\n", True),
    ("def f(p, o):\n    with atomic_write(p) as tmp:\n        o.write_text('x')\n", True),  # not the temp path
    ("def f(p):\n    with atomic_write(p) as tmp:\n        tmp.write_text('x')\n", False),
    ("def f(p, a):\n    with atomic_write(p) as tmp, open(tmp, 'wb') as h:\n        np.save(h, a)\n", False),
    ("def f(p, a):\n    with atomic.atomic_open(p) as h:\n        np.save(h, a)\n", False),
    ("def f(p):\n    atomic.write_text(p, 'x')\n", False),
    ("def f(p):\n    with open(p) as h:\n        return h.read()\n", False),
    ("def f(s):\n    sys.stderr.write(s)\n", False),
    ("def f(frame):\n    return frame.to_csv(sep='\\t')\n", False),
    ("def f(frame, p):\n    frame.to_csv(path_or_buf=p)\n", True),
    ("def f(a, p):\n    torch.save(a, p)\n", True),
    ("def f(a, p):\n    with atomic_write(p) as tmp, open(tmp, 'wb') as h:\n        torch.save(a, h)\n", False),
])
def test_the_scan_tells_a_stray_write_from_an_atomic_one(tmp_path, code, flagged):
    (tmp_path / "m.py").write_text(code)
    assert bool(scan(tmp_path)) == flagged, code
