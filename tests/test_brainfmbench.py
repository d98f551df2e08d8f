"""BrainFMBench submissions: export a trained tiny run, check it, run it in a fresh venv, compare with embed.

The acceptance of issue 22: the exported ``extract.py`` runs in a fresh environment that holds only
its ``requirements.txt`` (:mod:`anatcl_core.export.sandbox`), on two random 16^3 volumes with an
empty ``weights_dir`` and on embedded maps with the weights, and gives ``anatcl embed``'s features
of the same maps; a weights file whose sha256 differs is refused with one line naming it. The
checker is shown to fail on folders that break each rule (a tool that cannot fail checks nothing).
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import params_section, write_manifest, write_openbhb, write_openbhb_arrays

from anatcl_core.evaluation.embed import embed
from anatcl_core.export import brainfmbench, check, sandbox
from anatcl_core.model.trained import sha256_file
from anatcl_core.train import loop as train
from anatcl_core.train.data import load_train_data

URL = "https://huggingface.co/someone/anatcl-tiny/resolve/main/encoder-tiny.pt"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny anatcl_global run, laid out as the pipeline does (outputs/pretrain beside outputs/cohort)."""
    root = tmp_path_factory.mktemp("bfmb")
    arrays_dir = write_openbhb_arrays(write_openbhb(root / "outputs" / "cohort" / "openbhb", split_sizes=(8, 2, 2)))
    config = params_section("pretrain", base_width=4, epochs=2, batch_size=4, num_threads=1,
                            run=["anatcl_global"], seeds=[0])
    run = config.resolve("anatcl_global", 0)
    out = root / "outputs" / "pretrain" / "anatcl_global-s0"
    train.pretrain(run, load_train_data(arrays_dir, run.data, progress=False), out, progress=False, device="cpu")
    return out


@pytest.fixture(scope="module")
def submission(trained_run, tmp_path_factory) -> Path:
    return brainfmbench.export(trained_run, tmp_path_factory.mktemp("models") / "anatcl-tiny", weights_urls=[URL])


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> tuple[Path, Path]:
    """Embedded downstream maps (9 mm NIfTI) as ``<id>/normalized.nii.gz``, and their manifest."""
    root = tmp_path_factory.mktemp("maps")
    manifest = write_manifest(root / "downstream", n=4)
    table = pd.read_csv(manifest, sep="\t", dtype={"participant_id": str})
    for pid, image in zip(table["participant_id"], table["image"]):
        (root / "input" / pid).mkdir(parents=True)
        shutil.copy(manifest.parent / image, root / "input" / pid / "normalized.nii.gz")
    return root / "input", manifest


def weights_dir(submission: Path) -> Path:
    return Path(f"{submission}.weights")


def run_in_fresh_venv(folder: Path, args: list[str], tmp: Path):
    tmp.mkdir(parents=True, exist_ok=True)
    python = sandbox.offline_environment(folder, tmp / "env")
    return sandbox.run_extract(python, folder, args, tmp, timeout_s=600)


def test_exported_folder_is_the_contract_and_names_its_run(submission, trained_run):
    meta = yaml.safe_load((submission / "model.yaml").read_text())
    assert check.check_model_yaml(submission / "model.yaml")[0] == []
    assert meta["embedding_dim"] == 32  # base_width 4: 8 * 4 channels at the last stage
    assert "anatcl_global" in meta["name"] and "seed0" in meta["name"] and "2ep" in meta["name"]
    assert sha256_file(trained_run / "checkpoint.pt") in meta["description"]
    assert (submission / "weights.txt").read_text().split() == [URL]
    assert (weights_dir(submission) / "encoder-tiny.pt").is_file()  # the URL's last segment
    pins = dict(line.split("==") for line in (submission / "requirements.txt").read_text().split())
    import torch

    assert pins == {"torch": torch.__version__.split("+")[0], "numpy": np.__version__, "nibabel": nib.__version__}
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse((submission / "extract.py").read_text()))
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in getattr(node, "names", [])
                if isinstance(node, ast.Import)}
    imported |= {node.module.split(".")[0] for node in ast.walk(ast.parse((submission / "extract.py").read_text()))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - set(sys.stdlib_module_names) - {"__future__"} == {"torch", "numpy", "nibabel"}


def test_our_checker_passes_the_export_validator_case_and_weights_case(submission, maps):
    problems, report = check.check(submission, inputs=maps[0], weights_dir=weights_dir(submission))
    assert problems == []
    assert "fresh environment" in report[0]
    assert "UNTRAINED" in report[1]  # the validator's case warns, it does not crash


def test_fresh_venv_features_match_anatcl_embed(submission, maps, trained_run, tmp_path):
    out = tmp_path / "features.csv"
    done, network = run_in_fresh_venv(submission, [str(maps[0]), str(out), str(weights_dir(submission))],
                                      tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert network == []
    ours = pd.read_csv(out, dtype={"subject_id": str}).set_index("subject_id")
    table = pd.read_csv(maps[1], sep="\t", dtype={"participant_id": str})
    frame, _ = embed([maps[1].parent / p for p in table["image"]], trained_run / "checkpoint.pt",
                     tmp_path / "embed.csv", progress=False)
    reference = frame.set_index("participant_id").rename(index=lambda s: s.removesuffix("_mwp1"))
    assert list(ours.columns) == [f"f{j}" for j in range(32)]
    difference = np.abs(ours.loc[reference.index].to_numpy() - reference.to_numpy())
    assert difference.max() < 1e-5, difference.max()
    assert np.abs(reference.to_numpy()).max() > 1e-3  # not trivially zero


def test_empty_weights_give_the_right_width_deterministically(submission, tmp_path):
    inputs = tmp_path / "in"
    ids = check.write_validator_inputs(inputs, seed=3)
    (tmp_path / "empty").mkdir()
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"f{attempt}.csv"
        done, _ = run_in_fresh_venv(submission, [str(inputs), str(out), str(tmp_path / "empty")], tmp_path / f"r{attempt}")
        assert done.returncode == 0 and "UNTRAINED" in done.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert check.check_csv(tmp_path / "f0.csv", 32, ids) == []


def test_a_checkpoint_with_another_sha256_is_refused_in_one_line(submission, maps, tmp_path):
    bad = tmp_path / "weights"
    shutil.copytree(weights_dir(submission), bad)
    with open(bad / "encoder-tiny.pt", "ab") as handle:
        handle.write(b"\0")
    done, _ = run_in_fresh_venv(submission, [str(maps[0]), str(tmp_path / "x.csv"), str(bad)], tmp_path / "run")
    assert done.returncode != 0 and not (tmp_path / "x.csv").exists()
    last = done.stderr.strip().splitlines()[-1]
    assert str(bad / "encoder-tiny.pt") in last and "sha256" in last and "refused" in last


TOY = '''
import csv, os
{imports}

def extract(input_dir, output_csv, weights_dir{extra}):
    rows = []
    for sid in sorted(os.listdir(input_dir)):
        rows.append([sid] + [{value} for j in range({dim})])
    with open(output_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id"] + ["f%d" % j for j in range({dim})])
        w.writerows(rows)
'''


def toy(folder: Path, dim: int = 3, claimed: int = 3, extra: str = "", value: str = "0.5", imports: str = "",
        requirements: str = "") -> Path:
    """A minimal submission folder whose extract writes constant features (variants break one rule each)."""
    folder.mkdir(parents=True)
    meta = {"name": "toy", "authors": ["T"], "preprocessing": "cat12", "embedding_dim": claimed,
            "datasets": ["NKI"], "tasks": ["age"], "weightless": True}
    (folder / "model.yaml").write_text(yaml.safe_dump(meta))
    (folder / "weights.txt").write_text("")
    (folder / "extract.py").write_text(TOY.format(imports=imports, extra=extra, value=value, dim=dim))
    (folder / "requirements.txt").write_text(requirements or f"numpy=={np.__version__}\n")
    return folder


@pytest.mark.parametrize("variant, expected", [
    ({}, None),
    ({"extra": ", batch_size=4"}, "expected exactly input_dir, output_csv, weights_dir"),
    ({"claimed": 4}, "embedding_dim 4"),
    ({"value": "int.from_bytes(os.urandom(2), 'little')"}, "different bytes"),
    ({"imports": "import pandas"}, "No module named 'pandas'"),  # installed here, not in requirements
    ({"requirements": "numpy==0.0.1\n"}, "numpy==0.0.1 pinned"),
    ({"requirements": "numpy>=1\n"}, "not pinned"),
])
def test_checker_fails_each_broken_rule(tmp_path, variant, expected):
    problems, _ = check.check(toy(tmp_path / "toy", **variant))
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_checker_sees_network_use_even_when_the_extractor_swallows_the_error(tmp_path):
    folder = toy(tmp_path / "toy", imports="import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), 1)\n"
                 "except Exception:\n    pass")
    problems, _ = check.check(folder)
    assert any("network use during extract (socket." in p for p in problems), problems


def test_checker_refuses_bad_yaml_and_urls(tmp_path):
    folder = toy(tmp_path / "toy")
    meta = yaml.safe_load((folder / "model.yaml").read_text())
    meta.update(datasets=["ADNI"], authors="me", weightless=False)
    (folder / "model.yaml").write_text(yaml.safe_dump(meta))
    (folder / "weights.txt").write_text("https://drive.google.com/file/d/x/view\n")
    problems, report = check.check(folder)
    assert {p.split(";")[0].split(": ", 1)[1] for p in problems if "model.yaml" in p} == {
        "authors 'me'", "datasets ['ADNI']"}
    assert any("not a direct download" in p for p in problems)
    assert "extract not run" in report[-1]
