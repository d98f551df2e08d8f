"""Augmentations for two-view contrastive training, as pure functions of an explicit generator.

Each augmentation maps an image ``(1, X, Y, Z)`` and a ``torch.Generator`` to a new image of the same
shape; all randomness comes from the generator, so a run is reproducible from its seed whatever the
worker order. Upstream AnatCL trains with none (the two views are identical copies, REFERENCE §1.4);
the others follow y-Aware's set (Dufumier et al., MICCAI 2021): cutout, random crop + resize, flip,
Gaussian noise, Gaussian blur.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, high: int) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(0, high + 1, (), generator=generator))


def identity(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """No augmentation (upstream's setting)."""
    return image


def cutout(image: torch.Tensor, generator: torch.Generator, fraction: float = 0.25) -> torch.Tensor:
    """Zero one random box whose sides are ``fraction`` of the image's (at least one voxel)."""
    out = image.clone()
    box = []
    for n in image.shape[-3:]:
        size = max(1, int(round(n * fraction)))
        start = _randint(generator, n - size)
        box.append(slice(start, start + size))
    out[(Ellipsis, *box)] = 0
    return out


def random_crop(image: torch.Tensor, generator: torch.Generator, scale: float = 0.8) -> torch.Tensor:
    """Crop a random box of sides ``scale`` x the image's and resize it back (trilinear)."""
    shape = image.shape[-3:]
    box = []
    for n in shape:
        size = max(2, int(round(n * scale)))
        start = _randint(generator, n - size)
        box.append(slice(start, start + size))
    patch = image[(Ellipsis, *box)]  # (1, x, y, z)
    return F.interpolate(patch[None], size=tuple(shape), mode="trilinear", align_corners=True)[0]


def flip(
    image: torch.Tensor, generator: torch.Generator, axes: Sequence[int] = (0,), probability: float = 0.5
) -> torch.Tensor:
    """Flip each spatial axis in ``axes`` (0 = left-right) with ``probability``."""
    dims = [-3 + a for a in axes if float(torch.rand((), generator=generator)) < probability]
    return torch.flip(image, dims=dims) if dims else image


def gaussian_noise(image: torch.Tensor, generator: torch.Generator, relative_std: float = 0.1) -> torch.Tensor:
    """Add N(0, sigma^2) noise, sigma = ``relative_std`` x the image's standard deviation."""
    sigma = relative_std * float(image.std())
    noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
    return image + sigma * noise.to(image.device)


def gaussian_blur(
    image: torch.Tensor, generator: torch.Generator, sigma_voxels: tuple[float, float] = (0.5, 1.5)
) -> torch.Tensor:
    """Separable Gaussian blur, sigma drawn uniformly in ``sigma_voxels`` (voxels), zero padding."""
    sigma = _uniform(generator, *sigma_voxels)
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # (2r+1,)
    out = image[None]  # (1, 1, X, Y, Z)
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        padding = [0, 0, 0]
        padding[axis] = radius
        out = F.conv3d(out, kernel.view(shape), padding=tuple(padding))
    return out[0]


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": identity,
    "cutout": cutout,
    "crop": random_crop,
    "flip": flip,
    "noise": gaussian_noise,
    "blur": gaussian_blur,
}


def _compose(steps: Sequence[Augmentation], image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    for step in steps:
        image = step(image, generator)
    return image


def make_augmentation(name: str | Sequence[str], **kwargs) -> Augmentation:
    """Augmentation by name, or the composition of several names applied in order.

    Args:
        name: one of ``none``, ``cutout``, ``crop``, ``flip``, ``noise``, ``blur``, or a list.
        kwargs: parameters of a single named augmentation (e.g. ``fraction=0.3`` for cutout).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    names = [name] if isinstance(name, str) else list(name)
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown or not names:
        raise ValueError(f"unknown augmentation(s) {unknown or names}; expected {list(AUGMENTATIONS)}")
    if len(names) == 1:
        return partial(AUGMENTATIONS[names[0]], **kwargs) if kwargs else AUGMENTATIONS[names[0]]
    if kwargs:
        raise ValueError("keyword parameters apply to a single augmentation, not a list")
    return partial(_compose, [AUGMENTATIONS[n] for n in names])


class TwoViews(Dataset):
    """Wrap a dataset whose items hold ``image (1, X, Y, Z)``: ``image`` becomes ``(2, 1, X, Y, Z)``.

    View ``v`` of item ``i`` in epoch ``e`` is ``augmentation(image, Generator(seed(seed, e, i, v)))``,
    so the views depend only on (seed, epoch, index), not on the worker that draws them. Call
    :meth:`set_epoch` at the start of each epoch for fresh views.
    """

    def __init__(self, dataset: Dataset, augmentation: Augmentation | str | Sequence[str] = "none", seed: int = 0):
        self.dataset = dataset
        self.augmentation = augmentation if callable(augmentation) else make_augmentation(augmentation)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        views = []
        for view in range(2):
            generator = torch.Generator().manual_seed(
                (((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index) * 2 + view) % 2**63
            )
            views.append(self.augmentation(item["image"], generator))
        item["image"] = torch.stack(views)  # (2, 1, X, Y, Z)
        return item
