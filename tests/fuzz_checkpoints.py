"""Valid checkpoints for the fuzzing of the checkpoint readers (tests/test_fuzz_readers.py).

Kept apart from :mod:`fuzz_cases` (the other readers' inputs), whose drawn values it uses.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path

from fuzz_cases import FINITE32, Draw, same_arrays, small_array
from hypothesis import strategies as st


def build_plain_checkpoint(root: Path, draw: Draw) -> dict:
    import torch

    from anatcl_core.model.checkpoint import save_checkpoint

    obj = {"w": torch.from_numpy(small_array(draw)), "epoch": draw(st.integers(0, 99)),
           "note": draw(st.text(max_size=8)), "history": draw(st.lists(FINITE32.map(float), max_size=3))}
    save_checkpoint(obj, root / "checkpoint.pt")
    return obj


def same_checkpoint(got: dict, expected: dict) -> bool:
    return set(got) == set(expected) and same_arrays(got["w"], expected["w"]) and \
        all(got[k] == expected[k] for k in expected if k != "w")


@functools.cache
def trained_bytes(with_run: bool) -> bytes:
    """A narrow ResNet-18 checkpoint in our format (with or without the run record), built once."""
    import torch
    from test_checkpoint import PRE_RUN_CONFIG

    from anatcl_core.model.checkpoint import save_checkpoint
    from anatcl_core.model.network import build_model
    from anatcl_core.model.trained import model_config

    torch.manual_seed(0)
    model = build_model(base_width=4, projection_dim=16)
    config = {**PRE_RUN_CONFIG, "base_width": 4, "projection_dim": 16} if with_run else model_config(model)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint({"model": model.state_dict(), "config": config, "epoch": 1}, Path(tmp) / "c.pt")
        return (Path(tmp) / "c.pt").read_bytes()


def build_trained(with_run: bool) -> Callable[[Path, Draw], None]:
    def build(root: Path, draw: Draw) -> None:
        (root / "checkpoint.pt").write_bytes(trained_bytes(with_run))
    return build
