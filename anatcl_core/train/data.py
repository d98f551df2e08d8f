"""The pretraining train split in memory, read once from the cohort stage's arrays, with the descriptor
normaliser fitted on it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from anatcl_core.config import ConfigError
from anatcl_core.contrastive.kernels import DescriptorNormalizer
from anatcl_core.data import arrays, io
from anatcl_core.model.run import DataSpec


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


def load_train_data(arrays_dir: str | Path, config: DataSpec, progress: bool = True) -> TrainData:
    """The train split of the cohort stage's pretraining arrays, in memory, and the normaliser fitted on it.

    Args:
        arrays_dir: the cohort stage's arrays (``outputs/cohort/arrays``, :mod:`anatcl_core.data.arrays`).
        config: the run's data keys (``Run.data``): ``crop`` and ``image_dtype`` of the images,
            ``channels`` of the descriptors.

    The returned fingerprint hashes the images, tables and ages read, and the training code.

    Raises:
        ConfigError: ``pretrain.crop`` does not fit the arrays' grid.
        FileNotFoundError: no arrays (the cohort stage has not run, or its validation failed).
    """
    cohort = arrays.load_cohort(arrays_dir, "openbhb")  # uncropped memory map
    try:  # the crop must fit the data's grid: say so before reading every image
        target = io.resolve_crop(config.crop, cohort.images.shape[-3:])
    except ValueError as err:
        path = arrays.files(arrays_dir, "openbhb")["images"]
        raise ConfigError(f"pretrain.crop = {config.crop!r}: {err} ({path})") from None
    train = np.flatnonzero(cohort.table["split"].to_numpy() == "train")
    if not len(train):
        raise ValueError(f"{arrays.files(arrays_dir, 'openbhb')['table']}: no subject in split 'train'")
    first = io.center_crop(cohort.images[train[0]], target)  # (1, X, Y, Z)
    images = np.empty((len(train), *first.shape), dtype=np.dtype(config.image_dtype))
    for row, index in enumerate(tqdm(train, desc="load images", disable=not progress, leave=False)):
        images[row] = io.center_crop(cohort.images[index], target)
    tables = cohort.descriptors[train]  # (N, 7, R)
    normalizer = DescriptorNormalizer().fit(tables, config.channels)
    age = cohort.table["age"].to_numpy(np.float32)[train]
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
        participant_ids=cohort.table["participant_id"].astype(str).to_numpy()[train].tolist(),
    )
