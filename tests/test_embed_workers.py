"""``anatcl embed --workers N``: files decoded by DataLoader processes give the serial path's features, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_embed import cohort, ours, reference_inputs  # noqa: F401 (fixtures)

from anatcl_core.evaluation import embed, embed_loader
from anatcl_core.evaluation.embed_inputs import EmbedError


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_the_serial_features_bit_for_bit(ours, cohort, workers):  # noqa: F811
    module, _ = embed.load_encoder(ours)
    subjects = embed.gather_inputs([cohort])
    serial = embed.embed_subjects(module, subjects, batch_size=4, progress=False)
    parallel = embed.embed_subjects(module, subjects, batch_size=4, progress=False, workers=workers)
    _, x = reference_inputs(cohort)
    with torch.no_grad():
        eager = torch.cat([module(x[:4]), module(x[4:])]).numpy()
    assert np.array_equal(parallel, serial) and np.array_equal(parallel, eager)


def test_the_loader_batches_are_the_stacked_files_in_order(cohort):  # noqa: F811
    subjects = embed.gather_inputs([cohort])
    batches = list(embed_loader.loader_batches(subjects, batch_size=4, workers=2))
    assert [tuple(b.shape[:2]) for b in batches] == [(4, 1), (2, 1)]
    expected = np.stack([embed.cropped_volume(p) for _, p in subjects])[:, None]
    assert np.array_equal(torch.cat(batches).numpy(), expected)


def test_a_file_that_fails_in_a_worker_is_named_in_one_line(cohort, tmp_path: Path):  # noqa: F811
    subjects = embed.gather_inputs([cohort])
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"not an array")
    subjects[4] = ("sub-broken", broken)
    with pytest.raises(EmbedError) as err:
        list(embed_loader.loader_batches(subjects, batch_size=2, workers=2))
    message = str(err.value)
    assert message.startswith(f"{broken} (sub-broken): cannot be embedded:") and "\n" not in message
    assert "Traceback" not in message


def test_auto_workers_are_for_cuda_only() -> None:
    assert embed_loader.auto_workers("cpu", 16) == 0  # today's CPU path: one reader thread
    assert embed_loader.auto_workers("cuda", 16) == embed_loader.MAX_AUTO_WORKERS
    assert embed_loader.auto_workers("cuda:1", 3) == 2
    assert embed_loader.auto_workers("cuda", 1) == 0
