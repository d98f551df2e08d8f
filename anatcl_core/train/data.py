"""The pretraining train split in memory, read once, with the descriptor normaliser fitted on it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anatcl_core.config import ConfigError
from anatcl_core.contrastive.kernels import DescriptorNormalizer
from anatcl_core.data import io
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.train.recipe import PretrainConfig

@dataclass
class TrainData:
    """The train split in memory: images ``(N, 1, X, Y, Z)``, ages ``(N,)``, descriptors ``(N, C, R)``."""

    images: torch.Tensor
    age: torch.Tensor
    descriptors: torch.Tensor
    normalizer: DescriptorNormalizer
    fingerprint: str
    participant_ids: list[str] = field(default_factory=list)


def code_fingerprint() -> str:
    """SHA-1 of the training code: ``python -m anatcl_core.train`` and every library module it imports.

    Part of a run's fingerprint: a checkpoint written by other training code is not resumed.
    """
    from anatcl_core.project import library_closure

    root = Path(__file__).resolve().parents[2]  # the repository: anatcl_core/<package>/<module>.py
    digest = hashlib.sha1()
    entry = Path(__file__).resolve().with_name("__main__.py")
    for path in [entry.relative_to(root).as_posix(), *library_closure(entry)]:
        digest.update(path.encode())
        digest.update((root / path).read_bytes())
    return digest.hexdigest()


def load_train_data(openbhb_root: str | Path, config: PretrainConfig, progress: bool = True) -> TrainData:
    """Read the pretraining train split once and fit the descriptor normaliser on it.

    The returned fingerprint hashes the images, tables and ages read, and the training code.
    """
    dataset = OpenBHB(openbhb_root, split="train", crop=config.crop, channels=config.channels)
    if len(dataset):  # the crop must fit the data's grid: say so before reading every image
        first = dataset.path(0)
        try:
            io.resolve_crop(config.crop, io.load_volume(first, mmap=True)[0].shape)
        except ValueError as err:
            raise ConfigError(f"pretrain.crop = {config.crop!r}: {err} ({first})") from None
    images = dataset.images(dtype=np.dtype(config.image_dtype).type, progress=progress)
    tables = dataset.descriptor_tables()  # (N, 7, R)
    normalizer = DescriptorNormalizer().fit(tables, config.channels)
    age = dataset.participants["age"].to_numpy(np.float32)
    digest = hashlib.sha1(images.tobytes())
    digest.update(tables.tobytes())
    digest.update(age.tobytes())
    digest.update(code_fingerprint().encode())
    return TrainData(
        images=torch.from_numpy(images),
        age=torch.from_numpy(age),
        descriptors=torch.as_tensor(normalizer.transform(tables), dtype=torch.float32),
        normalizer=normalizer,
        fingerprint=digest.hexdigest(),
        participant_ids=dataset.participants["participant_id"].astype(str).tolist(),
    )
