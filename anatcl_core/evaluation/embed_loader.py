"""Images decoded by worker processes for ``anatcl embed``: a ``torch.utils.data.DataLoader`` over files.

One process gunzips and crops ~425 NIfTI volumes/s while an H200 encodes ~3,355/s at width 16
(issue 21, measured on an H200): a single reader thread keeps the GPU at 7 % of its in-memory rate.
:func:`loader_batches` decodes with ``workers`` processes, each batch built by one worker, ``prefetch``
batches per worker ahead of the model, into pinned memory when the model is on CUDA (so the copy
does not block). The batches, their order and their bytes are those of the serial reader
(:func:`anatcl_core.evaluation.embed_inputs.cropped_volume` stacked in order), so the features are too.

A file that fails in a worker does not raise there (a worker's exception comes back wrapped, with
its traceback in the message): the batch carries the error's one line, raised in the caller as
:class:`~anatcl_core.evaluation.embed_inputs.EmbedError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from anatcl_core.evaluation.embed_inputs import EmbedError, cropped_volume

#: Batches each worker decodes ahead of the model (torch's default is 2).
PREFETCH_PER_WORKER = 2
#: Most workers ``auto`` starts (more only add memory: reading saturates before).
MAX_AUTO_WORKERS = 8


def auto_workers(device: str | torch.device, cores: int) -> int:
    """Decoding workers for ``--workers auto``: none on the CPU (the model needs the cores; a reader thread
    overlaps the files with the forward passes), on CUDA one per spare core up to :data:`MAX_AUTO_WORKERS`."""
    if torch.device(device).type != "cuda":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, cores - 1))


class _Images(Dataset):
    """Item ``i``: ``(cropped image (X, Y, Z) float32 or None, error line or None)`` of subject ``i``."""

    def __init__(self, subjects: Sequence[tuple[str, Path]]):
        self.subjects = list(subjects)

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> tuple[np.ndarray | None, str | None]:
        pid, path = self.subjects[index]
        try:
            return cropped_volume(path), None
        except Exception as err:  # carried to the caller as one line (module docstring)
            return None, f"{path} ({pid}): cannot be embedded: {type(err).__name__}: {err}"


def _stack(items: list[tuple[np.ndarray | None, str | None]]) -> tuple[torch.Tensor | None, str | None]:
    """A batch ``(B, 1, X, Y, Z)`` float32, or the first error of its items."""
    errors = [error for _, error in items if error is not None]
    if errors:
        return None, errors[0]
    return torch.from_numpy(np.stack([image for image, _ in items])[:, None]), None


def loader_batches(subjects: Sequence[tuple[str, Path]], batch_size: int, workers: int,
                   pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """Cropped images ``(B, 1, X, Y, Z)`` float32, ``batch_size`` subjects at a time, in order.

    Args:
        workers: decoding processes (at least 1).
        pin_memory: page-locked batches, for a non-blocking copy to CUDA.

    Raises:
        EmbedError: a file that cannot be read, named with its participant id.
    """
    loader = DataLoader(_Images(subjects), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_stack, pin_memory=pin_memory, prefetch_factor=PREFETCH_PER_WORKER,
                        persistent_workers=False)
    for images, error in loader:
        if error is not None:
            raise EmbedError(error)
        yield images
