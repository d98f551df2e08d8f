"""Training curves and metrics through dvclive, in its DVC-aware layout.

Every run folder (``outputs/pretrain/<method>-s<seed>``, ``outputs/evaluate/<method>-s<seed>``)
gets a ``dvclive/`` folder::

    dvclive/metrics.json               latest value of every curve + the run's summary (dvc metrics)
    dvclive/plots/metrics/<name>.tsv   one curve per file: ``step`` (= epoch, from 1) and ``<name>``

``dvc.yaml`` declares ``metrics.json`` as the stage's metrics and ``plots/metrics`` as its plots,
so ``dvc exp show``, ``dvc metrics diff``, ``dvc plots diff`` and DVC's editor integrations (the VS
Code extension's live plots, Studio's live metrics when a user configures a token) read them
directly. dvclive writes no ``dvc.yaml`` of its own (``dvcyaml=False``: the stages declare the
files) and saves no experiment of its own (``dvc exp run`` does).

A run opens its logger after restoring its checkpoint and first replays the restored epochs
(:func:`log_history`), so a resumed run writes the same curves as an uninterrupted one (wall-clock
``seconds`` only for the epochs it timed itself). Checkpoints hold nothing of this.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from anatcl_core import project

LIVE_DIR = "dvclive"
METRICS_FILE = "metrics.json"
CURVES_DIR = Path("plots") / "metrics"


def open_live(run_dir: str | Path, curves: bool = True):
    """A ``dvclive.Live`` writing to ``<run_dir>/dvclive`` (emptied first: a run owns its curves).

    With ``curves`` the curves folder exists from the start, also for a run with no epoch (the
    random encoder): it is a declared output of the pretrain stage.
    """
    from dvclive import Live  # imports dvc: only where something is logged

    project.use_site_cache()  # dvclive opens the DVC project of the working directory
    logger = Live(str(Path(run_dir) / LIVE_DIR), resume=False, report=None, save_dvc_exp=False, dvcyaml=False)
    if curves:
        (Path(logger.dir) / CURVES_DIR).mkdir(parents=True, exist_ok=True)
    return logger


def log_epoch(live, row: Mapping[str, float]) -> None:
    """One epoch's row (``epoch`` plus numbers) as a step of every curve; non-finite seconds skipped."""
    live.step = int(row["epoch"])
    for name, value in row.items():
        if name == "epoch" or (name == "seconds" and not math.isfinite(value)):
            continue
        live.log_metric(name, float(value))
    live.next_step()


def log_history(live, history: Iterable[Mapping[str, float]]) -> None:
    """Replay ``history`` (e.g. restored from a checkpoint) epoch by epoch."""
    for row in history:
        log_epoch(live, row)


def finish(live, summary: Mapping[str, object]) -> None:
    """Add ``summary`` to the run's ``metrics.json`` and close the logger."""
    live.summary.update(summary)
    live.end()


def write_metrics(run_dir: str | Path, metrics: Mapping[str, object]) -> Path:
    """Write a run's metrics (no curves) as ``<run_dir>/dvclive/metrics.json``; return its path."""
    live = open_live(run_dir, curves=False)
    finish(live, metrics)
    return Path(run_dir) / LIVE_DIR / METRICS_FILE


def _read_curve(path: Path) -> pd.DataFrame:
    """One curve's ``step``-indexed table (ValueError naming the file when it is damaged)."""
    try:  # a foundation: no anatcl_core.data.files here (test_architecture)
        frame = pd.read_csv(path, sep="\t")
    except (ValueError, OSError) as err:  # pandas' ParserError / EmptyDataError, UnicodeDecodeError
        reason = " ".join(str(err).split())[:200]
        raise ValueError(f"{path}: cannot read ({type(err).__name__}: {reason}); expected a curve table") from None
    if "step" not in frame.columns or frame["step"].duplicated().any():
        raise ValueError(f"{path}: no 'step' column or steps repeated; expected one row per step")
    return frame.set_index("step")


def read_curves(run_dir: str | Path) -> pd.DataFrame:
    """A run's curves as one table: ``epoch`` then one column per curve (empty if none)."""
    folder = Path(run_dir) / LIVE_DIR / CURVES_DIR
    frames = [_read_curve(path) for path in sorted(folder.glob("*.tsv"))]
    if not frames:
        return pd.DataFrame(columns=["epoch", "loss"])
    table = pd.concat(frames, axis=1).sort_index()
    return table.rename_axis("epoch").reset_index()
