"""What a pipeline stage pays around its own cells, and what each of three choices saves per stage.

    python benchmarks/bench_stage_overhead.py [--repeats N] [--lock dvc.lock] [--quick] [--out FILE]

``make repro`` runs :data:`DEFAULT_RUN_STAGES` stages, each ``dvc repro --single-item`` -> ``python -m anatcl_core.cli.runner`` ->
a papermill kernel. Three pieces of that cost are chosen by this project, and each is timed both ways
(median of ``--repeats`` alternating pairs, each case in a fresh process):

- ``lock_parse``: one safe load of ``dvc.lock`` (DVC makes about five per stage) with ruamel.yaml's
  pure-Python parser vs libyaml (``ruamel.yaml.clib``, pinned in requirements.txt); the two must
  give the same values, checked here;
- ``runner_imports``: importing papermill and jupytext as the runner does, with and without
  jsonschema's ``rfc3987_syntax`` grammar (the runner command blocks it, :mod:`anatcl_core.cli.runner`);
- ``kernel_stop``: running a one-cell notebook that imports what every stage's kernel holds (torch,
  pandas, scikit-learn) through papermill with the kernel stopped ``graceful`` (asked to exit and
  waited for: the interpreter's teardown of those libraries) vs ``immediate`` (the runner's choice);
  the same cell outputs either way, checked here.

Prints each piece's seconds both ways, the saving per stage (``lock_parse`` counted five times) and
the ratio. ``--quick``: a small generated lock file and 1 repeat (the test suite's smoke run).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

NAME = "stage_overhead"
#: Safe loads of dvc.lock per ``dvc repro --single-item`` (counted with cProfile, DVC 3.67).
LOCK_LOADS_PER_STAGE = 5
#: Stages of the default run (7 methods x 3 seeds x pretrain + evaluate, 4 reference rows, cohort, report).
DEFAULT_RUN_STAGES = 48

_LOCK = """
import hashlib, sys, time
from ruamel.yaml import YAML
text = open(sys.argv[1]).read()
start = time.perf_counter()
value = YAML(typ="safe", pure=sys.argv[2] == "pure").load(text)
print(time.perf_counter() - start, hashlib.md5(repr(value).encode()).hexdigest())
"""
_IMPORTS = """
import sys, time
if sys.argv[1] == "blocked":
    sys.modules["rfc3987_syntax"] = None
start = time.perf_counter()
import jupytext, papermill
print(time.perf_counter() - start)
"""
_KERNEL = """
import json, sys, time
import nbformat, papermill
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import torch, pandas, sklearn.linear_model; print(6 * 7)")])
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
start = time.perf_counter()
out = papermill.execute_notebook(nb, sys.argv[2], kernel_name="python3", progress_bar=False,
                                 shutdown_kernel=sys.argv[1])
print(time.perf_counter() - start, json.dumps(out.cells[0].outputs[0]["text"]))
"""


def _run(script: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
                          cwd=common.REPO)
    return done.stdout.split()


def _pairs(repeats: int, a, b) -> tuple[list[float], list[float], set, set]:
    """``repeats`` alternating runs of the two cases (order flipped every pair): seconds and second fields."""
    times_a, times_b, seen_a, seen_b = [], [], set(), set()
    for i in range(repeats):
        for which in ((a, b) if i % 2 == 0 else (b, a)):
            fields = which()
            (times_a if which is a else times_b).append(float(fields[0]))
            (seen_a if which is a else seen_b).add(" ".join(fields[1:]))
    return times_a, times_b, seen_a, seen_b


def _small_lock(path: Path) -> None:
    stages = "".join(f"  s{i}:\n    cmd: python x.py\n    deps:\n" + "".join(
        f"    - path: a/m{j}.py\n      hash: md5\n      md5: {j:032x}\n      size: {j}\n" for j in range(30))
        for i in range(10))
    path.write_text(f"schema: '2.0'\nstages:\n{stages}")


def main(argv=None) -> dict:
    p = common.parser(NAME, __doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--lock", type=Path, default=common.REPO / "dvc.lock")
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lock = args.lock
        if args.quick:
            lock = Path(tmp) / "dvc.lock"
            _small_lock(lock)
        cases = {
            "lock_parse": (lambda: _run(_LOCK, str(lock), "pure"), lambda: _run(_LOCK, str(lock), "libyaml"),
                           LOCK_LOADS_PER_STAGE),
            "runner_imports": (lambda: _run(_IMPORTS, "loaded"), lambda: _run(_IMPORTS, "blocked"), 1),
            "kernel_stop": (lambda: _run(_KERNEL, "graceful", str(Path(tmp) / "g.ipynb")),
                            lambda: _run(_KERNEL, "immediate", str(Path(tmp) / "i.ipynb")), 1),
        }
        for name, (before, after, per_stage) in cases.items():
            t_before, t_after, out_before, out_after = _pairs(repeats, before, after)
            if out_before != out_after or len(out_before) != 1:
                raise SystemExit(f"{name}: the two ways gave different results: {out_before} vs {out_after}")
            b, a = statistics.median(t_before), statistics.median(t_after)
            rows.append({"piece": name, "before_s": b, "after_s": a, "ratio": b / a, "per_stage": per_stage,
                         "saved_per_stage_s": per_stage * (b - a), "before_runs": t_before, "after_runs": t_after})
    print(f"{'piece':16s} {'before s':>9s} {'after s':>9s} {'ratio':>6s} {'saved per stage s':>18s}")
    for r in rows:
        print(f"{r['piece']:16s} {r['before_s']:9.3f} {r['after_s']:9.3f} {r['ratio']:6.2f} "
              f"{r['saved_per_stage_s']:18.2f}")
    total = sum(r["saved_per_stage_s"] for r in rows)
    print(f"saved per stage: {total:.2f} s; x {DEFAULT_RUN_STAGES} stages = {DEFAULT_RUN_STAGES * total:.0f} stage-seconds")
    result = {"benchmark": NAME, "quick": bool(args.quick), "machine": common.machine(), "repeats": repeats,
              "lock_bytes": lock.stat().st_size if not args.quick else None, "rows": rows,
              "saved_per_stage_s": total}
    print(f"wrote {common.write_json(result, args.out)}")
    return result


if __name__ == "__main__":
    main()
