"""Injected faults on every writer (issue 23): a full disk, an I/O error, a refused permission, and
death between the temp file and the rename, at every step of a write.

A *step* is one call into the OS that a write makes: creating a folder, creating the temp file
(``os.open``), opening a file for writing, each ``write`` on it, ``fsync``, ``chmod``, ``replace``.
For each writer a clean run counts its steps; then, for each fault, a run fails at step 1, 2, ... n
over the previous outputs. Each time: the error is a ``WriteError`` (an ``OSError``) whose one line
names the destination, never the temp file; every output holds its previous bytes or its complete
new bytes (a writer of several files replaces them one by one), the file named in the error its
previous bytes; no temp file is left. Death right before a rename: ``KeyboardInterrupt`` (what
SIGINT/SIGTERM raise) leaves no temp; ``os._exit`` in a forked child (no ``finally`` runs, like
SIGKILL) leaves one, which the next write removes.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from anatcl_core import atomic
from anatcl_core.atomic import WriteError
from anatcl_core.data import arrays, io as volume_io, resources
from anatcl_core.evaluation import embed, evaluate
from anatcl_core.model.checkpoint import save_checkpoint
from anatcl_core.report import figures, tables

matplotlib.use("Agg")

FAULTS = {
    "ENOSPC": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "EIO": lambda: OSError(errno.EIO, os.strerror(errno.EIO)),
    "EACCES": lambda: PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
}


class Stop(BaseException):
    """Raised at the chosen step by a hook (``KeyboardInterrupt`` or a fault)."""


class Steps:
    """Counts the OS steps of writes and raises ``fault()`` at step ``fail_at`` (1-based; 0: never).

    ``only`` restricts counting to one kind of step (``"replace"``: death before a rename).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int = 0, fault: Callable[[], BaseException] | None = None,
                 only: str | None = None):
        self.fail_at, self.fault, self.only, self.taken = fail_at, fault, only, []
        real_open, real_os_open = builtins.open, os.open
        real = {name: getattr(os, name) for name in ("fsync", "chmod", "replace", "mkdir")}

        def step(kind: str, what) -> None:
            if self.only in (None, kind):
                self.taken.append(f"{kind} {what}")
                if len(self.taken) == self.fail_at:
                    raise self.fault()

        def opened(file, mode="r", *args, **kwargs):
            if isinstance(file, int) or not set(mode) & set("wax+"):
                return real_open(file, mode, *args, **kwargs)
            step("open", file)
            return _Counted(real_open(file, mode, *args, **kwargs), step)

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                step("create", path)
            return real_os_open(path, flags, *args, **kwargs)

        def hooked(name):
            def call(path, *args, **kwargs):
                if name != "mkdir" or not os.path.exists(path):  # mkdir of an existing folder: EEXIST first
                    step(name, path)
                return real[name](path, *args, **kwargs)
            return call

        monkeypatch.setattr(builtins, "open", opened)
        monkeypatch.setattr(io, "open", opened)  # pathlib's write_text opens through io.open
        monkeypatch.setattr(os, "open", os_open)  # tempfile.mkstemp
        for name in real:
            monkeypatch.setattr(os, name, hooked(name))


class _Counted:
    """A file whose ``write`` calls are steps (numpy, pandas, torch and matplotlib write through it)."""

    def __init__(self, file, step):
        self._file, self._step = file, step

    def write(self, data):
        self._step("write", self._file.name)
        return self._file.write(data)

    def writelines(self, lines):
        self._step("write", self._file.name)
        return self._file.writelines(lines)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __iter__(self):
        return iter(self._file)


# ------------------------------------------------------------------ the writers, on small inputs
def _cohort() -> arrays.Cohort:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"participant_id": ["0012", "b", "c"], "age": [20.5, 31.0, 42.0], "sex": [0, 1, 0]})
    return arrays.Cohort(rng.random((3, 1, 4, 5, 4), dtype=np.float32), table,
                         rng.random((3, 7, 5), dtype=np.float32))


def _figure() -> Figure:
    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2])
    return fig


def _evaluate(out: Path, version: int) -> None:
    x = {"openbhb": np.full((3, 4), version, np.float32), "downstream": np.arange(8, dtype=np.float32).reshape(2, 4)}
    ids = {"openbhb": pd.Series(["a", "b", "c"]), "downstream": pd.Series(["d", "e"])}
    evaluate.save_outputs(out, {"method": "m", "seed": version}, x, ids, {"age": np.arange(3.0) + version})


def _checkpoint(out: Path, version: int) -> None:
    torch.manual_seed(version)
    save_checkpoint({"model": torch.nn.Linear(6, 3).state_dict(), "epoch": version, "history": [{"loss": 1.5}]},
                    out / "checkpoint.pt")


#: writer name -> (write(out_dir, version), outputs relative to out_dir)
WRITERS: dict[str, tuple[Callable[[Path, int], object], tuple[str, ...]]] = {
    "atomic_write": (lambda out, v: atomic.write_text(out / "a.txt", f"version {v}\n" * 50), ("a.txt",)),
    "atomic_open": (lambda out, v: _atomic_open(out / "a.npy", v), ("a.npy",)),
    "checkpoint": (_checkpoint, ("checkpoint.pt",)),
    "cohort_arrays": (lambda out, v: arrays.write_cohort(out, "openbhb", _versioned(_cohort(), v)),
                      ("openbhb.npy", "openbhb_roi.npy", "openbhb.tsv", "openbhb_columns.json")),
    "features_csv": (lambda out, v: embed.write_table(_features(v), out / "features.csv"), ("features.csv",)),
    "features_parquet": (lambda out, v: embed.write_table(_features(v), out / "features.parquet"), ("features.parquet",)),
    "evaluate": (_evaluate, ("probes.json", "features.npz", "predictions.npz")),
    "report_table": (lambda out, v: tables.write_tsv(pd.DataFrame({"bacc": [0.5 + v / 10]}, index=["m"]),
                                                     out / "tables" / "t.tsv"), ("tables/t.tsv",)),
    "report_figure": (lambda out, v: figures.save_figures({"f": _figure()} if v else {"f": Figure(figsize=(1, 1))},
                                                          out / "figures", 50), ("figures/f.png",)),
    "report_html": (lambda out, v: atomic.write_text(out / "report.html", f"<html>{v}</html>\n"), ("report.html",)),
    "nifti": (lambda out, v: volume_io.save_nifti(np.full((3, 4, 5), v, np.float32), np.eye(4), out / "m.nii.gz"),
              ("m.nii.gz",)),
    "roi_csv": (lambda out, v: resources.write_tables(out / "roi.csv", ["a"], np.full((1, 7, 68), v, np.float32)),
                ("roi.csv",)),
}


def _atomic_open(path: Path, version: int) -> None:
    with atomic.atomic_open(path) as handle:
        np.save(handle, np.full(100, version))


def _versioned(cohort: arrays.Cohort, version: int) -> arrays.Cohort:
    cohort.images += version
    cohort.table["age"] = (cohort.table["age"] + version).astype("float32" if version else "float64")  # the dtypes too
    cohort.descriptors -= version
    return cohort


def _features(version: int) -> pd.DataFrame:
    return embed.features_frame(["=a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3) + version)


def _snapshot(out: Path, names: tuple[str, ...]) -> dict[str, bytes | None]:
    return {n: (out / n).read_bytes() if (out / n).is_file() else None for n in names}


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.name.endswith(atomic.TEMP_SUFFIX) or ".partial-" in p.name)


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict[str, tuple[dict, dict, int]]:
    """Per writer: the bytes of version 0 and 1, and the number of steps writing version 1 over version 0."""
    found = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, (write, names) in WRITERS.items():
            out = tmp_path_factory.mktemp(name)
            write(out, 0)
            old = _snapshot(out, names)
            steps = Steps(mp)
            write(out, 1)
            mp.undo()
            found[name] = (old, _snapshot(out, names), len(steps.taken))
            assert all(old[n] != found[name][1][n] for n in names), name  # every file changes
    return found


def test_every_writer_takes_several_steps(expected):
    for name, (_, _, n) in expected.items():
        assert n >= 5, f"{name}: {n} steps"  # create, open, write, fsync, chmod, replace at least


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_fault_at_every_step_leaves_the_previous_outputs_and_names_the_file(
        writer, fault, expected, tmp_path, monkeypatch):
    write, names = WRITERS[writer]
    old, new, n = expected[writer]
    for k in range(1, n + 1):
        out = tmp_path / str(k)
        write(out, 0)
        steps = Steps(monkeypatch, fail_at=k, fault=FAULTS[fault])
        with pytest.raises(OSError) as caught:
            write(out, 1)
        monkeypatch.undo()
        where = f"{writer}, {fault} at step {k} ({steps.taken[-1]})"
        message = str(caught.value)
        assert isinstance(caught.value, WriteError), f"{where}: {type(caught.value).__name__}: {message}"
        named = [name for name in names if f"{out / name}:" in message]
        assert len(named) == 1 and "\n" not in message and atomic.TEMP_SUFFIX not in message, f"{where}: {message}"
        assert message.startswith(f"{out / named[0]}: cannot write ({os.strerror(FAULTS[fault]().errno)}")
        now = _snapshot(out, names)
        assert now[named[0]] == old[named[0]], f"{where}: {named[0]} changed"
        assert all(now[n] in (old[n], new[n]) for n in names), f"{where}: an output is neither old nor new"
        assert _leftovers(out) == [], where


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_an_interrupt_before_each_rename_leaves_the_previous_file_and_no_temp(writer, expected, tmp_path, monkeypatch):
    write, names = WRITERS[writer]
    old, new, _ = expected[writer]
    for k in range(1, len(names) + 1):
        out = tmp_path / str(k)
        write(out, 0)
        Steps(monkeypatch, fail_at=k, fault=KeyboardInterrupt, only="replace")
        with pytest.raises(KeyboardInterrupt):
            write(out, 1)
        monkeypatch.undo()
        now = _snapshot(out, names)
        assert [now[n] == new[n] for n in names] == [i < k - 1 for i in range(len(names))], f"{writer} at rename {k}"
        assert [now[n] for n in names[k - 1:]] == [old[n] for n in names[k - 1:]]
        assert _leftovers(out) == []


@pytest.mark.parametrize("writer", ["atomic_write", "checkpoint", "cohort_arrays", "evaluate"])
def test_death_before_a_rename_leaves_the_previous_file_and_the_next_write_cleans_up(writer, expected, tmp_path):
    """``os._exit`` in a forked child right before its last rename: no ``finally`` runs (SIGKILL)."""
    write, names = WRITERS[writer]
    old, new, _ = expected[writer]
    out = tmp_path / "out"
    write(out, 0)
    pid = os.fork()
    if pid == 0:  # the child: die at the last rename, its temp file written and synced
        with pytest.MonkeyPatch.context() as mp:
            Steps(mp, fail_at=len(names), fault=lambda: os._exit(9), only="replace")
            try:
                write(out, 1)
            finally:
                os._exit(3)  # never reached unless the hook did not fire
    assert os.waitpid(pid, 0)[1] >> 8 == 9
    assert _snapshot(out, names)[names[-1]] == old[names[-1]]
    assert len(_leftovers(out)) == 1  # the dead writer's temp file, its pid in the name
    write(out, 1)
    assert _snapshot(out, names) == new and _leftovers(out) == []


def test_a_folder_write_fails_whole_at_every_step(tmp_path, monkeypatch):
    """``atomic_dir`` (the synthetic cohort): a fault at any step leaves neither the folder nor its temp."""

    def write(target: Path) -> None:
        with atomic.atomic_dir(target) as partial:
            (partial / "sub").mkdir()
            (partial / "sub" / "participants.tsv").write_text("participant_id\n1\n")
            np.save(partial / "sub" / "image.npy", np.zeros(4))

    steps = Steps(monkeypatch)
    write(tmp_path / "clean")
    monkeypatch.undo()
    for fault in FAULTS:
        for k in range(1, len(steps.taken) + 1):
            target = tmp_path / f"{fault}-{k}"
            Steps(monkeypatch, fail_at=k, fault=FAULTS[fault])
            with pytest.raises(OSError) as caught:
                write(target)
            monkeypatch.undo()
            assert not target.exists() and _leftovers(tmp_path) == [], f"{fault} at step {k}"
            if steps.taken[k - 1].startswith("replace"):  # the rename names the folder
                assert str(caught.value).startswith(f"{target}: cannot write")
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == json.dumps(["clean"])
