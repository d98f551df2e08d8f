"""A checkpoint the compendium trains at the paper's width loads into upstream's own class (issue 10, item 2).

Upstream's ``anatcl`` 0.0.3 (PyPI; test-only, from requirements-test.txt) builds
``AnatCL(model, descriptor, fold, use_head, pretrained).backbone``, a ``SupConResNet`` with
``encoder.*`` / ``head.*`` parameters; with ``pretrained=False`` it downloads nothing. Users share
weights by ``backbone.load_state_dict(ckpt["model"])``: that must work with ``strict=True`` on a
file ``anatcl_core.train.loop.pretrain`` wrote, and both classes must then compute the same features.
"""

from __future__ import annotations

import pytest
import torch
from anatcl.anatcl import AnatCL as UpstreamAnatCL
from conftest import params_section, write_openbhb, write_openbhb_arrays

from anatcl_core import AnatCL
from anatcl_core.model.checkpoint import safe_load
from anatcl_core.train import loop as train
from anatcl_core.train.data import load_train_data

WIDTH = 64  # the paper's (and the released weights') ResNet-18 width


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("upstream")
    cohort = write_openbhb(out / "openbhb", voxel_mm=12.0, split_sizes=(8, 1, 1))  # (16, 19, 16) grid
    config = params_section(
        "pretrain", methods={"anatcl_global": {"objective": "anatcl", "lambda_anat": 1.0, "lambda_age": 1.0, "mode": "global"}},
        run=["anatcl_global"], seeds=[0], base_width=WIDTH, epochs=1, batch_size=4, num_threads=2,
    )  # fmt: skip
    run = config.resolve("anatcl_global", 0)
    data = load_train_data(write_openbhb_arrays(cohort), run.data, progress=False)
    train.pretrain(run, data, out / "run", progress=False, device="cpu")
    return out / "run" / train.CHECKPOINT_FILE, data


@pytest.mark.parametrize("use_head", [False, True])
def test_upstream_class_loads_strictly_and_gives_the_same_features(checkpoint, use_head):
    path, data = checkpoint
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]  # as a user loads a shared file
    assert state.keys() == safe_load(path)["model"].keys()
    assert state["encoder.conv1.weight"].shape == (WIDTH, 1, 7, 7, 7)
    upstream = UpstreamAnatCL("resnet18", "global", 0, use_head=use_head, pretrained=False)
    result = upstream.backbone.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ours = AnatCL("resnet18", "global", 0, use_head=use_head, weights=path)
    upstream.eval(), ours.eval()
    x = torch.as_tensor(data.images[:3], dtype=torch.float32)  # (3, 1, X, Y, Z) raw GM values
    with torch.no_grad():
        theirs, mine = upstream(x), ours(x)
        untrained = UpstreamAnatCL("resnet18", "global", 0, use_head=use_head, pretrained=False).eval()(x)
    assert mine.shape == theirs.shape == (3, 128 if use_head else 512)
    assert (mine - theirs).abs().max().item() <= 1e-5
    assert (untrained - mine).abs().max().item() > 1e-3  # the loaded weights, not the init, decide
