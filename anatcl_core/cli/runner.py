"""Run one stage notebook: a jupytext ``py:percent`` source executed by papermill.

    python -m anatcl_core.cli.runner notebooks/pretrain.py outputs/notebooks/pretrain/x.ipynb \\
        -p method anatcl_global -p seed 0

The source is read with jupytext (cell tags kept, so papermill finds the ``parameters`` cell),
the output folder is created, and papermill executes it with the ``python3`` kernel of the running
interpreter (no kernel is registered anywhere), the working directory being the repository root.
Parameters are what varies per stage instance: strings, and integers when the value is one
(``-p seed 0`` -> ``0``); booleans and lists are deliberately not supported (REFERENCE §4).

The kernel runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the caller set it: on a machine whose
cores are shared, OpenMP threads that spin while waiting for a descheduled sibling made 3D
convolutions ~10x slower (3.6 s instead of 0.32 s per training step, measured on 2 busy cores).

What a stage pays besides its own cells (``make repro`` runs 48 stages; measured on a 2-core AMD
EPYC, the pretrain stage of ``random``, whose cells take ~3 s):

- the kernel is stopped at once after the last cell (``shutdown_kernel="immediate"``) instead of
  being asked to exit and waited for: every cell has finished and every output is written (results
  go through :mod:`anatcl_core.atomic` inside the cells; nothing waits for an exit hook), and the
  graceful stop took 1.3-1.4 s of interpreter teardown per stage, the immediate one 0.1 s;
- as a command (:func:`main`), the runner keeps ``jsonschema`` (imported by papermill's
  ``nbformat``) from importing ``rfc3987_syntax``, installed with JupyterLab's ``jupyter-events``:
  that module compiles a grammar at import, 1.0 s of the runner's 1.9 s start, for the IRI format
  checks of JSON Schema, which no notebook schema uses and nbformat does not enable.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from anatcl_core.cores import check_environment
from anatcl_core.project import library_closure

logger = logging.getLogger(__name__)

_INT = re.compile(r"-?\d+")
#: Imported by jsonschema for its IRI format checks when installed; ~1 s of grammar building.
UNUSED_GRAMMAR = "rfc3987_syntax"


def parse_value(text: str) -> str | int:
    """``"0"`` -> 0, anything else stays a string (so ``"false"`` is never a boolean)."""
    return int(text) if _INT.fullmatch(text) else text


def run_notebook(source: str | Path, output: str | Path, parameters: dict[str, str | int],
                 cwd: str | Path = ".", kernel_name: str = "python3", log_output: bool = True) -> None:
    """Execute ``source`` (``.py`` percent or ``.ipynb``) with papermill into ``output``.

    Raises:
        FileNotFoundError: no source.
        papermill.PapermillExecutionError: a cell failed (the executed notebook is still written).
    """
    import jupytext
    import papermill

    source, output = Path(source), Path(output)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: notebook source not found")
    notebook = jupytext.read(source)
    tagged = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{source}: expected exactly one cell tagged 'parameters', found {len(tagged)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by the kernel (module docstring)
    logger.info("running %s -> %s with %s", source, output, parameters)
    papermill.execute_notebook(notebook, str(output), parameters=parameters, kernel_name=kernel_name, language="python",
                               cwd=str(cwd), log_output=log_output, progress_bar=False,
                               shutdown_kernel="immediate")  # module docstring


def _environment_problem(source: str, environ: dict[str, str] | None = None) -> str | None:
    """One line refusing a malformed ``$ANATCL_NUM_THREADS`` before papermill starts, or None.

    It cannot stop DVC from deleting the stage's outputs: ``dvc repro`` removes every non-persist
    output (``Stage.run`` -> ``remove_outs``, DVC 3.x) before it starts the stage's command, and no
    hook runs earlier; checked by hand with ``dvc repro --single-item -f`` and in
    tests/test_bad_inputs_pipeline.py. So the line says how to get them back: the failed stage left
    ``dvc.lock`` as it was, and ``dvc checkout <stage>`` restores its recorded outputs from the cache.
    ``make repro`` (:mod:`anatcl_core.cli.pipeline`) checks the variable before any stage starts.
    """
    environ = os.environ if environ is None else environ
    try:
        check_environment(environ)
    except ValueError as err:
        stage = environ.get("DVC_STAGE")  # set by DVC for every stage command
        restore = (f"; the outputs DVC removed before this command come back with `dvc checkout {stage}`"
                   if stage else "")
        return f"runner: {source}: {err}{restore}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="notebook source (jupytext py:percent)")
    parser.add_argument("output", nargs="?", help="executed notebook to write (.ipynb)")
    parser.add_argument("--deps", action="store_true",
                        help="print the library modules the notebook needs (its stage's deps) and exit")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="papermill parameter (str or int)")
    parser.add_argument("--cwd", default=".", help="working directory of the kernel")
    args = parser.parse_args(argv)
    if args.deps:
        sys.stdout.write("".join(f"{p}\n" for p in library_closure(args.source)))
        return 0
    if args.output is None:
        parser.error("output is required")
    problem = _environment_problem(args.source)
    if problem:
        sys.stderr.write(problem + "\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sys.modules.setdefault(UNUSED_GRAMMAR, None)  # jsonschema then skips its IRI checks (module docstring)
    run_notebook(args.source, args.output, {k: parse_value(v) for k, v in args.parameter}, args.cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
