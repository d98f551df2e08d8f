"""Editing a library module reruns exactly the stages that use it (``dvc status`` on the tiny run).

The model is used from the pretrain stage on, never by the cohort stage; the plots only by the stages
that draw with them. Each edit is undone before the next check (the workspace is shared).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import dvc


@contextmanager
def edited(path: Path):
    """``path`` with one comment line appended, restored byte for byte afterwards."""
    original = path.read_bytes()
    path.write_bytes(original + b"\n# an edit that changes nothing but the file's hash\n")
    try:
        yield
    finally:
        path.write_bytes(original)


def stale_stages(root: Path, env: dict) -> set[str]:
    """The stages ``dvc status`` names (lines ``<stage>:`` at the left margin)."""
    out = dvc(root, env, "status")
    return {m.group(1) for m in re.finditer(r"^([\w@.-]+):\s*$", out, re.M)}


@pytest.mark.slow
def test_editing_the_model_reruns_pretraining_and_later_but_not_the_cohort(tiny_pipeline):
    root, env = tiny_pipeline.root, tiny_pipeline.env
    assert stale_stages(root, env) == set()
    with edited(root / "anatcl_core" / "model" / "network.py"):
        stale = stale_stages(root, env)
    kinds = {name.split("@")[0] for name in stale}
    assert "cohort" not in kinds, stale
    assert {"pretrain", "evaluate"} <= kinds, stale
    assert stale_stages(root, env) == set()


@pytest.mark.slow
def test_editing_the_plots_reruns_only_the_stages_that_draw(tiny_pipeline):
    root, env = tiny_pipeline.root, tiny_pipeline.env
    with edited(root / "anatcl_core" / "report" / "plots.py"):
        stale = stale_stages(root, env)
    assert stale == {"report"}, stale
    assert stale_stages(root, env) == set()
