"""Data-parallel pretraining under ``torchrun``: the loss sees the *global* batch on every rank.

A contrastive loss couples every pair of the batch, so splitting the batch over W processes must
not split the loss: each rank encodes its shard, the projections are gathered **with gradients**
and the kernel inputs (ages, normalised descriptors, subject labels) without, and every rank
evaluates the same loss on the same global batch -- negatives span all ranks. With
:func:`gather_with_grad` and DDP's gradient averaging the parameter gradients equal those of one
process on the whole batch (derivation in :class:`_GatherWithGrad`; tested to 1e-5 on 2 gloo
processes). BatchNorm is the exception: its statistics are per rank unless ``sync_batchnorm``
(CUDA only) -- see :func:`wrap_model`.

How the trainer uses it (``torchrun --nproc_per_node 2 -m anatcl_core.cli.main ...``; multi-node:
``torchrun --nnodes N --node_rank i --master_addr HOST --master_port P ...``)::

    ctx = distributed.init_from_env()              # no-op context without torchrun
    model = distributed.wrap_model(model, ctx)     # DDP when world_size > 1
    for epoch in ...:
        order = torch.randperm(n, generator=g)     # same seed on every rank -> same order
        for step in ...:
            idx = distributed.shard_batch(order[step * bs:(step + 1) * bs], ctx)  # bs = global
            feats, proj = model(x[idx])            # (b, F), (b, d) with b = bs / world_size
            loss, parts = distributed.global_batch_loss(
                objective, feats, proj, age[idx], age_z[idx], desc[idx])  # loss of all bs
            loss.backward(); optimizer.step()      # gradients = single-process gradients
        if ctx.is_main: save_checkpoint(...); logger.info(...)
    ctx.cleanup()
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)

#: Environment variables ``torchrun`` sets for every process (``env://`` rendezvous).
TORCHRUN_ENV: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job; a single process is ``rank 0 of 1``.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes (1 without ``torchrun``).
        local_rank: rank on this node (selects the GPU).
        device: the device this rank computes on.
        backend: ``"nccl"``, ``"gloo"`` or None (single process, nothing initialised).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes checkpoints, curves and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True with more than one rank (DDP wraps the model, the loss gathers the batch)."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if _active():
            dist.barrier()

    def cleanup(self) -> None:
        """Destroy the process group if this process has one (safe to call twice)."""
        if _active():
            dist.destroy_process_group()


def _active() -> bool:
    """Whether a process group of more than one rank is initialised (collectives must run)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str) -> int:
    """A torchrun environment variable as an integer, or a ValueError naming it."""
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_from_env(backend: str | None = None, device: str | torch.device | None = None,
                  timeout_s: float = 1800.0) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without
    ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and the context is rank 0 of
    1. A process group that already exists is reused.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default nccl when CUDA is available, else gloo.
        device: this rank's device; default ``cuda:LOCAL_RANK`` when CUDA is available, else cpu.
        timeout_s: collective timeout in seconds (a dead rank fails the others after this).

    Returns:
        The :class:`DistContext` of this process.

    Raises:
        ValueError: a torchrun variable is missing or not an integer, or ranks are inconsistent.
    """
    cuda = torch.cuda.is_available()
    if "WORLD_SIZE" not in os.environ or _env_int("WORLD_SIZE") == 1:
        return DistContext(device=torch.device(device or ("cuda" if cuda else "cpu")))
    missing = [name for name in TORCHRUN_ENV if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE is set but {', '.join(missing)} missing: launch with torchrun")
    rank, world, local = _env_int("RANK"), _env_int("WORLD_SIZE"), _env_int("LOCAL_RANK")
    if not (0 <= rank < world and 0 <= local <= rank):
        raise ValueError(f"inconsistent torchrun ranks: RANK={rank} LOCAL_RANK={local} WORLD_SIZE={world}")
    backend = backend or ("nccl" if cuda else "gloo")
    device = torch.device(device or (f"cuda:{local}" if cuda else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    logger.info("rank %d/%d (local %d) on %s, backend %s", rank, world, local, device, backend)
    return DistContext(rank, world, local, device, backend)


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward returns this rank's slice of the summed gradient.

    Derivation. Rank r holds ``z_r = f(x_r; theta)`` (b rows) and builds
    ``Z = [z_0; ...; z_{W-1}]``; every rank evaluates the same global loss ``L(Z)``. One process
    on the whole batch would get ``dL/dtheta = sum_r (dL/dz_r)(dz_r/dtheta)``. Rank r's autograd
    only reaches its own ``dz_r/dtheta``, and DDP sets ``theta.grad = (1/W) sum_r g_r``. So rank r
    must backpropagate ``W * dL/dz_r`` into its encoder. Backward therefore all-reduces (sums) the
    incoming ``dL^(r')/dZ`` over ranks r' and keeps slice r: since every rank computed the same L,
    the sum is ``W * dL/dz_r``, and DDP's average ``(1/W) sum_r W (dL/dz_r)(dz_r/dtheta)`` is the
    single-process gradient. (If ranks computed different losses ``L_r'``, rank r gets
    ``d(sum_r' L_r')/dz_r``, the gradient of their sum -- the usual convention.)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)  # W x (b, ...)
        return torch.cat(parts, dim=0)  # (W*b, ...)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # (W*b, ...); all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows]  # (b, ...)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank in rank order, differentiably.

    Args:
        x: ``(b, ...)``, the same shape on every rank (equal shards: ``drop_last``).

    Returns:
        ``(W*b, ...)``; ``x`` itself in a single process. Gradients: :class:`_GatherWithGrad`.
    """
    if not _active():
        return x
    return _GatherWithGrad.apply(x.contiguous())


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (kernel inputs: ages, descriptors, labels) from every rank, detached.

    Args:
        x: ``(b, ...)``, the same shape and dtype on every rank.

    Returns:
        ``(W*b, ...)`` in rank order; ``x`` itself in a single process.
    """
    if not _active():
        return x
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def gather_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Gather each tensor over ranks: with gradients if it requires grad, else detached; None stays None."""
    return tuple(None if t is None else gather_with_grad(t) if t.requires_grad else gather_no_grad(t)
                 for t in tensors)


def global_batch_loss(loss_fn: Callable[..., Any], *tensors: torch.Tensor | None, **kwargs: Any) -> Any:
    """Evaluate ``loss_fn`` on the global batch: ``loss_fn(*gather_batch(*tensors), **kwargs)``.

    Embeddings (which require grad) are gathered with :func:`gather_with_grad`, kernel inputs
    without; every rank returns the same loss. Works with :func:`~anatcl_core.contrastive.losses.weighted_infonce`
    (pass the *inputs* of the kernel, e.g. ``lambda z, age: weighted_infonce(z, age_kernel(age, sigma_years))``),
    :class:`~anatcl_core.contrastive.losses.AnatCLLoss` ``(z (b,V,d), age (b,), desc (b,C,R))`` and the
    trainer's ``Objective``. Kernels must be computed *after* the gather -- a kernel block built
    per rank would miss the cross-rank pairs.

    Args:
        loss_fn: callable taking the gathered tensors positionally.
        *tensors: per-rank ``(b, ...)`` tensors (or None), equal shapes on every rank.
        **kwargs: passed through unchanged.

    Returns:
        Whatever ``loss_fn`` returns on the ``(W*b, ...)`` tensors.
    """
    return loss_fn(*gather_batch(*tensors), **kwargs)


def shard_batch(indices: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's contiguous slice of a global batch of indices (in-memory training).

    Every rank draws the same ``indices`` (same seed); rank r keeps rows ``[r*b, (r+1)*b)``, so the
    gathered batch is ``indices`` in its original order.

    Raises:
        ValueError: ``len(indices)`` is not a multiple of the world size.
    """
    n, world = len(indices), ctx.world_size
    if n % world:
        raise ValueError(f"global batch of {n} does not split over {world} ranks; "
                         f"use a batch_size divisible by the world size")
    b = n // world
    return indices[ctx.rank * b:(ctx.rank + 1) * b]


def wrap_model(model: nn.Module, ctx: DistContext, sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """Move ``model`` to ``ctx.device`` and wrap it in DDP when there is more than one rank.

    DDP broadcasts rank 0's weights at construction and averages gradients over ranks in
    ``backward``. BatchNorm layers normalise with *per-rank* batch statistics (b, not W*b
    subjects) unless ``sync_batchnorm`` converts them to ``SyncBatchNorm`` (CUDA/nccl only); the
    exact equivalence with one process therefore holds for models without batch norm
    (``norm="none" | "group" | "instance"``). Save the ``model`` passed in (not the wrapper) so
    checkpoint keys carry no ``module.`` prefix.

    Args:
        model: the module to train.
        ctx: from :func:`init_from_env`.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm.
        find_unused_parameters: needed when some parameters get no gradient (e.g. the projection
            head under the supervised objective).

    Returns:
        The DDP-wrapped model, or ``model`` (on ``ctx.device``) in a single process.
    """
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    if sync_batchnorm:
        if ctx.device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA devices (SyncBatchNorm has no CPU kernel)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)
