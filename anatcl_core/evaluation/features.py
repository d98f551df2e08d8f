"""Frozen encoder features: a batched, inference-only encoder over stacked images.

Downstream use of a pretrained model is its *encoder* output, ``feature_dim`` wide (512 for the
paper's ResNet-18; the projection head is dropped, REFERENCE §1.3 and §4), computed under
``torch.inference_mode`` in evaluation mode (batch-norm running statistics), channels-last (~1.5x
faster 3D convolutions on CPU).
The images come from the cohort stage's arrays (:mod:`anatcl_core.data.arrays`).
"""

from __future__ import annotations

import logging
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
                     progress: bool = True, desc: str = "features") -> np.ndarray:
    """Encoder outputs of a stack of images.

    Args:
        encoder: maps ``(B, 1, X, Y, Z)`` to ``(B, F)``; put in eval mode here.
        images: ``(N, 1, X, Y, Z)`` float array or tensor (float16 is upcast per batch).
        batch_size: images per forward pass.

    Returns:
        ``(N, F)`` float32 features.
    """
    if images.ndim != 5:
        raise ValueError(f"images must be (N, 1, X, Y, Z), got shape {tuple(images.shape)}")
    encoder.eval().to(memory_format=torch.channels_last_3d)
    device = next(encoder.parameters()).device
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
            batch = torch.as_tensor(np.ascontiguousarray(images[start:start + batch_size]))
            batch = batch.to(device, torch.float32).contiguous(memory_format=torch.channels_last_3d)
            out.append(encoder(batch).float().cpu().numpy())  # (b, F)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
