"""Pretraining of one (method, seed): params.yaml ``pretrain``, checkpoints, resume, dvclive curves.

Recipe (REFERENCE §1.4): Adam (``learning_rate``, ``weight_decay``), ``batch_size`` subjects x 2
views, lr x ``lr_gamma`` every ``lr_step_epochs`` epochs, tau = ``temperature``, age RBF
``sigma_years``. The whole train split is loaded into memory once. FreeSurfer descriptors are
z-scored by a :class:`~anatcl_core.contrastive.kernels.DescriptorNormalizer` fitted on the train split only and
saved in the checkpoint.

Determinism: the model is initialised from ``seed``; the batch order of epoch ``e`` and every
augmentation are drawn from generators seeded by ``(seed, e)``, so no random state has to survive
an interruption. The checkpoint is written atomically after every epoch and holds model,
optimiser, scheduler and epoch; a rerun with the same settings and data resumes from it and ends
with the same weights as an uninterrupted run. When the two views are identical (no augmentation)
the encoder runs once per subject and its output is used for both views: with batch statistics
``[x; x]`` and ``x`` are normalised identically, so this is the same loss at half the cost.

GPUs (``device="cuda"`` or ``"auto"``): bf16 autocast for the network (the loss in float32),
channels-last 3D, cuDNN autotuning, fused Adam. The train split is copied once to the device in
its stored dtype (``image_dtype: float16`` halves it) when it fits in half the free memory, else it
stays on the host and each batch is gathered into one of two pinned buffers and copied without
blocking; either way it becomes float32 on the device. Losses are summed on the device and read
every ``_SYNC_STEPS`` steps (NaN check) and at the end of the epoch. On the CPU every one of these
is off, and the arithmetic is the one of a plain loop (the tests pin it).

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

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from anatcl_core import live
from anatcl_core.contrastive.objectives import Objective
from anatcl_core.cores import resolve_threads
from anatcl_core.data.augment import make_augmentation
from anatcl_core.model.checkpoint import load_state_dict_checked, model_config, safe_load, save_checkpoint
from anatcl_core.model.network import build_model
from anatcl_core.train import distributed
from anatcl_core.train.data import TrainData, load_train_data
from anatcl_core.train.recipe import PretrainConfig

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
#: On a GPU the summed losses are read (a host sync, and the NaN check) every this many steps.
_SYNC_STEPS = 25


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % 2**63


def _views(images: torch.Tensor, augment, generator: torch.Generator) -> torch.Tensor:
    """``(B, 1, X, Y, Z)`` -> ``(B, 2, 1, X, Y, Z)`` of independently augmented views."""
    return torch.stack([torch.stack([augment(x, generator) for _ in range(2)]) for x in images])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` if available else ``cpu``; anything else as given, checked.

    Raises:
        ValueError: a CUDA device was asked for and none is available.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: CUDA is not available here (use cpu or auto)")
    return resolved


class _Batches:
    """Images of the in-memory train split, by index, as float32 ``(b, 1, X, Y, Z)`` on ``device``.

    CPU: plain indexing. GPU: the whole stack on the device when it fits in half the free
    memory; otherwise gathered on the host into one of two pinned buffers (reused only after
    the copy out of it has finished) and copied without blocking.
    """

    def __init__(self, images: torch.Tensor, device: torch.device, rows: int) -> None:
        self.device, self.images, self.pinned = device, images, None
        if device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(device)
        if images.nbytes < free // 2:
            self.images = images.to(device)
            logger.info("train split on %s (%.1f GiB %s)", device, images.nbytes / 2**30, images.dtype)
            return
        self.pinned = [torch.empty((rows, *images.shape[1:]), dtype=images.dtype, pin_memory=True)
                       for _ in range(2)]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0
        logger.info("train split in host memory (%.1f GiB), pinned batches", images.nbytes / 2**30)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.pinned is None:
            return self.images[idx.to(self.images.device)].float()
        slot, self.turn = self.turn, 1 - self.turn
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # the copy out of this buffer two batches ago
        buffer = self.pinned[slot][:len(idx)]
        torch.index_select(self.images, 0, idx.cpu(), out=buffer)
        x = buffer.to(self.device, non_blocking=True)
        self.copied[slot] = torch.cuda.Event()
        self.copied[slot].record()
        return x.float()


def _build(config: PretrainConfig, method: str, seed: int):
    torch.manual_seed(seed)
    model = build_model(config.depth, config.base_width, config.norm, config.projection_dim,
                        config.hidden_dim)
    model.to(memory_format=torch.channels_last_3d)  # ~1.2-1.5x faster 3D convolutions on CPU
    objective = Objective(config.methods[method], config.temperature, config.sigma_years,
                          config.mapping, model.encoder.feature_dim)
    return model, objective


def pretrain(
    config: PretrainConfig,
    method: str,
    seed: int,
    data: TrainData,
    out_dir: str | Path,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    device: str | torch.device = "auto",
    bf16: bool | None = None,
) -> list[dict]:
    """Train (or resume) one method with one seed; write checkpoint, curves and summary.

    Under ``torchrun`` every rank calls this with the same arguments (module docstring).

    Args:
        config: the ``pretrain`` section; method: a key of ``config.methods``; seed: run seed.
        data: :func:`load_train_data` output.
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
    config = config.for_method(method)
    if data.normalizer.channels != tuple(config.channels):
        raise ValueError(
            f"method {method!r} uses descriptors {list(config.channels)} but the train data were loaded with "
            f"{list(data.normalizer.channels)}: load them with config.for_method({method!r})"
        )
    torch.set_num_threads(resolve_threads(config.num_threads))
    wanted = resolve_device(device)
    ctx = distributed.init_from_env(backend="nccl" if wanted.type == "cuda" else "gloo",
                                    device=None if wanted == torch.device("cuda") else wanted)
    device = ctx.device
    cuda = device.type == "cuda"
    bf16 = cuda if bf16 is None else bf16
    torch.backends.cudnn.benchmark = cuda or torch.backends.cudnn.benchmark
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    method_cfg = config.methods[method]
    recipe = config.recipe(method, seed)
    model, objective = _build(config, method, seed)
    model.to(device)
    objective.to(device)
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                 **({"fused": True} if cuda else {}))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_epochs, config.lr_gamma)
    age_mean, age_std = float(data.age.mean()), float(data.age.std())
    epochs = config.epochs if method_cfg.objective != "random" else 0
    history: list[dict] = []
    start = _resume(out_dir / CHECKPOINT_FILE, recipe, data.fingerprint, model, objective,
                    optimizer, scheduler, history)
    ctx.barrier()  # every rank has read the checkpoint before rank 0 rewrites it
    curves = live.open_live(out_dir) if ctx.is_main else None  # rank 0 logs (dvclive)
    if curves is not None:
        live.log_history(curves, history)  # the epochs restored from the checkpoint, if any
    net = distributed.wrap_model(model, ctx, find_unused_parameters=method_cfg.objective == "supervised")
    augment = make_augmentation(list(method_cfg.augmentation))
    n, bs = len(data.age), config.batch_size
    n_batches = n // bs  # drop_last: batch norm and the kernels want full batches
    if epochs and n_batches == 0:
        raise ValueError(f"train split has {n} subjects, fewer than batch_size {bs}")
    if bs % ctx.world_size:
        raise ValueError(f"batch_size {bs} (the global batch) does not split over {ctx.world_size} ranks")
    batches = _Batches(data.images, device, bs)
    age_all, desc_all = data.age.to(device), data.descriptors.to(device)
    sync_steps = _SYNC_STEPS if cuda else 1  # on the CPU a read costs nothing: check every step

    def save(epoch: int) -> None:
        if not ctx.is_main:
            return
        save_checkpoint(_fresh({
            "model": model.state_dict(),
            "config": {**model_config(model), **recipe},
            "normalizer": data.normalizer.to_dict(),
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "objective": objective.state_dict(),
            "age_scale": [age_mean, age_std],
            # wall-clock times stay out: a rerun must write the same bytes (DVC then skips
            # everything downstream of an unchanged checkpoint)
            "history": [{k: v for k, v in row.items() if k != "seconds"} for row in history],
            "fingerprint": data.fingerprint,
            "complete": epoch >= epochs,
        }), out_dir / CHECKPOINT_FILE)

    if start == 0 and epochs == 0:
        save(0)
    bar = tqdm(range(start, epochs), desc=f"pretrain {method} s{seed}", initial=start, total=epochs,
               disable=not (progress and ctx.is_main))
    for epoch in bar:
        net.train()
        tic = time.perf_counter()
        generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        order = torch.randperm(n, generator=generator)
        sums, keys, checked = None, ["loss"], 0
        for step in range(n_batches):
            batch = order[step * bs:(step + 1) * bs]  # the global batch, same on every rank
            idx = distributed.shard_batch(batch, ctx)  # (b,) this rank's rows
            if method_cfg.identical_views:
                x = batches(idx)  # (b, 1, X, Y, Z)
            else:
                views = _views(batches(batch), augment, generator)  # (B, 2, 1, X, Y, Z), all ranks alike
                x = distributed.shard_batch(views, ctx).flatten(0, 1)  # (2b, 1, X, Y, Z)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                feats, proj = net(x.contiguous(memory_format=torch.channels_last_3d))  # (b or 2b, F), (., d)
            feats = feats.float().view(len(idx), -1, feats.shape[-1])  # (b, 1 or 2, F)
            proj = proj.float().view(len(idx), -1, proj.shape[-1])  # (b, 1 or 2, d)
            if method_cfg.identical_views:
                feats, proj = feats.expand(-1, 2, -1), proj.expand(-1, 2, -1)  # (b, 2, F), (b, 2, d)
            idx = idx.to(device)
            age = age_all[idx]
            loss, parts = distributed.global_batch_loss(
                objective, feats, proj, age, (age - age_mean) / age_std, desc_all[idx])
            # ^ the loss of the whole global batch, identical on every rank
            values = torch.stack([loss.detach(), *parts.values()]).double()  # float64: exact sums
            sums, keys = (values if sums is None else sums + values), ["loss", *parts]
            if (step + 1) % sync_steps == 0 or step + 1 == n_batches:
                total = sums[0].item()
                if not math.isfinite(total):
                    where = f"step {step + 1}" if step == checked else f"steps {checked + 1}-{step + 1}"
                    raise FloatingPointError(
                        f"pretrain {method} seed {seed}: loss is {total} at epoch {epoch + 1}, "
                        f"{where}; lower pretrain.learning_rate or check the inputs")
                checked = step + 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        means = [v / n_batches for v in sums.tolist()] if sums is not None else []
        row = {"epoch": epoch + 1, **dict(zip(keys, means)),
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - tic}
        if method_cfg.objective == "supervised":
            row["train_mae_years"] = row["loss"] * age_std
        scheduler.step()
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        history.append(row)
        save(epoch + 1)
        ctx.barrier()  # the others wait for rank 0's checkpoint
        if ctx.is_main:
            live.log_epoch(curves, row)
            logger.info("%s s%d epoch %d/%d loss %.4f (%.1fs)", method, seed, epoch + 1, epochs,
                        row["loss"], row["seconds"])
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    if ctx.is_main:
        live.finish(curves, run_summary(history))
    ctx.barrier()
    return history


def _fresh(obj):
    """A copy whose plain values are new objects shared with nothing (tensors kept as they are).

    Pickle writes an object seen twice as a back-reference, so which floats the optimiser and
    the scheduler happen to share would change the bytes of a checkpoint; after a resume they share
    different ones. Rebuilding every scalar (tuples become lists, as JSON would make them) makes
    an interrupted-and-resumed run write the same bytes as an uninterrupted one. Device tensors
    are copied to the CPU (CPU tensors are kept as they are).
    """
    if isinstance(obj, torch.Tensor):
        return obj if obj.device.type == "cpu" else obj.cpu()  # GPU runs write CPU checkpoints
    if isinstance(obj, dict):
        return {_fresh(k): _fresh(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_fresh(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return json.loads(json.dumps(obj))
    raise TypeError(f"unexpected {type(obj).__name__} in a checkpoint")


def _resume(path: Path, recipe: dict, fingerprint: str, model, objective, optimizer, scheduler,
            history: list[dict]) -> int:
    """Restore a checkpoint of the same run; return the epoch to start from (0: fresh)."""
    if not path.exists():
        return 0
    state = safe_load(path)
    same = {k: v for k, v in state.get("config", {}).items() if k in recipe} == recipe
    if not same or state.get("fingerprint") != fingerprint:
        logger.warning("%s: from another configuration or data; training from scratch", path)
        return 0
    load_state_dict_checked(model, state["model"], str(path))
    objective.load_state_dict(state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    history.extend({**row, "seconds": math.nan} for row in state.get("history", []))  # not stored
    logger.info("%s: resuming after epoch %d", path, state["epoch"])
    return int(state["epoch"])


def run_summary(history: list[dict]) -> dict:
    """What a run adds to its ``dvclive/metrics.json``: epochs, final loss, timed training seconds, threads.

    ``threads`` (torch's intra-op threads of this run) is provenance: the checkpoint's bytes depend
    on it through float rounding (:mod:`anatcl_core.cores`).
    """
    last = history[-1] if history else {}
    seconds = [r["seconds"] for r in history if math.isfinite(r.get("seconds", math.nan))]
    return {"epochs": len(history), "final_loss": last.get("loss", math.nan),
            "train_seconds": sum(seconds), "timed_epochs": len(seconds), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> list[dict]:
    """``python -m anatcl_core.train`` (also under ``torchrun``): one method, one seed, outside DVC.

    Reads ``<data-dir>/openbhb`` and the ``pretrain`` section of ``--params``; writes what
    :func:`pretrain` writes to ``--out-dir`` (default ``outputs/pretrain/<method>-s<seed>``, the
    DVC stage's folder, so ``dvc commit`` can adopt a run made by hand).
    """
    import argparse

    from anatcl_core.config import load_section

    parser = argparse.ArgumentParser(prog="python -m anatcl_core.train", description=main.__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (section pretrain)")
    parser.add_argument("--method", required=True, help="a key of pretrain.methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data", help="folder holding openbhb/")
    parser.add_argument("--out-dir", default=None, help="default outputs/pretrain/<method>-s<seed>")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--no-bf16", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from anatcl_core.arguments import ArgumentError, check_device

    try:
        check_device(args.device)
    except ValueError as err:
        raise ArgumentError(f"python -m anatcl_core.train: --device = {args.device!r}: {err}") from None
    config = load_section(args.params, "pretrain", PretrainConfig).for_method(args.method)
    out_dir = args.out_dir or f"outputs/pretrain/{args.method}-s{args.seed}"
    ctx = distributed.init_from_env(backend="nccl" if resolve_device(args.device).type == "cuda" else "gloo",
                                    device=None if args.device in ("auto", "cuda") else args.device)
    try:
        data = load_train_data(Path(args.data_dir) / "openbhb", config, progress=ctx.is_main and not args.no_progress)
        return pretrain(config, args.method, args.seed, data, out_dir, progress=not args.no_progress,
                        device=args.device, bf16=False if args.no_bf16 else None)
    finally:
        ctx.cleanup()


if __name__ == "__main__":
    main()
