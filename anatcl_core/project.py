"""Where the project is, wherever a notebook's kernel starts.

JupyterLab starts a notebook's kernel in the notebook's folder (``notebooks/``), papermill (the
pipeline's runner) in the repository root. The paths of every parameters cell are written relative
to the project root, so each notebook resolves them here first:

    params_file, data_dir = project.inputs(params_file, data_dir)
    out_dir = project.output(out_dir)

The root is the nearest folder, from the working directory upwards, holding both ``dvc.yaml`` and
``params.yaml``. Resolved paths are returned relative to the working directory, so that in the
pipeline (started in the root) they are exactly the strings it passed and nothing it writes changes.

``outputs/`` belongs to the pipeline (DVC tracks it); interactive runs write to ``outputs/scratch/``,
which no stage reads or writes. An output folder elsewhere under ``outputs/`` (e.g. when an executed
copy from ``outputs/notebooks/`` is re-run, its injected ``out_dir`` being the stage's) is redirected
there, except inside a DVC stage (DVC sets ``DVC_STAGE`` for every stage command; the kernel inherits
it) or with ``ANATCL_WRITE_OUTPUTS=1``, for a user who means to rewrite a stage's outputs by hand
(``dvc commit`` then records them).

DVC's site cache (its repo index and locks) is kept in ``<root>/.dvc/site_cache`` wherever a kernel
starts (:func:`use_site_cache`, called where the library opens DVC; the Makefile exports the same).
``.dvc/config`` cannot say so: DVC takes a relative ``site_cache_dir`` from the working directory,
so a kernel in ``notebooks/`` made ``notebooks/.dvc/``, which DVC then took for a nested project.

A stage's dependencies are the library modules its notebook imports, found here too
(:func:`library_closure`; `python -m anatcl_core.cli.runner --deps notebooks/<stage>.py` prints them).
"""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Files that mark the project root (both must be present).
ROOT_MARKERS = ("dvc.yaml", "params.yaml")
#: The pipeline's output folder and the scratch folder inside it (never a stage's input or output).
OUTPUTS, SCRATCH = "outputs", "outputs/scratch"
#: Environment variables that let a run write inside ``outputs/`` outside ``outputs/scratch/``: the
#: user's opt-in (value ``1``) and the one DVC sets for a stage's command (any value).
WRITE_OUTPUTS_ENV, DVC_STAGE_ENV = "ANATCL_WRITE_OUTPUTS", "DVC_STAGE"
#: DVC's site cache inside the project, and the variable DVC reads it from (it wins over .dvc/config).
SITE_CACHE, SITE_CACHE_ENV = ".dvc/site_cache", "DVC_SITE_CACHE_DIR"


def find_root(start: str | Path | None = None) -> Path:
    """The nearest folder from ``start`` (default: the working directory) upwards with ``ROOT_MARKERS``.

    Raises:
        FileNotFoundError: no folder on the way holds both files.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).is_file() for marker in ROOT_MARKERS):
            return folder
    raise FileNotFoundError(f"{here}: no folder from here upwards holds {' and '.join(ROOT_MARKERS)} "
                            "(start the kernel inside the project)")


def use_site_cache(root: str | Path | None = None) -> str | None:
    """Point DVC's site cache at ``<root>/.dvc/site_cache`` (absolute) unless ``DVC_SITE_CACHE_DIR`` is set.

    Call it before DVC opens the project (``dvc.repo.Repo``, ``dvclive.Live``): DVC reads the variable
    when a repository is opened. Outside a project (no root, or a root without ``.dvc/``) nothing is
    set and DVC keeps its default (``/var/tmp/dvc``), which is outside any work tree either way.

    Returns:
        The site cache DVC will use, or None where DVC keeps its default.
    """
    if os.environ.get(SITE_CACHE_ENV):
        return os.environ[SITE_CACHE_ENV]
    try:
        root = Path(root or find_root()).resolve()
    except FileNotFoundError:
        return None
    if not (root / ".dvc").is_dir():
        return None
    os.environ[SITE_CACHE_ENV] = str(root / SITE_CACHE)
    return os.environ[SITE_CACHE_ENV]


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


def resolve(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` (absolute, or relative to the project root) as a path relative to the working directory."""
    return _relative(Path(root or find_root()) / Path(path).expanduser())


def inputs(*paths: str | Path, root: str | Path | None = None) -> tuple[str, ...]:
    """Each of ``paths`` resolved against the project root (see :func:`resolve`)."""
    root = Path(root or find_root())
    return tuple(resolve(p, root) for p in paths)


def output(path: str | Path, root: str | Path | None = None) -> str:
    """Resolve an output folder; inside ``outputs/`` but outside ``outputs/scratch/``, redirect it there.

    ``outputs/report`` becomes ``outputs/scratch/report`` outside a DVC stage unless
    ``ANATCL_WRITE_OUTPUTS=1`` (module docstring), so an interactive run never rewrites what DVC tracks.
    """
    root = Path(root or find_root()).resolve()
    target = (root / Path(path).expanduser()).resolve()
    outputs, scratch = root / OUTPUTS, root / SCRATCH
    allowed = os.environ.get(WRITE_OUTPUTS_ENV) == "1" or bool(os.environ.get(DVC_STAGE_ENV))
    if not allowed and target.is_relative_to(outputs) and not target.is_relative_to(scratch):
        redirected = scratch / target.relative_to(outputs)
        logger.warning("%s is a pipeline output: writing to %s instead (set %s=1 to write there)",
                       _relative(target), _relative(redirected), WRITE_OUTPUTS_ENV)
        target = redirected
    return _relative(target)


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _public_names(root: Path, package: str) -> dict[str, str]:
    """The ``PUBLIC`` table of ``package/__init__.py`` (name -> defining module), read without importing."""
    for node in ast.parse((root / package / "__init__.py").read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "PUBLIC" for t in targets):
                return ast.literal_eval(node.value)
    return {}


def library_closure(source: str | Path, package: str = "anatcl_core") -> list[str]:
    """Every ``package`` module file that ``source`` imports, directly or through other modules.

    Imports anywhere in a file count (function-level ones too), and so do the ``__init__.py`` of
    every package on the way, since Python runs them. ``from anatcl_core import AnatCL`` counts the
    module that defines the name (the package's ``PUBLIC`` table, imported on first use). These are
    the ``deps`` a stage running ``source`` needs so that editing one of them reruns it (and editing
    any other does not).

    Returns:
        Sorted POSIX paths relative to the repository root (the parent of ``package``).
    """
    root = Path(__file__).resolve().parent.parent  # the repository: anatcl_core/project.py
    public = _public_names(root, package)
    seen: set[Path] = set()
    todo = [Path(source).resolve()]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [public.get(a.name, f"{node.module}.{a.name}") if node.module == package
                                         else f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] != package:
                    continue
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # the packages on the way, then the module
                    path = _module_file(root, ".".join(parts[:i]))
                    if path is not None and path not in seen:
                        seen.add(path)
                        todo.append(path)
    return sorted(p.relative_to(root).as_posix() for p in seen)
