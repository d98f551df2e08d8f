"""Where a pretraining run computes: the device policy, the process group, the staged train split.

GPUs (``device="cuda"`` or ``"auto"``): bf16 autocast for the network (the loss in float32),
channels-last 3D, cuDNN autotuning, fused Adam, losses read every :data:`SYNC_STEPS` steps. The
train split is copied once to the device in its stored dtype when it fits in half the free memory,
else it stays on the host and each batch is gathered into one of two pinned buffers and copied
without blocking (:class:`Batches`); either way it becomes float32 on the device. On the CPU every
one of these is off, and the arithmetic is the one of a plain loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from anatcl_core.cores import resolve_threads
from anatcl_core.train import distributed

logger = logging.getLogger(__name__)

#: On a GPU the summed losses are read (a host sync, and the NaN check) every this many steps.
SYNC_STEPS = 25


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


@dataclass(frozen=True)
class Placement:
    """The device policy of one run on this process.

    Attributes:
        ctx: this rank in the job (:class:`~anatcl_core.train.distributed.DistContext`).
        device: where this rank computes. bf16: autocast the network in bfloat16.
        sync_steps: steps between reads of the summed loss (1 on the CPU: a read costs nothing).
    """

    ctx: distributed.DistContext
    device: torch.device
    bf16: bool
    sync_steps: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def place(num_threads: int | str, device: str | torch.device = "auto", bf16: bool | None = None) -> Placement:
    """Set torch's threads, join the process group (``torchrun``) and choose this rank's device.

    Args:
        num_threads: ``pretrain.num_threads`` (``"auto"`` or a count).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``; under torchrun a bare ``cuda`` means ``cuda:LOCAL_RANK``.
        bf16: bf16 autocast of the network; None: on for CUDA, off on the CPU.
    """
    torch.set_num_threads(resolve_threads(num_threads))
    wanted = resolve_device(device)
    ctx = distributed.init_from_env(backend="nccl" if wanted.type == "cuda" else "gloo",
                                    device=None if wanted == torch.device("cuda") else wanted)
    cuda = ctx.device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda or torch.backends.cudnn.benchmark
    return Placement(ctx, ctx.device, cuda if bf16 is None else bf16, SYNC_STEPS if cuda else 1)


class Batches:
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
        """The rows ``idx`` ``(b,)`` as float32 ``(b, 1, X, Y, Z)`` on the device."""
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
