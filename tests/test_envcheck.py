"""The install check passes with a note for every torch build on every machine (issue 10, item 4)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anatcl_core.cli import envcheck


@pytest.mark.parametrize(
    ("cuda_version", "gpu", "device", "note"),
    [
        ("12.8", False, "CPU", "no GPU"),  # the public index's build on a stock CPU-only box
        ("12.8", True, "GPU", None),  # the same pinned install on a GPU machine
        (None, False, "CPU", None),  # the CPU-index wheel (this machine)
        (None, True, "CPU", "CPU-only build"),
    ],
)
def test_main_passes_for_both_builds(monkeypatch, capsys, cuda_version, gpu, device, note):
    monkeypatch.setattr(torch.version, "cuda", cuda_version)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert envcheck.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"training runs on the {device}")
    if note is None:
        assert len(lines) == 1
    else:
        assert len(lines) == 2 and note in lines[1]
    if cuda_version and not gpu:
        assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in lines[1]


def test_cpu_hint_names_the_pinned_version():
    pin = next(line for line in (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines() if line.startswith("torch=="))
    assert pin.strip() in envcheck.CPU_INDEX_HINT


def test_module_runs_and_exits_zero_here():
    done = subprocess.run([sys.executable, "-m", "anatcl_core.cli.envcheck"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"envcheck: torch {torch.__version__}")


def test_dvc_reads_yaml_through_libyaml():
    """requirements.txt pins ruamel.yaml.clib: DVC's safe loads of dvc.lock (a few per stage) go through
    libyaml, 3x faster than ruamel's pure-Python parser, with the same values for every file here."""
    import glob

    from dvc.utils.serialize import parse_yaml
    from ruamel.yaml import YAML

    assert YAML(typ="safe").Parser.__module__.startswith("ruamel.yaml.clib")
    root = Path(__file__).parents[1]
    for path in ["params.yaml", "dvc.yaml", "dvc.lock", *glob.glob(str(root / "profiles" / "*.yaml"))]:
        text = (root / path).read_text()
        assert parse_yaml(text, path) == YAML(typ="safe", pure=True).load(text), path
