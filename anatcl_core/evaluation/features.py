"""Frozen encoder features: a batched, inference-only encoder over stacked images.

Downstream use of a pretrained model is its *encoder* output, ``feature_dim`` wide (512 for the
paper's ResNet-18; the projection head is dropped, REFERENCE §1.3 and §4), computed under
``torch.inference_mode`` in evaluation mode (batch-norm running statistics), channels-last (~1.5x
faster 3D convolutions on CPU).
The images come from the cohort stage's arrays (:mod:`anatcl_core.data.arrays`).

On the CPU the features do not depend on how many threads the stage has. Each batch runs on one
intra-op thread and the stage's threads take whole batches side by side (torch's kernels release the
GIL), so a batch is the same computation, and gives the same bytes, whether the stage has one core or
sixteen. Intra-op threading splits each convolution's work by the thread count instead: on a 2-core
AMD EPYC host (AVX-512) 1 and 2 threads gave features differing in the last bits, and with them
``probes.json`` (issue 24); on a 2-core Xeon they happened to agree. Whole batches side by side are also
no slower: 256 volumes of the default encoder took 13.4 s on 2 threads this way against 24.4 s with
two intra-op threads (same machine, same load).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from anatcl_core.model.run import Run
from anatcl_core.model.trained import load_trained

logger = logging.getLogger(__name__)


def load_encoder(checkpoint: str | Path) -> tuple[nn.Module, Run]:
    """The frozen encoder of a pretraining checkpoint (eval mode, no gradients) and the run that trained it.

    Raises:
        ValueError: the checkpoint holds no run record (not written by the trainer).
    """
    trained = load_trained(checkpoint)  # read once: weights and the run's record
    if trained.run is None:
        raise ValueError(f"{checkpoint}: no run record in its config (method, seed, recipe); "
                         "expected a checkpoint written by the pretrain stage")
    encoder = trained.model.encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    return encoder, trained.run


def extract_features(encoder: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 64,
                     progress: bool = True, desc: str = "features", workers: int | None = None) -> np.ndarray:
    """Encoder outputs of a stack of images, the same bytes for any number of CPU threads.

    Args:
        encoder: maps ``(B, 1, X, Y, Z)`` to ``(B, F)``; put in eval mode here.
        images: ``(N, 1, X, Y, Z)`` float array or tensor (float16 is upcast per batch).
        batch_size: images per forward pass.
        workers: on the CPU, batches computed side by side, each on one thread (module docstring);
            None: ``torch.get_num_threads()``, the stage's ``num_threads``. On a GPU batches run in turn.

    Returns:
        ``(N, F)`` float32 features.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be (N, 1, X, Y, Z), got shape {tuple(images.shape)}")
    encoder.eval().to(memory_format=torch.channels_last_3d)
    device = next(encoder.parameters()).device

    def forward(start: int) -> np.ndarray:
        with torch.inference_mode():  # thread-local: entered in the thread that computes
            batch = torch.as_tensor(np.ascontiguousarray(images[start:start + batch_size]))
            batch = batch.to(device, torch.float32).contiguous(memory_format=torch.channels_last_3d)
            return encoder(batch).float().cpu().numpy()  # (b, F)

    starts = range(0, len(images), batch_size)
    bar = dict(total=len(starts), desc=desc, disable=not progress, leave=False)
    if device.type != "cpu":
        out = [forward(start) for start in tqdm(starts, **bar)]
    else:
        out = _side_by_side(forward, starts, workers or torch.get_num_threads(), bar)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _side_by_side(forward, starts: range, workers: int, bar: dict) -> list[np.ndarray]:
    """``forward(start)`` for every batch, ``workers`` at a time, each on one intra-op thread, in order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # every thread's ops (each thread applies it lazily on its first op)
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            return list(tqdm(pool.map(forward, starts), **bar))
    finally:
        torch.set_num_threads(threads)
