"""A pretraining run's checkpoint: what the trainer saves after every epoch, and resuming from it.

The file is a trained model's (:func:`anatcl_core.model.trained.save_trained`): the weights, the
run's record, the descriptor normaliser fitted on the train split, the optimiser, scheduler and
objective states, the age scale, the curve (without wall-clock seconds) and the data's fingerprint.
A rerun resumes only from a checkpoint of the same run record and fingerprint (same code and data),
so an interrupted-and-resumed run ends with the same weights and bytes as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from anatcl_core.model.checkpoint import load_state_dict_checked, safe_load
from anatcl_core.model.run import Run
from anatcl_core.model.trained import save_trained
from anatcl_core.train.data import TrainData

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainState:
    """What changes while a run trains: the network, the objective, the optimiser and the curve."""

    model: nn.Module
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: list[dict] = field(default_factory=list)


def save(path: Path, run: Run, state: TrainState, data: TrainData, epoch: int) -> None:
    """Write the checkpoint after ``epoch`` epochs (``complete`` once the run's budget is spent)."""
    save_trained(
        path, state.model, run,
        normalizer=data.normalizer.to_dict(),
        epoch=epoch,
        optimizer=state.optimizer.state_dict(),
        scheduler=state.scheduler.state_dict(),
        objective=state.objective.state_dict(),
        age_scale=[float(data.age.mean()), float(data.age.std())],
        # wall-clock times stay out: a rerun must write the same bytes (DVC then skips
        # everything downstream of an unchanged checkpoint)
        history=[{k: v for k, v in row.items() if k != "seconds"} for row in state.history],
        fingerprint=data.fingerprint,
        complete=epoch >= run.epochs,
    )


def _same_run(stored: object, run: Run) -> bool:
    """Whether a checkpoint's ``config`` is this run's record (an unreadable one is not)."""
    try:
        return isinstance(stored, dict) and Run.from_config(stored) == run
    except (ValueError, TypeError):
        return False


def resume(path: Path, run: Run, fingerprint: str, state: TrainState) -> int:
    """Restore a checkpoint of the same run into ``state``; return the epoch to start from (0: fresh).

    The restored curve's ``seconds`` are NaN (not stored).
    """
    if not path.exists():
        return 0
    checkpoint = safe_load(path)
    if not _same_run(checkpoint.get("config"), run) or checkpoint.get("fingerprint") != fingerprint:
        logger.warning("%s: from another configuration or data; training from scratch", path)
        return 0
    load_state_dict_checked(state.model, checkpoint["model"], str(path))
    state.objective.load_state_dict(checkpoint["objective"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.scheduler.load_state_dict(checkpoint["scheduler"])
    state.history.extend({**row, "seconds": math.nan} for row in checkpoint.get("history", []))
    logger.info("%s: resuming after epoch %d", path, checkpoint["epoch"])
    return int(checkpoint["epoch"])
