"""Checkpoints: upstream files reproduce the reference network, nothing pickled ever runs."""

import argparse
import builtins
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anatcl_core.model.allowlist import Placeholder
from anatcl_core.model.checkpoint import (
    CheckpointMismatchError, UnsafeCheckpointError, load_state_dict_checked, safe_load, save_checkpoint,
)
from anatcl_core.model.network import build_model
from anatcl_core.model.run import ModelSpec, Run
from anatcl_core.model.trained import load_model, load_trained, model_config
from anatcl_core.model.upstream import AnatCL

# ---------------------------------------------------------------------------------------------
# Independent reference: the upstream ResNet-18 + head written from REFERENCE §1.3 / §2 as plain
# functional torch over a dict of named tensors (shares no code with anatcl_core.model.network).
# ---------------------------------------------------------------------------------------------
STAGES = (64, 128, 256, 512)


def _bn_shapes(prefix, channels):
    return {prefix + "weight": (channels,), prefix + "bias": (channels,),
            prefix + "running_mean": (channels,), prefix + "running_var": (channels,),
            prefix + "num_batches_tracked": ()}


def upstream_shapes():
    shapes = {"encoder.conv1.weight": (64, 1, 7, 7, 7), **_bn_shapes("encoder.bn1.", 64)}
    in_c = 64
    for layer, c in enumerate(STAGES, start=1):
        for block in (0, 1):
            p = f"encoder.layer{layer}.{block}."
            shapes[p + "conv1.weight"] = (c, in_c, 3, 3, 3)
            shapes.update(_bn_shapes(p + "bn1.", c))
            shapes[p + "conv2.weight"] = (c, c, 3, 3, 3)
            shapes.update(_bn_shapes(p + "bn2.", c))
            if layer > 1 and block == 0:
                shapes[p + "downsample.0.weight"] = (c, in_c, 1, 1, 1)
                shapes.update(_bn_shapes(p + "downsample.1.", c))
            in_c = c
    shapes.update({"head.0.weight": (512, 512), "head.0.bias": (512,),
                   "head.2.weight": (128, 512), "head.2.bias": (128,)})
    return shapes


def random_upstream_state(seed=0):
    """Random weights AND random BN running statistics, so eval-mode BN wiring is exercised."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in upstream_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(123)
        elif key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=g)
        else:  # conv / linear weight, He-scaled on fan-in to keep activations O(1)
            fan_in = int(np.prod(shape[1:]))
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def reference_forward(p, x):
    """(B, 1, D, H, W) -> (features (B, 512), projection (B, 128)), eval-mode BatchNorm."""
    def bn(t, pre):
        return F.batch_norm(t, p[pre + "running_mean"], p[pre + "running_var"], p[pre + "weight"],
                            p[pre + "bias"], training=False, eps=1e-5)

    x = F.relu(bn(F.conv3d(x, p["encoder.conv1.weight"], stride=2, padding=3), "encoder.bn1."))
    x = F.max_pool3d(x, kernel_size=3, stride=2, padding=1)
    for layer in range(1, 5):
        for block in (0, 1):
            pre = f"encoder.layer{layer}.{block}."
            stride = 2 if layer > 1 and block == 0 else 1
            out = F.relu(bn(F.conv3d(x, p[pre + "conv1.weight"], stride=stride, padding=1),
                            pre + "bn1."))
            out = bn(F.conv3d(out, p[pre + "conv2.weight"], padding=1), pre + "bn2.")
            if pre + "downsample.0.weight" in p:
                x = bn(F.conv3d(x, p[pre + "downsample.0.weight"], stride=stride),
                       pre + "downsample.1.")
            x = F.relu(out + x)
    features = x.mean(dim=(2, 3, 4))
    hidden = F.relu(F.linear(features, p["head.0.weight"], p["head.0.bias"]))
    projection = F.normalize(F.linear(hidden, p["head.2.weight"], p["head.2.bias"]), dim=1)
    return features, projection


# ---------------------------------------------------------------------------------------------
# Fixtures: a foreign module (the authors' own classes) that must never be imported on load.
# ---------------------------------------------------------------------------------------------
FOREIGN_SOURCE = '''
class AgeEstimator:
    def __init__(self, coef, intercept):
        self.coef, self.intercept = coef, intercept

def make_marker(path):
    open(path, "w").close()
'''


@pytest.fixture
def foreign_module(tmp_path, monkeypatch):
    """Importable module ``authors_code``; afterwards importing it would drop a marker file."""
    package_dir = tmp_path / "pkg"
    package_dir.mkdir()
    (package_dir / "authors_code.py").write_text(FOREIGN_SOURCE)
    monkeypatch.syspath_prepend(str(package_dir))
    import authors_code

    yield authors_code
    sys.modules.pop("authors_code", None)


def _booby_trap_import(module, marker):
    """Make any later import of ``module`` create ``marker``."""
    sys.modules.pop(module.__name__, None)
    with open(module.__file__, "a") as handle:
        handle.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    for cached in (os.path.join(os.path.dirname(module.__file__), "__pycache__"),):
        if os.path.isdir(cached):
            for name in os.listdir(cached):
                os.remove(os.path.join(cached, name))


def test_reference_key_list_matches_our_full_width_resnet18():
    expected = upstream_shapes()
    ours = {k: tuple(v.shape) for k, v in build_model().state_dict().items()}
    assert len(expected) == 124
    assert ours == expected
    assert ours["encoder.conv1.weight"] == (64, 1, 7, 7, 7)
    assert ours["head.0.weight"] == (512, 512) and ours["head.2.weight"] == (128, 512)


def test_upstream_file_with_foreign_objects_reproduces_reference(tmp_path, foreign_module):
    state = random_upstream_state()
    path = tmp_path / "fold0.pth"
    estimator = foreign_module.AgeEstimator(np.arange(4.0), torch.tensor(2.5))
    torch.save({"model": state, "opts": argparse.Namespace(lr=1e-4, trial=0),
                "age_estimator": estimator, "epoch": 299}, path)
    marker = tmp_path / "imported"
    _booby_trap_import(foreign_module, marker)

    x = torch.randn(2, 1, 32, 36, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_features, ref_projection = reference_forward(state, x)
        features = AnatCL(descriptor="global", weights=path).eval()(x)
        projection = AnatCL(descriptor="global", use_head=True, weights=path).eval()(x)
    assert features.shape == (2, 512) and projection.shape == (2, 128)
    assert ref_features.abs().max() > 0.1  # a non-trivial comparison
    assert (features - ref_features).abs().max().item() <= 1e-5
    assert (projection - ref_projection).abs().max().item() <= 1e-5

    loaded = safe_load(path)
    assert not marker.exists(), "the authors' module was imported"
    est = loaded["age_estimator"]
    assert isinstance(est, Placeholder) and est.pickled_module == "authors_code"
    assert est.pickled_name == "AgeEstimator"
    np.testing.assert_array_equal(est.coef, np.arange(4.0))
    assert est.intercept.item() == 2.5
    assert loaded["opts"] == argparse.Namespace(lr=1e-4, trial=0) and loaded["epoch"] == 299


def test_dataparallel_prefix_and_mismatched_keys(tmp_path):
    state = random_upstream_state(seed=3)
    path = tmp_path / "dp.pth"
    torch.save({"model": {"module." + k: v for k, v in state.items()}}, path)
    net = AnatCL(weights=path)
    torch.testing.assert_close(net.state_dict()["head.2.bias"], state["head.2.bias"])

    broken = dict(state)
    broken["encoder.extra.weight"] = broken.pop("encoder.layer3.1.conv2.weight")
    torch.save({"model": broken}, path)
    with pytest.raises(CheckpointMismatchError, match=r"layer3\.1\.conv2\.weight.*extra\.weight"):
        AnatCL(weights=path)
    torch.save({"state_dict": state}, path)
    with pytest.raises(KeyError, match="'model'"):
        AnatCL(weights=path)


class _Exploit:
    """Pickles as a call of ``func(*args)``: what a malicious checkpoint looks like."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker, foreign_module):
    return {
        "os.system": (os.system, f"touch {marker}"),
        "builtins.exec": (builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": (builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.call": (subprocess.call, ["touch", str(marker)]),
        "unknown-module function": (foreign_module.make_marker, str(marker)),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.eval",
                                  "subprocess.call", "unknown-module function"])
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, foreign_module, kind):
    marker = tmp_path / "pwned"
    func, arg = _payloads(marker, foreign_module)[kind]
    path = tmp_path / "evil.pth"
    # the payload sits after real tensors, deep in a nested container
    torch.save({"model": {"w": torch.ones(3)}, "extra": [{"hook": _Exploit(func, arg)}]}, path)
    sys.modules.pop("authors_code", None)
    with pytest.raises(UnsafeCheckpointError) as info:
        safe_load(path)
    assert str(path) in str(info.value)
    assert func.__name__ in str(info.value)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        AnatCL(weights=path)
    assert not marker.exists()


def test_malicious_fixture_really_runs_under_plain_unpickling(tmp_path):
    """Guards the test above: the same file does execute under torch.load(weights_only=False)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"x": _Exploit(os.system, f"touch {marker}")}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_tensors_dtypes_views_and_plain_values_round_trip(tmp_path):
    base = torch.arange(10.0)
    obj = {"base": base, "view": base[2:5], "half": torch.randn(2, 3).half(),
           "bf16": torch.randn(4).bfloat16(), "long": torch.arange(3), "bool": torch.tensor([True, False]),
           "t": torch.randn(3, 4).t(), "param": torch.nn.Parameter(torch.randn(2)), "empty": torch.zeros(0),
           "np": np.linspace(0, 1, 5, dtype=np.float32), "np_scalar": np.int64(7),
           "misc": (1, 2.5, "s", None, b"bytes", {3, 4}, frozenset({5}), slice(1, 2), 1j),
           "dtype": torch.float16, "device": torch.device("cpu"), "size": torch.Size([2, 3])}
    path = tmp_path / "obj.pth"
    save_checkpoint(obj, path)
    loaded = safe_load(path)
    for key in ("base", "view", "half", "bf16", "long", "bool", "t", "empty"):
        assert loaded[key].dtype == obj[key].dtype and torch.equal(loaded[key], obj[key]), key
    assert loaded["t"].stride() == obj["t"].stride()
    loaded["base"][3] = -1.0  # the view still shares the base's storage
    assert loaded["view"][1] == -1.0
    assert isinstance(loaded["param"], torch.nn.Parameter) and loaded["param"].requires_grad
    np.testing.assert_array_equal(loaded["np"], obj["np"])
    assert loaded["np_scalar"] == 7 and loaded["np_scalar"].dtype == np.int64
    for key in ("misc", "dtype", "device", "size"):
        assert loaded[key] == obj[key], key


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "sub" / "ckpt.pth"
    save_checkpoint({"epoch": 1}, path)
    save_checkpoint({"epoch": 2}, path)
    assert safe_load(path) == {"epoch": 2}
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 3, "bad": lambda: None}, path)  # unpicklable mid-write
    assert safe_load(path) == {"epoch": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pth"]


def test_trainer_checkpoint_round_trip_and_load_model(tmp_path):
    torch.manual_seed(0)
    model = build_model(base_width=4, norm="group", projection_dim=16, hidden_dim=24)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 1, 40, 40, 40)
    model(x)[1].sum().backward()
    optimizer.step()
    checkpoint = {"model": model.state_dict(), "config": {**model_config(model), "temperature": 0.1},
                  "normalizer": {"mean": [[0.5, 1.0]], "std": torch.ones(2)}, "epoch": 3,
                  "optimizer": optimizer.state_dict(),
                  "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                          "python": random.getstate()}}
    path = tmp_path / "last.pth"
    save_checkpoint(checkpoint, path)
    loaded = safe_load(path)
    assert loaded["config"]["norm"] == "group" and loaded["epoch"] == 3
    assert loaded["optimizer"]["param_groups"] == checkpoint["optimizer"]["param_groups"]
    assert torch.equal(loaded["rng"]["torch"], checkpoint["rng"]["torch"])
    np.testing.assert_array_equal(loaded["rng"]["numpy"][1], checkpoint["rng"]["numpy"][1])
    assert loaded["rng"]["python"] == checkpoint["rng"]["python"]

    rebuilt = load_model(path)
    assert not rebuilt.training
    with torch.no_grad():
        for ours, theirs in zip(rebuilt(x), model.eval()(x)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    with pytest.raises(CheckpointMismatchError, match="running_mean"):
        load_model(path, norm="batch")
    with pytest.raises(ValueError, match="temperature"):
        load_model(path, temperature=0.2)


def test_load_state_dict_checked_reports_shapes():
    model = build_model(base_width=4)
    state = model.state_dict()
    state["head.2.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError, match=r"head\.2\.weight: \(3, 3\)"):
        load_state_dict_checked(model, state, source="test")


def test_bad_files_are_rejected_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        safe_load(tmp_path / "missing.pth")
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ValueError, match="zip"):
        safe_load(legacy)


#: ``checkpoint["config"]`` as the trainer wrote it before the run record was typed: the network's
#: keys, the recipe, and ``method_config`` with the old ``method`` / ``anat_method`` spellings.
PRE_RUN_CONFIG = {
    "depth": "resnet18", "base_width": 4, "norm": "batch", "in_channels": 1, "hidden_dim": None,
    "projection_dim": 16, "crop": [24, 24, 24], "channels": ["CT"], "mapping": "affine", "temperature": 0.1,
    "sigma_years": 2.0, "epochs": 3, "batch_size": 4, "learning_rate": 0.001, "weight_decay": 5e-05,
    "lr_step_epochs": 2, "lr_gamma": 0.9, "image_dtype": "float32", "num_threads": 1, "method": "anatcl_expw",
    "seed": 2, "method_config": {
        "objective": "anatcl", "lambda_anat": 1.0, "lambda_age": 1.0, "mode": "global", "method": "yaware",
        "anat_method": "expw", "augmentation": ["none"], "channels": ["CT"], "sigma_years": None,
        "temperature": None, "mapping": None, "depth": None, "base_width": None, "epochs": None},
}


def test_checkpoint_of_before_the_typed_run_record_reads_back_typed(tmp_path):
    torch.manual_seed(0)
    model = build_model(base_width=4, projection_dim=16)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"model": model.state_dict(), "config": PRE_RUN_CONFIG, "epoch": 3}, path)
    trained = load_trained(path)
    run = trained.run
    assert trained.format == "anatcl" and not trained.model.training
    assert (run.method, run.seed, run.epochs) == ("anatcl_expw", 2, 3)
    assert run.method_config.denominator == "yaware" and run.method_config.anat_denominator == "expw"
    assert run.data.crop == (24, 24, 24) and run.data.channels == ("CT",)
    assert run.model == ModelSpec(base_width=4, projection_dim=16)
    assert Run.from_config(run.to_config()) == run  # what the trainer stores now reads back the same
    x = torch.randn(2, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(trained.model.encode(x), model.eval().encode(x), rtol=0, atol=0)
    broken = {k: v for k, v in PRE_RUN_CONFIG.items() if k != "batch_size"}
    save_checkpoint({"model": model.state_dict(), "config": broken}, path)
    with pytest.raises(ValueError, match=r"checkpoint.pt: config lacks the run record's key\(s\) \['batch_size'\]"):
        load_trained(path)
