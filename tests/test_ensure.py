"""``make data``: a fresh clone regenerates data/ and finds it matching data.dvc; drift is an error."""

import shutil
import subprocess
from pathlib import Path

import pytest
from dvc.repo import Repo

from anatcl_core.synth import ensure as ens


def _fake_generate(params: Path, data_dir: Path, text: str = "cohort v1\n") -> None:
    (data_dir / "openbhb").mkdir(parents=True)
    (data_dir / "openbhb" / "participants.tsv").write_text(text)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", str(tmp_path / ".dvc" / "site_cache"))
    subprocess.run(["git", "init", "-q"], check=True)
    Repo.init(str(tmp_path))
    monkeypatch.setattr(ens, "generate", _fake_generate)
    return tmp_path


def test_update_then_fresh_clone_regenerates_and_matches(repo):
    data, dvc_file = repo / "data", repo / "data.dvc"
    assert "commit" in ens.ensure(Path("params.yaml"), data, dvc_file, update=True)
    assert dvc_file.exists()
    # a fresh clone: no data/, no cache
    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    assert ens.ensure(Path("params.yaml"), data, dvc_file).startswith("generated and checked")
    assert ens.ensure(Path("params.yaml"), data, dvc_file).startswith("checked")


def test_drift_is_refused_with_instructions(repo):
    data, dvc_file = repo / "data", repo / "data.dvc"
    ens.ensure(Path("params.yaml"), data, dvc_file, update=True)
    (data / "openbhb" / "participants.tsv").write_text("cohort v2\n")
    with pytest.raises(ens.DataMismatchError, match="make data-update"):
        ens.ensure(Path("params.yaml"), data, dvc_file)
    assert ens.main(["--data", str(data), "--dvc-file", str(dvc_file)]) == 1


def test_missing_dvc_file(repo):
    with pytest.raises(FileNotFoundError, match="--update"):
        ens.ensure(Path("params.yaml"), repo / "data", repo / "data.dvc")
