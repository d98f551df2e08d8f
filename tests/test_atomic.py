"""The one atomic writer: umask modes, nothing left on failure, SIGKILL leftovers replaced; and
CSV cells a spreadsheet would evaluate are written safely (Parquet unchanged)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from anatcl_core.atomic import atomic_dir, atomic_write, current_umask, remove_stale_temps
from anatcl_core.evaluation.embed import features_frame, write_table
from anatcl_core.model.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_get_the_mode_of_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert current_umask() == mask
    save_checkpoint({"epoch": 1}, tmp_path / "ckpt.pt")
    write_table(features_frame(["a"], pd.DataFrame([[1.0]]).to_numpy()), tmp_path / "f.csv")
    with atomic_write(tmp_path / "plain.txt") as tmp:
        tmp.write_text("x")
    for name in ("ckpt.pt", "f.csv", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failure_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_sigkill_leftover_is_ignored_and_replaced(tmp_path):
    target = tmp_path / "features.csv"
    code = ("import os, sys, time\nfrom anatcl_core.atomic import atomic_write\n"
            "with atomic_write(sys.argv[1]) as tmp:\n    tmp.write_text('partial')\n"
            "    print(tmp, flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    leftover = Path(proc.stdout.readline().strip())
    proc.kill()
    proc.wait()
    assert leftover.exists() and not target.exists()  # what SIGKILL leaves: a hidden temp file
    live = tmp_path / f".features.csv.{os.getpid()}.live.tmp"  # a writer still running keeps its file
    live.write_text("mine")
    with atomic_write(target) as tmp:
        tmp.write_text("complete")
    assert target.read_text() == "complete"
    assert not leftover.exists() and live.exists()
    assert remove_stale_temps(target) == []


def test_csv_cells_a_spreadsheet_would_run_are_escaped_parquet_unchanged(tmp_path):
    ids = ["=cmd|' /C calc'!A1", "+1", "-2", "@SUM(A1)", "sub-01"]
    frame = features_frame(ids, pd.DataFrame([[-1.5], [2.0], [0.0], [1.0], [3.0]]).to_numpy())
    write_table(frame, tmp_path / "f.csv")
    write_table(frame, tmp_path / "f.parquet")
    csv = pd.read_csv(tmp_path / "f.csv", dtype={"participant_id": str})
    assert list(csv["participant_id"]) == ["'=cmd|' /C calc'!A1", "'+1", "'-2", "'@SUM(A1)", "sub-01"]
    assert list(csv["feature_000"]) == [-1.5, 2.0, 0.0, 1.0, 3.0]  # numbers, negative ones too, as is
    assert list(pd.read_parquet(tmp_path / "f.parquet")["participant_id"]) == ids


def test_a_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "cohort"
    with pytest.raises(RuntimeError, match="renderer died"):
        with atomic_dir(target) as partial:
            (partial / "openbhb").mkdir()
            (partial / "openbhb" / "participants.tsv").write_text("participant_id\n1\n")
            raise RuntimeError("renderer died")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the partial folder
    with atomic_dir(target) as partial:
        (partial / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a" and list(tmp_path.iterdir()) == [target]
    with pytest.raises(FileExistsError, match=f"{target}: output folder already exists"):
        with atomic_dir(target):
            pass
    assert (target / "a.txt").read_text() == "a"
