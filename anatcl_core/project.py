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
"""

from __future__ import annotations

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
