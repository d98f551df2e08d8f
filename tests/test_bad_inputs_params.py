"""Bad-input corpus, part 3: parameter files.

Each case is ``params.yaml`` with one value a careless edit could give (or a file that is not
what it seems); loading the section is refused with a one-line :class:`ConfigError` naming the
file, the key and what was expected, before any stage works.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from conftest import write_openbhb, write_openbhb_arrays
from refusal import assert_refused, run_cli, snapshot

from anatcl_core.config import ConfigError, load_section
from anatcl_core.data.cohort import CohortConfig
from anatcl_core.evaluation.protocol import EvaluateConfig
from anatcl_core.report.build import ReportConfig
from anatcl_core.synth.config import SynthConfig
from anatcl_core.train.recipe import PretrainConfig

REPO = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((REPO / "params.yaml").read_text())
SECTIONS = {"synth": SynthConfig, "cohort": CohortConfig, "pretrain": PretrainConfig,
            "evaluate": EvaluateConfig, "report": ReportConfig}

#: case -> (dotted key, bad value, what the message must say after "<key> = <value>: ")
VALUES = {
    "temperature-zero": ("pretrain.temperature", 0, "expected > 0"),
    "temperature-negative": ("pretrain.temperature", -0.1, "expected > 0"),
    "temperature-nan": ("pretrain.temperature", math.nan, "expected a finite number"),
    "temperature-text": ("pretrain.temperature", "0.1", "expected a number"),
    "sigma-zero": ("pretrain.sigma_years", 0, "expected > 0"),
    "learning-rate-inf": ("pretrain.learning_rate", math.inf, "expected a finite number"),
    "learning-rate-zero": ("pretrain.learning_rate", 0, "expected > 0"),
    "lr-gamma-negative": ("pretrain.lr_gamma", -1, "expected > 0"),
    "lr-gamma-above-one": ("pretrain.lr_gamma", 1.5, "expected <= 1"),
    "lr-step-zero": ("pretrain.lr_step_epochs", 0, "expected >= 1"),
    "weight-decay-negative": ("pretrain.weight_decay", -1, "expected >= 0"),
    "base-width-zero": ("pretrain.base_width", 0, "expected >= 1"),
    "base-width-negative": ("pretrain.base_width", -16, "expected >= 1"),
    "hidden-dim-negative": ("pretrain.hidden_dim", -1, "expected >= 1"),
    "projection-dim-zero": ("pretrain.projection_dim", 0, "expected >= 1"),
    "crop-word": ("pretrain.crop", "foo", "expected 'upstream' or list"),
    "crop-two-numbers": ("pretrain.crop", [64, 64], "expected 'upstream' or list"),
    "channel-unknown": ("pretrain.channels[0]", ["XYZ"], "expected one of 'SA'"),
    "channels-empty": ("pretrain.channels", [], "at least 1 item"),
    "run-empty": ("pretrain.run", [], "at least 1 item"),
    "run-undefined-method": ("pretrain", ["anatcl_globl"], "run lists ['anatcl_globl']"),
    "seeds-empty": ("pretrain.seeds", [], "at least 1 item"),
    "seed-negative": ("pretrain.seeds[0]", [-1], "expected >= 0"),
    "num-threads-zero": ("pretrain.num_threads", 0, "expected >= 1"),
    "num-threads-30-digits": ("pretrain.num_threads", 10**30, "expected <= 999999999999999999"),
    "epochs-float": ("pretrain.epochs", 2.5, "expected an integer"),
    "epochs-bool": ("pretrain.epochs", True, "expected an integer, not a boolean"),
    "batch-size-one": ("pretrain.batch_size", 1, "expected >= 2"),
    "depth-unknown": ("pretrain.depth", "resnet101", "expected one of"),
    "norm-unknown": ("pretrain.norm", "layer", "expected one of"),
    "image-dtype": ("pretrain.image_dtype", "int8", "expected one of"),
    "augmentation-typo": ("pretrain.methods.simclr.augmentation[1]", ["crop", "cutoutt"], "expected one of 'none'"),
    "method-lambda-negative": ("pretrain.methods.anatcl_global.lambda_anat", -1.0, "expected >= 0"),
    "method-temperature-zero": ("pretrain.methods.anatcl_tau02.temperature", 0.0, "expected > 0"),
    "method-objective": ("pretrain.methods.random.objective", "byol", "expected one of"),
    "method-channel": ("pretrain.methods.anatcl_ct.channels[0]", ["ct"], "expected one of"),
    "method-unknown-key": ("pretrain.methods.yaware", {"objective": "anatcl", "lambda_age": 1.0, "epoch": 3},
                           "unknown key(s) ['epoch']"),
    "methods-empty": ("pretrain.methods", {}, "at least 1 item"),
    "evaluate-n-splits-one": ("evaluate.n_splits", 1, "expected >= 2"),
    "evaluate-n-bootstrap-negative": ("evaluate.n_bootstrap", -1, "expected >= 1"),
    "evaluate-c-grid-empty": ("evaluate.c_grid", [], "at least 1 item"),
    "evaluate-alpha-negative": ("evaluate.alpha_grid[1]", [1.0, -0.1], "expected > 0"),
    "evaluate-inner-splits": ("evaluate.inner_splits", 0, "expected >= 2"),
    "evaluate-batch-size": ("evaluate.batch_size", 0, "expected >= 1"),
    "evaluate-held-out-groups": ("evaluate.site_held_out_groups", 1, "expected >= 2"),
    "evaluate-unknown-key": ("evaluate", {"n_split": 5}, "unknown key(s) ['n_split']"),
    "synth-voxel-zero": ("synth.voxel_mm", 0, "expected > 0"),
    "synth-external-sites": ("synth", {"n_sites": 4, "n_external_sites": 4}, "n_external_sites = 4: expected < n_sites"),
    "synth-fraction": ("synth.internal_test_fraction", 1.0, "expected < 1"),
    "synth-noise-negative": ("synth.site_noise_max", -0.1, "expected >= 0"),
    "cohort-dpi-zero": ("cohort.dpi", 0, "expected >= 1"),
    "cohort-voxel-negative": ("cohort.voxel_mm", -1.5, "expected > 0"),
    "cohort-channel": ("cohort.trajectory_channels[0]", ["thickness"], "expected one of"),
    "report-embedding": ("report.embedding", "umap", "expected one of 'pca' or 'tsne'"),
    "report-dpi": ("report.dpi", -1, "expected >= 1"),
    "report-ablation-empty": ("report.ablations.backbone", [], "at least 1 item"),
}


def _apply(params: dict, key: str, value) -> None:
    """Put ``value`` at ``key`` (``a.b.c``, an index suffix ignored); a section name updates it."""
    if key == "pretrain":
        params["pretrain"]["run"] = value
    elif key in ("evaluate", "synth"):
        params[key].update(value)
    elif key == "pretrain.methods":
        params["pretrain"].update(methods=value, run=["x"])
    else:
        *parents, last = key.split("[")[0].split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value


@pytest.mark.parametrize("case", sorted(VALUES))
def test_bad_value_is_refused_naming_the_key(case, tmp_path):
    key, value, problem = VALUES[case]
    params = copy.deepcopy(BASE)
    _apply(params, key, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    before = snapshot(tmp_path)
    section = key.split(".")[0].split("[")[0]
    with pytest.raises(ConfigError) as err:
        load_section(path, section, SECTIONS[section])
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{path}: {section}"), message
    if "." in key and case not in ("synth-external-sites", "evaluate-unknown-key", "method-unknown-key"):
        assert f"{key} = " in message, message
    assert problem in message, message
    assert snapshot(tmp_path) == before


FILES = {
    "duplicate-key": (b"pretrain:\n  temperature: 0.1\n  epochs: 3\n  temperature: 0.5\n",
                      "duplicate key 'temperature' (first on line 2"),
    "duplicate-section": (b"evaluate: {}\nevaluate: {n_splits: 2}\n", "duplicate key 'evaluate'"),
    "not-utf8": ("report:\n  title: r\xe9sum\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9"),
    "not-yaml": (b"pretrain: [1,\n", "not valid YAML"),
    "top-level-list": (b"- pretrain\n", "expected a mapping of sections"),
    "binary-value": (b"report:\n  title: !!binary aGVsbG8=\n", "expected a number, string, list or mapping"),
    "date-value": (b"report:\n  title: 2024-01-01\n", "not date"),
    "section-not-mapping": (b"evaluate: 5\n", "expected a mapping"),
    "missing-section": (b"synth: {}\n", "no section 'evaluate'"),
    # found by tests/test_fuzz_readers.py: a list as a key raised TypeError (unhashable) in our loader
    "list-as-key": (b"report:\n  ? [a, b]\n  : 1\n", "unhashable key"),
    # found by tests/test_fuzz_readers.py: PyYAML's RecursionError escaped
    "deep-nesting": (b"evaluate: " + b"[" * 50000 + b"]" * 50000 + b"\n", "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_bad_file_is_refused(case, tmp_path):
    data, problem = FILES[case]
    path = tmp_path / "params.yaml"
    path.write_bytes(data)
    section = "pretrain" if case == "duplicate-key" else "report" if b"report" in data else "evaluate"
    with pytest.raises(ConfigError) as err:
        load_section(path, section, SECTIONS[section])
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert problem in str(err.value), str(err.value)


def test_synthesize_refuses_bad_params_before_writing(tmp_path, capsys, caplog):
    params = copy.deepcopy(BASE)
    params["synth"]["n_pretrain"] = 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    before = snapshot(tmp_path)
    status, lines = run_cli(["synthesize", "--params", path, "--out", tmp_path / "data", "--no-progress"],
                            capsys, caplog)
    assert_refused(status, lines, f"{path}: synth.n_pretrain = 0", "expected >= 1")
    assert snapshot(tmp_path) == before


def test_crop_larger_than_the_image_is_refused_before_the_split_is_read(tmp_path):
    from anatcl_core.train.data import load_train_data

    root = write_openbhb(tmp_path / "openbhb", split_sizes=(2, 1, 1))
    params = copy.deepcopy(BASE)
    params["pretrain"]["crop"] = [500, 500, 500]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    config = load_section(path, "pretrain", PretrainConfig)
    with pytest.raises(ConfigError, match=r"pretrain.crop = \(500, 500, 500\): crop \(500, 500, 500\) does "
                                          r"not fit in a volume of shape \(21, 25, 21\)"):
        load_train_data(write_openbhb_arrays(root), config.resolve("anatcl_global", 0).data, progress=False)


@pytest.mark.parametrize("device", ["tpu", "", "meta", "cpu:7", "cuda:99"])
def test_train_refuses_a_device_before_loading(device, tmp_path):
    from anatcl_core.arguments import ArgumentError
    from anatcl_core.train import cli

    with pytest.raises(ArgumentError, match=f"--device = {device!r}"):
        cli.main(["--method", "random", "--device", device, "--arrays-dir", str(tmp_path / "none"),
                    "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("which", ["params", "profile"])
def test_profile_nested_too_deeply_is_refused_naming_the_file(which, tmp_path):
    """Found by tests/test_fuzz_readers.py: ruamel.yaml's RecursionError escaped apply_profile."""
    from anatcl_core.cli.profile import apply_profile

    paths = {"params": tmp_path / "params.yaml", "profile": tmp_path / "profile.yaml"}
    paths["params"].write_text("report:\n  title: r\n", encoding="utf-8")
    paths["profile"].write_text("report:\n  title: s\n", encoding="utf-8")
    paths[which].write_text("report: {title: " + "[" * 900 + "]" * 900 + "}\n", encoding="utf-8")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        apply_profile(paths["profile"], paths["params"])
    assert "\n" not in str(err.value) and str(paths[which]) in str(err.value), str(err.value)
    assert "nested too deeply" in str(err.value)
    assert snapshot(tmp_path) == before


def test_profile_key_not_in_params_names_the_profile(tmp_path):
    """Found by tests/test_fuzz_readers.py: the refusal named the key but not the profile file."""
    from anatcl_core.cli.profile import apply_profile

    (tmp_path / "params.yaml").write_text("report:\n  title: r\n", encoding="utf-8")
    (tmp_path / "profile.yaml").write_text("report:\n  titel: s\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"profile.yaml: profile key report.titel is not in the parameter file"):
        apply_profile(tmp_path / "profile.yaml", tmp_path / "params.yaml")
