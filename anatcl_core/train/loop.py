"""Pretraining of one run (one method, one seed): the loop over named steps and its dvclive curves.

The run arrives resolved (:class:`~anatcl_core.model.run.Run`, built by
:meth:`~anatcl_core.train.recipe.PretrainConfig.resolve`): stage the data, build, then per epoch
the steps, and the checkpoint after each (:mod:`anatcl_core.train.checkpointing`, which also
resumes). Recipe (REFERENCE §1.4): Adam (``learning_rate``, ``weight_decay``), ``batch_size`` subjects x 2
views, lr x ``lr_gamma`` every ``lr_step_epochs`` epochs, tau = ``temperature``, age RBF
``sigma_years``. The whole train split is loaded into memory once. FreeSurfer descriptors are
z-scored by a :class:`~anatcl_core.contrastive.kernels.DescriptorNormalizer` fitted on the train split only and
saved in the checkpoint.

Determinism: the model is initialised from ``seed``; the batch order of epoch ``e`` and every
augmentation are drawn from generators seeded by ``(seed, e)``, so no random state has to survive
an interruption; a rerun with the same settings and data resumes from the checkpoint and ends
with the same weights as an uninterrupted run. When the two views are identical (no augmentation)
the encoder runs once per subject and its output is used for both views: with batch statistics
``[x; x]`` and ``x`` are normalised identically, so this is the same loss at half the cost.

GPUs: the device policy of :mod:`anatcl_core.train.device`; on the CPU the arithmetic is the one
of a plain loop (the tests pin it).

Several processes (``torchrun --nproc_per_node N -m anatcl_core.train ...``): the recipe of
:mod:`anatcl_core.train.distributed`. ``batch_size`` is the *global* batch; every rank draws the same
permutation, encodes its contiguous shard and evaluates the loss on the gathered batch, so the
gradients are those of one process except for BatchNorm statistics, which are per rank
(``norm: group`` or ``none`` makes a W-process run equal a 1-process run). Views with augmentation
are drawn for the global batch on every rank (same generator) and each keeps its shard. Rank 0
writes the checkpoint, curves and logs; the others wait at a barrier. Every rank resumes from the
same checkpoint (a shared file system across nodes).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from anatcl_core import live
from anatcl_core.contrastive.objectives import Objective
from anatcl_core.data.augment import make_augmentation
from anatcl_core.model.network import ContrastiveModel
from anatcl_core.model.run import OptimiserSpec, Run
from anatcl_core.train import checkpointing, distributed
from anatcl_core.train.checkpointing import CHECKPOINT_FILE, TrainState
from anatcl_core.train.data import TrainData
from anatcl_core.train.device import Batches, Placement, place

logger = logging.getLogger(__name__)


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s batch order and augmentations: a function of ``(seed, epoch)`` only."""
    return (int(seed) * 1_000_003 + int(epoch)) % 2**63


def _views(images: torch.Tensor, augment, generator: torch.Generator) -> torch.Tensor:
    """``(B, 1, X, Y, Z)`` -> ``(B, 2, 1, X, Y, Z)`` of independently augmented views."""
    return torch.stack([torch.stack([augment(x, generator) for _ in range(2)]) for x in images])


def build(run: Run) -> tuple[ContrastiveModel, Objective]:
    """The run's network (initialised from its seed, channels-last) and its objective."""
    torch.manual_seed(run.seed)
    model = run.model.build()
    model.to(memory_format=torch.channels_last_3d)  # ~1.2-1.5x faster 3D convolutions on CPU
    objective = Objective(run.method_config, temperature=run.objective.temperature,
                          sigma_years=run.objective.sigma_years, mapping=run.objective.mapping,
                          feature_dim=model.encoder.feature_dim)
    return model, objective


def make_optimiser(recipe: OptimiserSpec, parameters: list[nn.Parameter], fused: bool):
    """Adam and its step schedule (lr x ``lr_gamma`` every ``lr_step_epochs`` epochs)."""
    optimizer = torch.optim.Adam(parameters, lr=recipe.learning_rate, weight_decay=recipe.weight_decay,
                                 **({"fused": True} if fused else {}))
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, recipe.lr_step_epochs, recipe.lr_gamma)


@dataclass
class Training:
    """Everything the epochs of one run act on, on this rank."""

    run: Run
    placement: Placement
    state: TrainState
    net: nn.Module  # the model, wrapped for DDP when there are several ranks
    augment: Callable
    batches: Batches
    age: torch.Tensor  # (N,) years, on the device
    descriptors: torch.Tensor  # (N, C, R) normalised, on the device
    age_mean: float
    age_std: float


def stage(run: Run, data: TrainData, placement: Placement, state: TrainState) -> Training:
    """Put the train split where the steps read it and wrap the model for the ranks.

    Raises:
        ValueError: fewer subjects than one batch, or a batch that does not split over the ranks.
    """
    ctx, bs, n = placement.ctx, run.optimiser.batch_size, len(data.age)
    net = distributed.wrap_model(state.model, ctx,
                                 find_unused_parameters=run.method_config.objective == "supervised")
    augment = make_augmentation(list(run.method_config.augmentation))
    if run.epochs and n // bs == 0:  # drop_last: batch norm and the kernels want full batches
        raise ValueError(f"train split has {n} subjects, fewer than batch_size {bs}")
    if bs % ctx.world_size:
        raise ValueError(f"batch_size {bs} (the global batch) does not split over {ctx.world_size} ranks")
    return Training(run, placement, state, net, augment, Batches(data.images, placement.device, bs),
                    data.age.to(placement.device), data.descriptors.to(placement.device),
                    float(data.age.mean()), float(data.age.std()))


def batch_loss(t: Training, batch: torch.Tensor, generator: torch.Generator):
    """The loss of one global batch ``(B,)`` of subject indices, identical on every rank."""
    ctx, device, identical = t.placement.ctx, t.placement.device, t.run.method_config.identical_views
    idx = distributed.shard_batch(batch, ctx)  # (b,) this rank's rows
    if identical:
        x = t.batches(idx)  # (b, 1, X, Y, Z)
    else:
        views = _views(t.batches(batch), t.augment, generator)  # (B, 2, 1, X, Y, Z), all ranks alike
        x = distributed.shard_batch(views, ctx).flatten(0, 1)  # (2b, 1, X, Y, Z)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.placement.bf16):
        feats, proj = t.net(x.contiguous(memory_format=torch.channels_last_3d))  # (b or 2b, F), (., d)
    feats = feats.float().view(len(idx), -1, feats.shape[-1])  # (b, 1 or 2, F)
    proj = proj.float().view(len(idx), -1, proj.shape[-1])  # (b, 1 or 2, d)
    if identical:
        feats, proj = feats.expand(-1, 2, -1), proj.expand(-1, 2, -1)  # (b, 2, F), (b, 2, d)
    idx = idx.to(device)
    age = t.age[idx]
    return distributed.global_batch_loss(t.state.objective, feats, proj, age, (age - t.age_mean) / t.age_std,
                                         t.descriptors[idx])


def _check_finite(t: Training, total: float, epoch: int, first: int, last: int) -> None:
    """Raise FloatingPointError when the loss summed over steps ``first..last`` is NaN or infinite."""
    if not math.isfinite(total):
        where = f"step {last}" if first == last else f"steps {first}-{last}"
        raise FloatingPointError(
            f"pretrain {t.run.method} seed {t.run.seed}: loss is {total} at epoch {epoch + 1}, "
            f"{where}; lower pretrain.learning_rate or check the inputs")


def train_epoch(t: Training, epoch: int) -> dict:
    """One epoch (0-based ``epoch``): every full batch of its seeded order; returns its curve row."""
    t.net.train()
    tic = time.perf_counter()
    generator = torch.Generator().manual_seed(_epoch_seed(t.run.seed, epoch))
    n, bs = len(t.age), t.run.optimiser.batch_size
    n_batches = n // bs
    order = torch.randperm(n, generator=generator)
    sums, keys, checked = None, ["loss"], 0
    for step in range(n_batches):
        loss, parts = batch_loss(t, order[step * bs:(step + 1) * bs], generator)  # the global batch
        values = torch.stack([loss.detach(), *parts.values()]).double()  # float64: exact sums
        sums, keys = (values if sums is None else sums + values), ["loss", *parts]
        if (step + 1) % t.placement.sync_steps == 0 or step + 1 == n_batches:
            _check_finite(t, sums[0].item(), epoch, checked + 1, step + 1)
            checked = step + 1
        t.state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.state.optimizer.step()
    means = [v / n_batches for v in sums.tolist()] if sums is not None else []
    row = {"epoch": epoch + 1, **dict(zip(keys, means)),
           "lr": t.state.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tic}
    if t.run.method_config.objective == "supervised":
        row["train_mae_years"] = row["loss"] * t.age_std
    t.state.scheduler.step()
    return row


def start_or_resume(run: Run, data: TrainData, path: Path, device: str | torch.device, bf16: bool | None):
    """Place, build, resume from ``path`` if it is this run's checkpoint, open the curves, stage the data.

    Returns:
        ``(training, first epoch to run, dvclive logger or None on the other ranks)``.
    """
    placement = place(run.num_threads, device, bf16)
    ctx = placement.ctx
    path.parent.mkdir(parents=True, exist_ok=True)
    model, objective = build(run)
    model.to(placement.device)
    objective.to(placement.device)
    state = TrainState(model, objective, *make_optimiser(
        run.optimiser, list(model.parameters()) + list(objective.parameters()), fused=placement.cuda))
    start = checkpointing.resume(path, run, data.fingerprint, state)
    ctx.barrier()  # every rank has read the checkpoint before rank 0 rewrites it
    curves = live.open_live(path.parent) if ctx.is_main else None  # rank 0 logs (dvclive)
    if curves is not None:
        live.log_history(curves, state.history)  # the epochs restored from the checkpoint, if any
    return stage(run, data, placement, state), start, curves


def pretrain(
    run: Run,
    data: TrainData,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    device: str | torch.device = "auto",
    bf16: bool | None = None,
) -> list[dict]:
    """Train (or resume) one run; write checkpoint, curves and summary.

    Under ``torchrun`` every rank calls this with the same arguments (module docstring).

    Args:
        run: the resolved run (:meth:`~anatcl_core.train.recipe.PretrainConfig.resolve`).
        data: the train split, read with ``run.data`` (:func:`~anatcl_core.train.data.load_train_data`).
        out_dir: ``outputs/pretrain/<method>-s<seed>``; holds ``checkpoint.pt`` and ``dvclive/``
            (curves per epoch and the run's summary, :mod:`anatcl_core.live`).
        progress: show a tqdm bar over epochs (rank 0 only).
        on_epoch_end: called with ``(epoch, row)`` after each saved epoch (tests interrupt here).
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"``; under torchrun a bare
            ``cuda`` means ``cuda:LOCAL_RANK``.
        bf16: bf16 autocast of the network; None: on for CUDA, off on the CPU.

    Returns:
        The training curve: one dict per epoch (epoch, loss, parts, lr, seconds; seconds are NaN
        for epochs restored from a checkpoint).

    Raises:
        FloatingPointError: the loss became NaN or infinite (the message says where).
        ValueError: too few subjects, or a batch that does not split over the ranks.
    """
    path = Path(out_dir) / CHECKPOINT_FILE
    t, start, curves = start_or_resume(run, data, path, device, bf16)
    ctx, state = t.placement.ctx, t.state
    if start == 0 and run.epochs == 0 and ctx.is_main:
        checkpointing.save(path, run, state, data, 0)
    bar = tqdm(range(start, run.epochs), desc=f"pretrain {run.method} s{run.seed}", initial=start,
               total=run.epochs, disable=not (progress and ctx.is_main))
    for epoch in bar:
        row = train_epoch(t, epoch)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        state.history.append(row)
        if ctx.is_main:
            checkpointing.save(path, run, state, data, epoch + 1)
        ctx.barrier()  # the others wait for rank 0's checkpoint
        if ctx.is_main:
            live.log_epoch(curves, row)
            logger.info("%s s%d epoch %d/%d loss %.4f (%.1fs)", run.method, run.seed, epoch + 1, run.epochs,
                        row["loss"], row["seconds"])
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    if ctx.is_main:
        live.finish(curves, run_summary(state.history))
    ctx.barrier()
    return state.history


def run_summary(history: list[dict]) -> dict:
    """What a run adds to its ``dvclive/metrics.json``: epochs, final loss, timed training seconds, threads.

    ``threads`` (torch's intra-op threads of this run) is provenance: the checkpoint's bytes depend
    on it through float rounding (:mod:`anatcl_core.cores`).
    """
    last = history[-1] if history else {}
    seconds = [r["seconds"] for r in history if math.isfinite(r.get("seconds", math.nan))]
    return {"epochs": len(history), "final_loss": last.get("loss", math.nan),
            "train_seconds": sum(seconds), "timed_epochs": len(seconds), "threads": torch.get_num_threads()}
