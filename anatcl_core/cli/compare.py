"""``anatcl compare RUN_A RUN_B``: are two runs of the pipeline the same, bit for bit, where it matters?

Two project folders (or two ``outputs/`` folders) are fingerprinted and compared entry by entry:

* every ``checkpoint.pt`` (read with the safe reader, no pickled code runs): each tensor of the
  weights, the objective, the optimiser and the scheduler (dtype, shape and the bytes), the epoch,
  the training history, the descriptor normaliser and the age scale;
* every JSON file (``probes.json``, ``metrics.json``, ``summary.json``, ...) value by value;
* every other result file (``.tsv``, ``.csv``, ``.npy``, ``.npz``, ``.txt``, ``.png``) by its bytes.

Provenance is left out, since it differs between any two runs without the results differing: wall-clock
timings (``seconds``, ``train_seconds``, ``timed_epochs`` and dvclive's ``seconds.tsv`` curve), the
code and data fingerprints a checkpoint keeps to refuse resuming other code, executed notebooks,
logs and ``report.html`` (which prints timings). This is the check that a restructuring of the
code left the results alone (README, "Layout"); across thread counts or machines it shows the
float-rounding differences that training amplifies (:mod:`anatcl_core.cores`).

Entries present in one run only (an output added or renamed) are listed, not counted as differing.
Exit status: 0 when nothing differs, 1 when something does or nothing could be compared, 2 on bad
arguments.
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

from anatcl_core.model.checkpoint import safe_load

#: Keys (JSON keys, checkpoint keys, curve names) that are provenance, not results.
PROVENANCE_KEYS = frozenset({"fingerprint", "code_fingerprint", "seconds", "train_seconds", "timed_epochs"})
#: Folders and files of ``outputs/`` that are provenance.
PROVENANCE_PARTS = frozenset({"notebooks", "logs", "report.html"})
#: What of a checkpoint is compared.
CHECKPOINT_KEYS = ("model", "objective", "optimizer", "scheduler", "epoch", "history", "normalizer", "age_scale")
RESULT_SUFFIXES = (".tsv", ".csv", ".npy", ".npz", ".txt", ".png")


def _tensor_digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return f"{flat.dtype}{tuple(tensor.shape)}:{hashlib.sha1(raw).hexdigest()}"


def _flatten(value: Any, where: str, out: dict[str, str]) -> None:
    """Leaves of nested dicts / lists / tensors as ``where.key[i]`` -> a comparable string."""
    if isinstance(value, torch.Tensor):
        out[where] = _tensor_digest(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            if str(key) not in PROVENANCE_KEYS:
                _flatten(item, f"{where}.{key}", out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{where}[{i}]", out)
    else:
        out[where] = repr(value)


def _outputs(folder: Path) -> Path:
    """``folder/outputs`` for a project folder, ``folder`` itself for an outputs folder."""
    return folder / "outputs" if (folder / "outputs").is_dir() else folder


def fingerprint(folder: str | Path) -> dict[str, str]:
    """Every compared entry of a run (module docstring): ``relative path[:key...]`` -> digest or value.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    root = _outputs(Path(folder))
    if not root.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder; expected a project folder or its outputs/")
    out: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if PROVENANCE_PARTS & set(rel.split("/")) or path.stem in PROVENANCE_KEYS:
            continue
        if path.name == "checkpoint.pt":
            state = safe_load(path)
            if not isinstance(state, dict):
                raise ValueError(f"{path}: not a checkpoint of this project (expected a dict of entries)")
            for key in CHECKPOINT_KEYS:
                if key in state:
                    _flatten(state[key], f"{rel}:{key}", out)
        elif path.suffix == ".json":
            _flatten(json.loads(path.read_text()), rel, out)
        elif path.suffix in RESULT_SUFFIXES:
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


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
    a, b = fingerprint(args.run_a), fingerprint(args.run_b)
    result = compare(a, b)
    common = len(a.keys() & b.keys())
    print(f"{common} entries compared: {len(result['differ'])} differ; {len(result['only_a'])} only in "
          f"{args.run_a}, {len(result['only_b'])} only in {args.run_b}")
    for kind, label in (("differ", "differs"), ("only_a", f"only in {args.run_a}"), ("only_b", f"only in {args.run_b}")):
        for key in result[kind][:args.show]:
            print(f"  {label}: {key}")
    return 1 if result["differ"] or not common else 0


if __name__ == "__main__":
    sys.exit(main())
