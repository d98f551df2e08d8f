"""The ``anatcl`` command dispatches to each tool and passes its exit status through."""

import subprocess
import sys

import pytest

from anatcl_core.cli import main as cli


def test_help_and_unknown_command(capsys):
    assert cli.main([]) == 2
    assert "validate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_validate_dispatch(openbhb_root, tmp_path):
    assert cli.main(["validate", "--no-progress", str(openbhb_root)]) == 0
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    assert cli.main(["validate", "--no-progress", str(bad)]) == 1


def test_weights_list_through_the_installed_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "anatcl_core.cli.main", "weights", "list"], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert {f"resnet18-anatcl-{d}-fold{f}" for d in ("g3", "l3") for f in range(5)} <= set(names)
