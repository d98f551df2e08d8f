"""Pretraining: determinism, resume-after-interrupt, NaN stop, train-only normaliser, configs."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import params_section, write_openbhb, write_openbhb_arrays

from anatcl_core import live
from anatcl_core.config import ConfigError
from anatcl_core.contrastive.objectives import MethodConfig
from anatcl_core.data.freesurfer import select_channels
from anatcl_core.data.openbhb import OpenBHB
from anatcl_core.model.checkpoint import safe_load
from anatcl_core.model.trained import load_model
from anatcl_core.train import loop as train
from anatcl_core.train.data import TrainData, code_fingerprint, load_train_data
from anatcl_core.train.recipe import PretrainConfig

METHODS = {
    "anatcl_global": {"objective": "anatcl", "lambda_anat": 1.0, "lambda_age": 1.0, "mode": "global"},
    "anatcl_local": {"objective": "anatcl", "lambda_anat": 1.0, "lambda_age": 1.0, "mode": "local"},
    "expw": {"objective": "anatcl", "lambda_age": 1.0, "denominator": "expw"},
    "simclr": {"objective": "simclr", "augmentation": ["crop", "cutout"]},
    "supervised": {"objective": "supervised"},
    "random": {"objective": "random"},
}


def tiny_config(**overrides) -> PretrainConfig:
    """params.yaml's pretrain section with the test methods, a tiny network and budget, and ``overrides``."""
    mapping = dict(methods=METHODS, run=list(METHODS), seeds=[0], base_width=4, epochs=3,
                   batch_size=4, learning_rate=1e-3, lr_step_epochs=2, num_threads=1)
    return params_section("pretrain", **{**mapping, **overrides})


def pretrain(config: PretrainConfig, method: str, seed: int, data, out_dir, **kwargs) -> list[dict]:
    """The trainer on ``config``'s run of ``method`` with ``seed`` (resolved once, as the notebook does)."""
    return train.pretrain(config.resolve(method, seed), data, out_dir, **kwargs)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_openbhb(tmp_path_factory.mktemp("pretrain") / "openbhb", split_sizes=(10, 3, 3))


@pytest.fixture(scope="module")
def data(cohort):
    return load_train_data(write_openbhb_arrays(cohort), tiny_config().resolve("anatcl_global", 0).data, progress=False)


def _weights(path):
    return safe_load(path)["model"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["anatcl_local", "simclr", "supervised"])
def test_resume_after_interrupt_gives_identical_weights(tmp_path, data, method):
    config = tiny_config()
    pretrain(config, method, 0, data, tmp_path / "full", progress=False)

    def interrupt(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(config, method, 0, data, tmp_path / "cut", progress=False, on_epoch_end=interrupt)
    assert safe_load(tmp_path / "cut" / train.CHECKPOINT_FILE)["epoch"] == 2
    history = pretrain(config, method, 0, data, tmp_path / "cut", progress=False)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    full, cut = (safe_load(tmp_path / d / train.CHECKPOINT_FILE) for d in ("full", "cut"))
    assert _same(full["model"], cut["model"])
    assert full["epoch"] == cut["epoch"] == 3 and cut["complete"]
    assert [r["loss"] for r in full["history"]] == [r["loss"] for r in cut["history"]]
    # byte-identical files: DVC sees an unchanged output and reruns nothing downstream
    assert (tmp_path / "full" / train.CHECKPOINT_FILE).read_bytes() == (tmp_path / "cut" / train.CHECKPOINT_FILE).read_bytes()
    # the dvclive curves of the resumed run equal the uninterrupted run's (wall-clock seconds aside)
    curves = {d: tmp_path / d / live.LIVE_DIR / live.CURVES_DIR for d in ("full", "cut")}
    names = sorted(p.name for p in curves["full"].glob("*.tsv"))
    assert "loss.tsv" in names and "lr.tsv" in names and names == sorted(p.name for p in curves["cut"].glob("*.tsv"))
    for name in set(names) - {"seconds.tsv"}:
        assert (curves["full"] / name).read_bytes() == (curves["cut"] / name).read_bytes(), name
    full_curves, cut_curves = live.read_curves(tmp_path / "full"), live.read_curves(tmp_path / "cut")
    assert full_curves["epoch"].tolist() == [1, 2, 3] and full_curves["loss"].tolist() == [r["loss"] for r in history]
    assert cut_curves["seconds"].isna().tolist() == [True, True, False]  # epochs 1-2 were restored, not timed


def test_same_seed_same_weights_other_seed_differs(tmp_path, data):
    config = tiny_config(epochs=1)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        pretrain(config, "anatcl_global", seed, data, tmp_path / name, progress=False)
    a, b, c = (_weights(tmp_path / n / train.CHECKPOINT_FILE) for n in "abc")
    assert _same(a, b)
    assert not _same(a, c)
    curve = tmp_path / "a" / live.LIVE_DIR / live.CURVES_DIR / "loss.tsv"  # dvclive's layout
    assert curve.read_text().splitlines() == ["step\tloss", f"1\t{safe_load(tmp_path / 'a' / train.CHECKPOINT_FILE)['history'][0]['loss']}"]


def test_training_changes_weights_and_random_does_not_train(tmp_path, data):
    config = tiny_config(epochs=1)
    pretrain(config, "random", 0, data, tmp_path / "random", progress=False)
    pretrain(config, "anatcl_global", 0, data, tmp_path / "trained", progress=False)
    rnd = safe_load(tmp_path / "random" / train.CHECKPOINT_FILE)
    assert rnd["epoch"] == 0 and rnd["complete"] and rnd["history"] == []
    # same seed -> same initialisation; one epoch of training moves it
    assert not _same(rnd["model"], _weights(tmp_path / "trained" / train.CHECKPOINT_FILE))


def test_stale_checkpoint_of_another_config_is_not_resumed(tmp_path, data):
    pretrain(tiny_config(epochs=1), "anatcl_global", 0, data, tmp_path / "x", progress=False)
    fresh = pretrain(tiny_config(epochs=1, temperature=0.5), "anatcl_global", 0, data,
                           tmp_path / "y", progress=False)
    stale = pretrain(tiny_config(epochs=1, temperature=0.5), "anatcl_global", 0, data,
                           tmp_path / "x", progress=False)
    assert [r["loss"] for r in fresh] == [r["loss"] for r in stale]


def test_nan_loss_stops_with_a_clear_message(tmp_path, data, monkeypatch):
    real = train.Objective.forward

    def diverging(self, *args):
        loss, parts = real(self, *args)
        return loss * float("nan"), parts  # what an exploding learning rate ends in

    monkeypatch.setattr(train.Objective, "forward", diverging)
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 1"):
        pretrain(tiny_config(), "anatcl_global", 0, data, tmp_path, progress=False)


def test_normaliser_is_fitted_on_the_train_split_only(tmp_path, cohort, data):
    pretrain(tiny_config(epochs=1), "anatcl_global", 0, data, tmp_path, progress=False)
    state = safe_load(tmp_path / train.CHECKPOINT_FILE)
    norm = state["normalizer"]
    assert norm["n_subjects"] == 10 == len(data.participant_ids)
    tables = OpenBHB(cohort, split="train").descriptor_tables()
    np.testing.assert_allclose(np.asarray(norm["mean"]), select_channels(tables, ["CT", "GMV", "SA"]).mean(0),
                               rtol=1e-6)
    assert state["config"]["method"] == "anatcl_global" and state["config"]["seed"] == 0
    summary = json.loads((tmp_path / live.LIVE_DIR / live.METRICS_FILE).read_text())
    assert summary["epochs"] == 1 and summary["step"] == 1 and summary["final_loss"] == summary["loss"]
    model = load_model(tmp_path / train.CHECKPOINT_FILE)  # rebuilt from the checkpoint alone
    assert model.encoder.feature_dim == 32


def test_supervised_baseline_fits_a_tiny_cohort(tmp_path, data):
    history = pretrain(tiny_config(epochs=30, batch_size=5, learning_rate=1e-2, lr_step_epochs=100),
                             "supervised", 0, data, tmp_path, progress=False)
    assert history[-1]["train_mae_years"] < 0.5 * history[0]["train_mae_years"], [r["train_mae_years"] for r in history]


def test_method_config_is_checked():
    with pytest.raises(ValueError, match="learns nothing"):
        MethodConfig(objective="simclr")
    with pytest.raises(ValueError, match="lambda"):
        MethodConfig(objective="anatcl")
    with pytest.raises(ValueError, match="only apply"):
        MethodConfig(objective="supervised", lambda_age=1.0)
    with pytest.raises(ConfigError, match="not defined"):
        tiny_config(run=["anatcl_global", "nope"])
    with pytest.raises(ConfigError, match="unknown key"):
        tiny_config(methods={"x": {"objective": "random", "lamda_age": 1.0}})


def test_checkpoint_of_other_code_or_data_is_not_resumed(tmp_path, data):
    config = tiny_config(epochs=2)

    def stop(epoch, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(config, "anatcl_global", 0, data, tmp_path, progress=False, on_epoch_end=stop)
    other = TrainData(**{**vars(data), "fingerprint": "another code or data version"})
    history = pretrain(config, "anatcl_global", 0, other, tmp_path, progress=False)
    assert all(np.isfinite(row["seconds"]) for row in history)  # both epochs trained here, none restored
    assert len(code_fingerprint()) == 40


def test_method_overrides_change_one_recipe_key(cohort, tmp_path):
    methods = {
        **METHODS,
        "anatcl_ct": {"objective": "anatcl", "lambda_anat": 1.0, "lambda_age": 1.0, "channels": ["CT"]},
        "anatcl_tau": {"objective": "anatcl", "lambda_anat": 1.0, "lambda_age": 1.0, "temperature": 0.5,
                       "depth": "resnet34"},
    }
    config = tiny_config(methods=methods, run=list(methods), epochs=1)
    tau = config.for_method("anatcl_tau")
    assert (tau.temperature, tau.depth, tau.channels) == (0.5, "resnet34", ("CT", "GMV", "SA"))
    assert tau.for_method("anatcl_tau") == tau  # idempotent
    assert config.for_method("anatcl_global") == config  # no overrides: unchanged
    with pytest.raises(KeyError, match="unknown method"):
        config.for_method("anatcl_cortex")
    ct = config.for_method("anatcl_ct")
    assert ct.channels == ("CT",)
    default_data = load_train_data(write_openbhb_arrays(cohort), config.resolve("anatcl_global", 0).data,
                                   progress=False)
    assert default_data.descriptors.shape[1] == 3
    ct_data = load_train_data(cohort.parent / "arrays", config.resolve("anatcl_ct", 0).data, progress=False)
    assert ct_data.descriptors.shape[1] == 1
    pretrain(config, "anatcl_ct", 0, ct_data, tmp_path / "ct", progress=False)
    state = safe_load(tmp_path / "ct" / "checkpoint.pt")
    assert state["config"]["channels"] == ["CT"]
    assert state["normalizer"]["channels"] == ["CT"]


def test_every_method_of_params_yaml_builds_and_takes_a_loss_step():
    """The whole ablation grid is runnable, not only defined: each method (with its recipe
    overrides: descriptors, sigma, temperature, mapping, depth) builds and gives a finite loss."""
    from pathlib import Path

    from anatcl_core.config import load_section

    base = load_section(Path(__file__).parent.parent / "params.yaml", "pretrain", PretrainConfig)
    rng = torch.Generator().manual_seed(0)
    for method in base.methods:
        run = base.resolve(method, 0)
        model, objective = train.build(replace(run, model=replace(run.model, base_width=4)))
        if run.method_config.objective == "random":
            continue
        x = torch.rand(4, 1, 24, 24, 24, generator=rng)
        features, projections = model(x)
        n_channels = len(run.data.channels)
        loss, _ = objective(features[:, None].expand(-1, 2, -1), projections[:, None].expand(-1, 2, -1),
                            torch.tensor([20.0, 35.0, 50.0, 70.0]), torch.zeros(4),
                            torch.randn(4, n_channels, 68, generator=rng))
        assert torch.isfinite(loss), method
        loss.backward()


def test_budget_variants_override_epochs_only():
    from anatcl_core.config import load_section

    config = load_section(Path(__file__).resolve().parents[1] / "params.yaml", "pretrain", PretrainConfig)
    for variant, epochs in (("anatcl_global_e5", 5), ("anatomy_only_e45", 45), ("yaware_e90", 90)):
        resolved = config.for_method(variant)
        assert resolved.epochs == epochs
        assert replace(resolved, epochs=config.epochs, methods=config.methods) == config  # nothing else
    assert config.for_method("anatcl_global").epochs == config.epochs
