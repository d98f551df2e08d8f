"""Bad-input corpus, part 3: parameter files.

Each case is ``params.yaml`` with one value a careless edit could give (or a file that is not
what it seems); loading the section is refused with a one-line :class:`ConfigError` naming the
file, the key and what was expected, before any stage works. The profile tool
(``python -m anatcl_core.cli.profile``) refuses the same values in a merged profile, and an output
that is not a regular file, before it writes anything; ``synth.ensure`` (``make data``) refuses a
bad ``synth:`` value in one line before it touches ``data/``.
"""

from __future__ import annotations

import copy
import math
import time
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
    "num-threads-19-digits": ("pretrain.num_threads", 10**18, "expected <= 999999999999999999"),
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
    "synth-voxel-zero": ("synth.voxel_mm", 0, "expected >= 1.5"),
    "synth-voxel-1000": ("synth.voxel_mm", 1000, "expected <= 12.0"),
    "synth-pretrain-huge": ("synth.n_pretrain", 10**9, "expected <= 40000"),
    "synth-downstream-huge": ("synth.downstream_scale", 1e6, "expected <= 10.0"),
    "synth-external-sites": ("synth", {"n_sites": 4, "n_external_sites": 4}, "n_external_sites = 4: expected < n_sites"),
    "synth-fraction": ("synth.internal_test_fraction", 1.0, "expected < 1"),
    "synth-noise-negative": ("synth.site_noise_max", -0.1, "expected >= 0"),
    "cohort-dpi-zero": ("cohort.dpi", 0, "expected >= 1"),
    "cohort-voxel-negative": ("cohort.voxel_mm", -1.5, "expected > 0"),
    "cohort-channel": ("cohort.trajectory_channels[0]", ["thickness"], "expected one of"),
    "report-embedding": ("report.embedding", "umap", "expected one of 'pca' or 'tsne'"),
    "report-dpi": ("report.dpi", -1, "expected >= 1"),
    "report-ablation-empty": ("report.ablations.backbone", [], "at least 1 item"),
    "report-title-long": ("report.title", "x" * 10_000, "expected at most 200 characters"),
    "report-label-long": ("report.labels.random", "x" * 201, "expected at most 200 characters"),
    "method-name-long": ("pretrain", ["m" * 5000], "expected at most 4096 characters"),
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


#: 10 nested anchors (the red team's had 25: 10 GB, minutes); refused at the first alias.
ALIAS_BOMB = ("pretrain:\n  run:\n    - a0: &a0 [x, x]\n"
              + "".join(f"    - a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 10))).encode()

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
    # issue 23: each of these ran for minutes, took gigabytes or gave a traceback
    "alias-bomb": (ALIAS_BOMB, "line 4: YAML alias *a0: parameter files take no aliases"),
    "alias-merge-key": (b"report: &r {dpi: 1}\nevaluate: {<<: *r}\n", "line 2: YAML alias *r"),
    "deep-nesting": (b"report:\n  title: " + b"[" * 5000 + b"]" * 5000 + b"\n", "line 2: nested more than 20 levels"),
    "list-as-key": (b"report:\n  ? [a, b]\n  : 1\n", "line 2: a list used as a key; expected a name or number"),
    "mapping-as-key": (b"report:\n  {a: 1}: 1\n", "line 2: a mapping used as a key"),
    "integer-5000-digits": (b"report:\n  dpi: " + b"9" * 5000 + b"\n", "integer 99999999999999999999... (5000 "
                            "characters) is outside"),
    "integer-65-bits": (b"report:\n  dpi: 36893488147419103232\n", "is outside +-9223372036854775807 (64 bits)"),
    "too-many-values": (b"report:\n  labels: [" + b"0," * 30_000 + b"0]\n", "more than 20,000 values"),
    "comments-over-1-mb": (b"report:\n  title: x\n" + b"#" * (1 << 20) + b"\n", "larger than 1 MB"),
    "title-over-1-mb": (b"report:\n  title: " + b"x" * (1 << 20) + b"\n", "larger than 1 MB"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_bad_file_is_refused(case, tmp_path):
    data, problem = FILES[case]
    path = tmp_path / "params.yaml"
    path.write_bytes(data)
    section = "pretrain" if case in ("duplicate-key", "alias-bomb") else "report" if b"report" in data else "evaluate"
    before = snapshot(tmp_path)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_section(path, section, SECTIONS[section])
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: ")
    assert problem in str(err.value), str(err.value)
    assert len(str(err.value)) < 400, "the message names the value, it does not echo it"
    assert time.perf_counter() - start < 10, "a parameter file is refused in seconds"
    assert snapshot(tmp_path) == before


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


def _profile(argv: list, capsys) -> tuple[int, list[str]]:
    """``python -m anatcl_core.cli.profile ARGV`` in-process; returns (status, message lines)."""
    from anatcl_core.cli import profile

    status = profile.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, [line for line in (captured.out + captured.err).splitlines() if line.strip()]


@pytest.fixture
def profile_case(tmp_path):
    """A folder with params.yaml and profiles/tiny.yaml copied from the repository."""
    work = tmp_path / "work"
    (work / "profiles").mkdir(parents=True)
    (work / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    (work / "profiles" / "tiny.yaml").write_bytes((REPO / "profiles" / "tiny.yaml").read_bytes())
    return work


def _out_device_link(work: Path) -> Path:
    (work / "full.yaml").symlink_to("/dev/full")  # a link: a regression replaces it, never /dev/full
    return work / "full.yaml"


def _out_fifo(work: Path) -> Path:
    import os

    (work.parent / "pipes").mkdir()
    os.mkfifo(work.parent / "pipes" / "out.yaml")  # outside ``work``: the snapshot would block reading it
    return work.parent / "pipes" / "out.yaml"


#: case -> (--out given the case folder, what the line must say after "--out '<path>': ")
OUTPUTS = {
    "out-device": (_out_device_link, "is a character device; expected a regular file or a new file name"),
    "out-fifo": (_out_fifo, "is a FIFO (named pipe); expected a regular file"),
    "out-is-the-profile": (lambda work: work / "profiles" / "tiny.yaml", "is also an input"),
    "out-is-a-folder": (lambda work: work / "profiles", "is a folder; expected a file name ending in .yaml/.yml"),
    "out-not-yaml": (lambda work: work / "params.txt", "unknown output format"),
}


@pytest.mark.parametrize("case", sorted(OUTPUTS))
def test_profile_refuses_an_output_that_is_not_a_new_or_regular_file(case, profile_case, capsys):
    out, problem = OUTPUTS[case][0](profile_case), OUTPUTS[case][1]
    before = snapshot(profile_case)
    status, lines = _profile([profile_case / "profiles" / "tiny.yaml", "--params", profile_case / "params.yaml",
                              "--out", out], capsys)
    assert_refused(status, lines, f"--out {str(out)!r}", problem)
    assert snapshot(profile_case) == before
    if case == "out-device":  # still the link to the device (the snapshot skips links)
        assert out.is_symlink() and out.is_char_device()
    if case == "out-fifo":  # still the FIFO (outside the snapshot)
        assert out.is_fifo()


#: case -> (profile text, what the line must say after "<profile> (merged over <params>): ")
PROFILES = {
    "wrong-types-and-ranges": ('pretrain: {epochs: "15", temperature: -1, learning_rate: .nan, run: []}\n',
                               "pretrain.epochs = '15': expected an integer"),
    "temperature-negative": ("pretrain: {temperature: -1}\n", "pretrain.temperature = -1: expected > 0"),
    "learning-rate-nan": ("pretrain: {learning_rate: .nan}\n", "pretrain.learning_rate = nan: expected a finite"),
    "run-empty": ("pretrain: {run: []}\n", "pretrain.run = []: expected at least 1 item"),
    "epochs-mapping": ("pretrain: {epochs: {a: 1}}\n", "pretrain.epochs: expected an integer"),
    "voxel-path": ("cohort: {voxel_mm: ../../etc}\n", "cohort.voxel_mm = '../../etc': expected a number"),
    "section-replaced": ("evaluate: 5\n", "evaluate: expected a mapping"),
    "title-long": ("report: {title: " + "x" * 300 + "}\n", "report.title = 'xxx"),
    "alias-bomb": (ALIAS_BOMB.decode(), "YAML alias *a0: parameter files take no aliases"),
}


@pytest.mark.parametrize("case", sorted(PROFILES))
def test_profile_refuses_a_merge_that_breaks_a_section_rule(case, profile_case, capsys):
    text, problem = PROFILES[case]
    profile, params = profile_case / "bad.yaml", profile_case / "params.yaml"
    profile.write_text(text)
    before = snapshot(profile_case)
    status, lines = _profile([profile, "--params", params], capsys)
    named = str(profile) if case == "alias-bomb" else f"{profile} (merged over {params})"
    assert_refused(status, lines, named, problem)
    assert snapshot(profile_case) == before


def test_profile_read_from_a_pipe_is_applied(profile_case, capsys):
    """``profile <(cat profiles/tiny.yaml)``: the pipe is read once (a second read found it empty)."""
    import os

    from anatcl_core.cli.profile import merged_text

    tiny = profile_case / "profiles" / "tiny.yaml"
    expected = merged_text(tiny, profile_case / "params.yaml")
    read, write = os.pipe()
    os.write(write, tiny.read_bytes())  # ~1 kB: fits the pipe's buffer
    os.close(write)
    try:
        status, lines = _profile([f"/dev/fd/{read}", "--params", profile_case / "params.yaml"], capsys)
    finally:
        os.close(read)
    assert (status, lines) == (0, [])
    assert (profile_case / "params.yaml").read_text() == expected != (REPO / "params.yaml").read_text()


@pytest.mark.parametrize("case", ["out-device", "out-fifo"])
def test_embed_shares_the_output_check(case, tmp_path, capsys, caplog):
    """``anatcl embed`` and the profile tool refuse an output through the one check (arguments.check_output)."""
    (tmp_path / "work").mkdir()
    out = {"out-device": _out_device_link, "out-fifo": _out_fifo}[case](tmp_path / "work")
    out = out.rename(out.with_suffix(".csv"))
    before = snapshot(tmp_path / "work")
    status, lines = run_cli(["embed", tmp_path / "scan.npy", "--weights", tmp_path / "w.pth", "--out", out],
                            capsys, caplog)
    assert_refused(status, lines, f"--out {str(out)!r}", "expected a regular file or a new file name")
    assert snapshot(tmp_path / "work") == before


def _ensure(argv: list, capsys, caplog) -> tuple[int, list[str]]:
    """``python -m anatcl_core.synth.ensure ARGV`` in-process; returns (status, message lines)."""
    import logging

    from anatcl_core.synth import ensure

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        status = ensure.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    return status, lines + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


#: case -> (synth: key, bad value, what the line must say after "<params>: synth.<key> = <value>: ")
ENSURE = {
    "voxel-1000": ("voxel_mm", 1000, "expected <= 12.0"),
    "voxel-text": ("voxel_mm", "4.5mm", "expected a number"),
    "sites-negative": ("n_sites", -1, "expected >= 2"),
    "seed-list": ("seed", [1], "expected an integer"),
}


@pytest.mark.parametrize("update", [False, True], ids=["make-data", "make-data-update"])
@pytest.mark.parametrize("case", sorted(ENSURE))
def test_ensure_refuses_a_bad_synth_value_before_touching_data(case, update, tmp_path, capsys, caplog):
    key, value, problem = ENSURE[case]
    params = copy.deepcopy(BASE)
    params["synth"][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "data.dvc").write_text("outs: []\n")
    if update:  # --update: the cohort already there must survive the refusal
        (tmp_path / "data" / "openbhb").mkdir(parents=True)
        (tmp_path / "data" / "openbhb" / "participants.tsv").write_text("cohort v1\n")
    before = snapshot(tmp_path)
    status, lines = _ensure(["--params", path, "--data", tmp_path / "data", "--dvc-file", tmp_path / "data.dvc",
                             *(["--update"] if update else [])], capsys, caplog)
    assert_refused(status, lines, f"{path}: synth.{key} = {value!r}", problem)
    assert snapshot(tmp_path) == before


def test_a_killed_writers_partial_folder_is_removed_by_the_next(tmp_path):
    """A generator killed outright (SIGKILL) left ``.data.partial-<pid>``; the next run removes it."""
    from anatcl_core.atomic import atomic_dir

    dead = tmp_path / ".data.partial-999999999"  # above any pid_max: no such process
    dead.mkdir()
    with atomic_dir(tmp_path / "data") as temporary:
        (temporary / "f").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


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
    assert "nested more than 20 levels" in str(err.value)
    assert snapshot(tmp_path) == before


def test_profile_key_not_in_params_names_the_profile(tmp_path):
    """Found by tests/test_fuzz_readers.py: the refusal named the key but not the profile file."""
    from anatcl_core.cli.profile import apply_profile

    (tmp_path / "params.yaml").write_text("report:\n  title: r\n", encoding="utf-8")
    (tmp_path / "profile.yaml").write_text("report:\n  titel: s\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"profile.yaml: profile key report.titel is not in the parameter file"):
        apply_profile(tmp_path / "profile.yaml", tmp_path / "params.yaml")
