"""A training-free 3D CNN reference row ("un-CNN"), written from its published description.

Encin et al., bioRxiv 2026.06.07.730652 (REFERENCE §6), as BrainFMBench (epics-lab/BrainFMBench)
probes it: on real lifespan cohorts these random, never-trained features beat both AnatCL
checkpoints on age (NKI MAE 5.11 vs 6.19-6.26 y) and sex (balanced accuracy 0.857 vs 0.738-0.765).

- **Input, 3 channels** per grey-matter map ``x`` on the project's grid (the cohort stage's
  arrays, uncropped): ``x`` robust-scaled inside the brain (``(x - median) / IQR`` over the voxels
  where ``x > 0``, 0 outside), its 3^3 median filter and its Sobel gradient magnitude.
- **Four blocks** of ``widths`` channels (published 64/128/256/512): two 3^3 convolutions each,
  GroupNorm with 8 groups and ReLU after each; blocks 2-4 depthwise-separable (a 3^3 depthwise
  convolution, then a 1^3 pointwise one); 2^3 average pooling after every block.
- **Read-out** per block (its output before the pooling): the 2^3 adaptive mean of every channel
  (``8 w`` numbers) and the off-diagonal covariance over voxels of its first ``min(32, w)``
  channels (upper triangle, ``k (k - 1) / 2``), concatenated over blocks:
  :func:`feature_count` gives 7,680 + 1,984 = 9,664 at the published widths.
- **Weights** Kaiming-normal (fan-in, ReLU gain) from a seeded generator, GroupNorm affine at its
  identity; nothing is ever trained.

Float32, a fixed batch shape, one thread: the features are the same bytes on every run, whatever
the stage's thread count and the cohort's size (:func:`uncnn_features`, ``tests/test_uncnn.py``).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy import ndimage
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: Published constants (Encin et al. 2026): GroupNorm groups, covariance channels per block.
GROUPS = 8
COV_CHANNELS = 32
#: Maps per forward pass (:func:`uncnn_features`).
BATCH = 4
#: Published widths; params.yaml ``reference.uncnn_widths`` chooses the run's.
PUBLISHED_WIDTHS = (64, 128, 256, 512)


def feature_count(widths: tuple[int, ...]) -> int:
    """Features of an un-CNN: ``sum_b 8 w_b + k_b (k_b - 1) / 2`` with ``k_b = min(32, w_b)``."""
    return sum(8 * w + min(COV_CHANNELS, w) * (min(COV_CHANNELS, w) - 1) // 2 for w in widths)


def check_widths(widths: tuple[int, ...], name: str = "widths") -> tuple[int, ...]:
    """``widths`` as a tuple, each a positive multiple of :data:`GROUPS`.

    Raises:
        ValueError: naming ``name`` otherwise.
    """
    widths = tuple(int(w) for w in widths)
    if not widths or any(w < GROUPS or w % GROUPS for w in widths):
        raise ValueError(f"{name}: expected one or more channel counts, each a multiple of {GROUPS} "
                         f"(GroupNorm with {GROUPS} groups), got {list(widths)}")
    return widths


def _conv(c_in: int, c_out: int, separable: bool) -> nn.Module:
    """A 3^3 convolution, dense or depthwise-separable (3^3 depthwise, then 1^3 pointwise)."""
    if not separable:
        return nn.Conv3d(c_in, c_out, 3, padding=1, bias=False)
    return nn.Sequential(nn.Conv3d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
                         nn.Conv3d(c_in, c_out, 1, bias=False))


class UnCNN(nn.Module):
    """The un-CNN's blocks and read-out (module docstring); input ``(B, 3, X, Y, Z)``.

    Args:
        widths: channels of each block (multiples of 8); seed: the weights' generator seed.
    """

    def __init__(self, widths: tuple[int, ...] = PUBLISHED_WIDTHS, seed: int = 0):
        super().__init__()
        self.widths = check_widths(widths)
        blocks, c_in = [], 3
        for i, width in enumerate(self.widths):
            separable = i > 0
            blocks.append(nn.Sequential(
                _conv(c_in, width, separable), nn.GroupNorm(GROUPS, width), nn.ReLU(inplace=True),
                _conv(width, width, separable), nn.GroupNorm(GROUPS, width), nn.ReLU(inplace=True)))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        generator = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
        self.eval().requires_grad_(False)

    @property
    def feature_dim(self) -> int:
        return feature_count(self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, X, Y, Z)`` -> ``(B, feature_dim)``: every block's means, then every block's covariances."""
        means, covariances = [], []
        for block in self.blocks:
            x = block(x)  # (B, w, X, Y, Z)
            means.append(F.adaptive_avg_pool3d(x, 2).flatten(1))  # (B, 8 w)
            k = min(COV_CHANNELS, x.shape[1])
            v = x[:, :k].flatten(2)  # (B, k, V)
            v = v - v.mean(-1, keepdim=True)
            cov = v @ v.transpose(1, 2) / max(v.shape[-1] - 1, 1)  # (B, k, k)
            i, j = torch.triu_indices(k, k, offset=1)
            covariances.append(cov[:, i, j])  # (B, k (k - 1) / 2)
            x = F.avg_pool3d(x, 2)  # (B, w, X/2, Y/2, Z/2)
        return torch.cat(means + covariances, 1)


def input_channels(volume: np.ndarray) -> np.ndarray:
    """The three input channels of one grey-matter map.

    Args:
        volume: ``(X, Y, Z)`` map on the project's grid.

    Returns:
        ``(3, X, Y, Z)`` float32: the map robust-scaled inside the brain (``(x - median) / IQR`` over
        the voxels ``x > 0``, 0 elsewhere), its 3^3 median filter and its Sobel gradient magnitude
        (both with zero padding).

    Raises:
        ValueError: a map with no voxel above 0.
    """
    volume = np.asarray(volume, np.float32)
    mask = volume > 0
    if not mask.any():
        raise ValueError("un-CNN: a grey-matter map has no voxel above 0 (empty brain mask)")
    q1, q2, q3 = np.percentile(volume[mask], [25, 50, 75])
    scaled = np.zeros_like(volume)
    scaled[mask] = (volume[mask] - q2) / (q3 - q1 if q3 > q1 else 1.0)
    smoothed = ndimage.median_filter(scaled, size=3, mode="constant")
    sobel = np.sqrt(sum(np.square(ndimage.sobel(scaled, axis=a, mode="constant")) for a in range(3)))
    return np.stack([scaled, smoothed, sobel.astype(np.float32)])


def uncnn_features(images: np.ndarray, widths: tuple[int, ...], seed: int, progress: bool = True,
                   desc: str = "un-CNN") -> np.ndarray:
    """un-CNN features of a stack of grey-matter maps, :data:`BATCH` maps per pass, on one thread.

    Every pass holds exactly :data:`BATCH` maps (the last one padded with copies of its last map):
    PyTorch runs oneDNN's convolution only from two maps up (a single map took its ~5x slower
    fallback), and one batch shape and one thread give one reduction order, so a map's features
    are the same bytes on every run, whatever its position, the cohort's size or the stage's threads.

    Args:
        images: ``(N, 1, X, Y, Z)`` (or ``(N, X, Y, Z)``) maps on the project's grid.
        widths: channels per block; seed: the weights' seed.

    Returns:
        ``(N, feature_count(widths))`` float32.
    """
    model = UnCNN(widths, seed).to(memory_format=torch.channels_last_3d)
    images = np.asarray(images) if not hasattr(images, "shape") else images
    if len(images.shape) == 5 and images.shape[1] == 1:
        images = images[:, 0]
    if len(images.shape) != 4:
        raise ValueError(f"un-CNN: images must be (N, 1, X, Y, Z), got shape {tuple(images.shape)}")
    out = np.zeros((len(images), model.feature_dim), np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1), torch.inference_mode():
            for start in tqdm(range(0, len(images), BATCH), desc=desc, disable=not progress, leave=False):
                chosen = [min(start + b, len(images) - 1) for b in range(BATCH)]  # padded with the last map
                x = torch.from_numpy(np.stack([input_channels(images[n]) for n in chosen]))  # (BATCH, 3, X, Y, Z)
                got = model(x.contiguous(memory_format=torch.channels_last_3d)).numpy()  # (BATCH, F)
                out[start:start + BATCH] = got[:len(images) - start]
    finally:
        torch.set_num_threads(threads)
    return out
