"""``anatcl compare RUN_A RUN_B``: are two runs of the pipeline the same, bit for bit, where it matters?

Two project folders (or two ``outputs/`` folders) are fingerprinted and compared entry by entry:

* every ``checkpoint.pt`` (read with the safe reader, no pickled code runs): each tensor of the
  weights, the objective, the optimiser and the scheduler (dtype, shape and the bytes), the epoch,
  the training history, the descriptor normaliser and the age scale;
* every JSON file (``probes.json``, ``metrics.json``, ``summary.json``, ...) value by value;
* every other result file (``.tsv``, ``.csv``, ``.npy``, ``.npz``, ``.txt``, ``.png``) by its bytes.

Memory stays bounded whatever the files: bytes are hashed in fixed-size chunks
(:func:`hashlib.file_digest`), and a JSON file above :data:`JSON_ENTRY_LIMIT` or a checkpoint
above :data:`CHECKPOINT_ENTRY_LIMIT` is compared by its bytes as a whole, provenance included (the
pipeline writes neither that large; reading one whole took 3.3 GB for a 3 GB file).

A run is a folder the pipeline wrote into: a project folder or its ``outputs/`` holding at least
one of :data:`RUN_MARKERS` (``pretrain/*/checkpoint.pt``, ``evaluate/*/probes.json``, ...). Any
other folder is refused in one line before anything is read (``/usr/share`` is not a run).

Provenance is left out, since it differs between any two runs without the results differing: wall-clock
timings (``seconds``, ``train_seconds``, ``timed_epochs`` and dvclive's ``seconds.tsv`` curve), the
code and data fingerprints a checkpoint keeps to refuse resuming other code, executed notebooks,
logs and ``report.html`` (which prints timings). This is the check that a restructuring of the
code left the results alone (README, "Layout"); across thread counts or machines it shows the
float-rounding differences that training amplifies (:mod:`anatcl_core.cores`).

Entries present in one run only (an output added or renamed) are listed, not counted as differing.
Names are printed escaped (a newline as ``\\n``, a backslash doubled), so one entry is one line.
Exit status: 0 when nothing differs, 1 when something does or nothing could be compared, 2 on bad
arguments: a folder that is not a run, or a result file that is not what its name says (JSON that
does not parse or is nested deeper than :data:`JSON_MAX_DEPTH`), each one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from anatcl_core.model.allowlist import UnsafeCheckpointError
from anatcl_core.model.checkpoint import CheckpointError, safe_load

#: Keys (JSON keys, checkpoint keys, curve names) that are provenance, not results.
PROVENANCE_KEYS = frozenset({"fingerprint", "code_fingerprint", "seconds", "train_seconds", "timed_epochs"})
#: Folders and files of ``outputs/`` that are provenance.
PROVENANCE_PARTS = frozenset({"notebooks", "logs", "report.html"})
#: What of a checkpoint is compared.
CHECKPOINT_KEYS = ("model", "objective", "optimizer", "scheduler", "epoch", "history", "normalizer", "age_scale")
RESULT_SUFFIXES = (".tsv", ".csv", ".npy", ".npz", ".txt", ".png")
#: What the pipeline writes, relative to ``outputs/`` (dvc.yaml's outputs, the executed notebooks, the
#: logs of ``make repro``): one of them makes a folder a run, partial runs included.
RUN_MARKERS = ("pretrain/*/checkpoint.pt", "evaluate/*/probes.json", "reference/*/probes.json",
               "pretrain/*/dvclive/metrics.json", "cohort/summary.json", "report/metrics.json",
               "notebooks/*.ipynb", "notebooks/*/*.ipynb", "logs/pipeline.json", "logs/*.log")
#: Larger JSON files and checkpoints are compared by their bytes, not entry by entry (module docstring).
JSON_ENTRY_LIMIT = 16 * 2**20
CHECKPOINT_ENTRY_LIMIT = 2**30
#: The pipeline's JSON files nest a few levels; far deeper is no result file (and overflows the stack).
JSON_MAX_DEPTH = 100


class CompareError(ValueError):
    """A folder that is not a run, or a result file that cannot be compared; one line naming it."""


def _tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return f"{flat.dtype}{tuple(tensor.shape)}:{hashlib.sha1(raw).hexdigest()}"


def _flatten(value: Any, where: str, out: dict[str, str], depth: int = 0) -> None:
    """Leaves of nested dicts / lists / tensors as ``where.key[i]`` -> a comparable string.

    Raises:
        RecursionError: nested deeper than :data:`JSON_MAX_DEPTH` (as the JSON decoder says it; the caller
            names the file).
    """
    if depth > JSON_MAX_DEPTH:
        raise RecursionError(where)
    if isinstance(value, torch.Tensor):
        out[where] = _tensor_digest(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if str(key) not in PROVENANCE_KEYS:
                _flatten(item, f"{where}.{key}", out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{where}[{i}]", out, depth + 1)
    else:
        out[where] = repr(value)


def file_digest(path: Path) -> str:
    """sha1 of ``path``'s bytes, read in fixed-size chunks (memory does not grow with the file)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def _json_entries(path: Path, rel: str, out: dict[str, str]) -> None:
    """A JSON file value by value into ``out``; one line naming the file when it is not a result file."""
    try:
        _flatten(json.loads(path.read_text(encoding="utf-8")), rel, out)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CompareError(f"{escaped(str(path))}: not JSON text ({' '.join(str(err).split())[:80]})") from None
    except RecursionError:  # the decoder's own (nesting in the thousands) or _flatten's depth limit
        raise CompareError(f"{escaped(str(path))}: nested deeper than {JSON_MAX_DEPTH} levels; "
                           "not a result file") from None


def _outputs(folder: Path) -> Path:
    """``folder/outputs`` for a project folder, ``folder`` itself for an outputs folder."""
    return folder / "outputs" if (folder / "outputs").is_dir() else folder


def run_root(folder: str | Path) -> Path:
    """The outputs folder of the run at ``folder`` (a project folder or its ``outputs/``).

    Only the fixed places of :data:`RUN_MARKERS` are looked at, so refusing ``/usr/share`` walks nothing.

    Raises:
        CompareError: ``folder`` is not a folder, or holds none of :data:`RUN_MARKERS`.
    """
    root = _outputs(Path(folder))
    shown = escaped(str(folder))
    if not root.is_dir():
        raise CompareError(f"{shown}: not a folder; expected a project folder or its outputs/")
    if not any(next(root.glob(marker), None) for marker in RUN_MARKERS):
        raise CompareError(f"{shown}: not a run of the pipeline; expected a project folder or its outputs/ holding "
                           f"{' or '.join(RUN_MARKERS[:3])} (or another stage's output)")
    return root


def _checkpoint_entries(path: Path, rel: str, out: dict[str, str]) -> None:
    state = safe_load(path)
    if not isinstance(state, dict):
        raise CompareError(f"{escaped(str(path))}: not a checkpoint of this project (expected a dict of entries)")
    try:
        for key in CHECKPOINT_KEYS:
            if key in state:
                _flatten(state[key], f"{rel}:{key}", out)
    except RecursionError:
        raise CompareError(f"{escaped(str(path))}: entries nested deeper than {JSON_MAX_DEPTH} levels; "
                           "not a checkpoint of this project") from None


def fingerprint(folder: str | Path) -> dict[str, str]:
    """Every compared entry of a run (module docstring): ``relative path[:key...]`` -> digest or value.

    Raises:
        CompareError: ``folder`` is not a run, or a JSON result file is not one.
    """
    root = run_root(folder)
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if PROVENANCE_PARTS & set(rel.split("/")) or path.stem in PROVENANCE_KEYS:
            continue
        size = path.stat().st_size
        if path.name == "checkpoint.pt" and size <= CHECKPOINT_ENTRY_LIMIT:
            _checkpoint_entries(path, rel, out)
        elif path.suffix == ".json" and size <= JSON_ENTRY_LIMIT:
            _json_entries(path, rel, out)
        elif path.suffix in (*RESULT_SUFFIXES, ".json") or path.name == "checkpoint.pt":
            out[rel] = file_digest(path)
    return out


def escaped(name: str) -> str:
    """``name`` with every unprintable character (newline, tab, an undecodable byte) and ``\\`` escaped.

    What a file name holds then cannot print as a line of its own (a forged ``differs:`` line).
    """
    return "".join("\\\\" if c == "\\" else c if c.isprintable() else repr(c)[1:-1] for c in name)


def compare(a: dict[str, str], b: dict[str, str]) -> dict[str, list[str]]:
    """The entries that differ, and those present in one run only."""
    return {"differ": sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
            "only_a": sorted(a.keys() - b.keys()), "only_b": sorted(b.keys() - a.keys())}


def main(argv: Sequence[str] | None = None) -> int:
    """``anatcl compare RUN_A RUN_B [--show N]``; prints the comparison, returns the exit status."""
    parser = argparse.ArgumentParser(prog="anatcl compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_a", help="a project folder (or its outputs/)")
    parser.add_argument("run_b", help="another one")
    parser.add_argument("--show", type=int, default=20, help="entries listed per kind (default 20)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run_root(args.run_a), run_root(args.run_b)  # both refused before either is read
        a, b = fingerprint(args.run_a), fingerprint(args.run_b)
    except (CompareError, CheckpointError, UnsafeCheckpointError) as err:  # each names its file
        print(f"anatcl compare: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    result = compare(a, b)
    common = len(a.keys() & b.keys())
    run_a, run_b = escaped(args.run_a), escaped(args.run_b)
    print(f"{common} entries compared: {len(result['differ'])} differ; {len(result['only_a'])} only in "
          f"{run_a}, {len(result['only_b'])} only in {run_b}")
    for kind, label in (("differ", "differs"), ("only_a", f"only in {run_a}"), ("only_b", f"only in {run_b}")):
        for key in result[kind][:args.show]:
            print(f"  {label}: {escaped(key)}")
    return 1 if result["differ"] or not common else 0


if __name__ == "__main__":
    sys.exit(main())
