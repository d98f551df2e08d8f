"""What the report reads from disk: every run's ``probes.json`` and training curves, by params.yaml.

The runs are those of params.yaml ``pretrain.run`` x ``pretrain.seeds`` and the reference rows those
of ``reference.run``, read from ``outputs/evaluate/<method>-s<seed>/probes.json``,
``outputs/pretrain/<method>-s<seed>/dvclive/`` (curves) and ``outputs/reference/<name>/probes.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from anatcl_core import live
from anatcl_core.config import load_params


@dataclass
class Results:
    """Per-(method, seed) probe results and training curves, in run order; reference rows
    (``ref_<name>`` -> probes, one run each) and the output folder of every run."""

    probes: dict[tuple[str, int], dict]
    curves: pd.DataFrame
    references: dict[str, dict] = field(default_factory=dict)
    folders: dict[str, list[Path]] = field(default_factory=dict)
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(m for m, _ in self.probes))

    @property
    def rows(self) -> list[str]:
        """Methods, then reference rows: the rows of every results table."""
        return self.methods + list(self.references)

    def runs_of(self) -> dict[str, list[dict]]:
        """Row -> its probes.json contents (one per seed; one for a reference row)."""
        out: dict[str, list[dict]] = {}
        for (method, _), p in self.probes.items():
            out.setdefault(method, []).append(p)
        out.update({name: [p] for name, p in self.references.items()})
        return out


def expected_runs(params_file: str | Path) -> list[tuple[str, int]]:
    """The (method, seed) pairs of params.yaml ``pretrain.run`` x ``pretrain.seeds``, in order."""
    section = load_params(params_file).get("pretrain", {})
    return [(str(m), int(s)) for m in section.get("run", []) for s in section.get("seeds", [])]


def expected_references(params_file: str | Path) -> list[str]:
    """The reference rows of params.yaml ``reference.run`` (none without that section)."""
    return [str(r) for r in (load_params(params_file).get("reference") or {}).get("run", [])]


def budget_epochs(params_file: str | Path, variants) -> dict[str, int]:
    """Pretraining epochs of each variant (its ``epochs`` override, else ``pretrain.epochs``)."""
    section = load_params(params_file).get("pretrain", {})
    methods = section.get("methods", {})
    return {v: int((methods.get(v) or {}).get("epochs") or section.get("epochs", 0)) for v in variants}


def collect(evaluate_dir: str | Path, pretrain_dir: str | Path, runs: list[tuple[str, int]],
            reference_dir: str | Path | None = None, references: list[str] = ()) -> Results:
    """Read the ``probes.json`` and dvclive curves of every (method, seed) in ``runs``, and the
    ``probes.json`` of every reference row under ``reference_dir/<name>`` (``outputs/reference``).

    Outputs of runs no longer listed (left on disk by an earlier configuration) are ignored.

    Raises:
        FileNotFoundError: a listed run or reference row has no ``probes.json``.
    """
    probes = {}
    for method, seed in runs:
        path = Path(evaluate_dir) / f"{method}-s{seed}" / "probes.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run the evaluate stage of {method} seed {seed}")
        probes[(method, seed)] = json.loads(path.read_text())
    frames = []
    for (method, seed) in probes:
        frame = live.read_curves(Path(pretrain_dir) / f"{method}-s{seed}")
        if len(frame):
            frames.append(frame.assign(method=method, seed=seed))
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["method", "seed", "epoch", "loss"])
    folders: dict[str, list[Path]] = {}
    for method, seed in probes:
        folders.setdefault(method, []).append(Path(evaluate_dir) / f"{method}-s{seed}")
    refs = {}
    for name in references:
        path = Path(reference_dir) / name / "probes.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run the reference stage of {name}")
        refs[f"ref_{name}"] = json.loads(path.read_text())
        folders[f"ref_{name}"] = [path.parent]
    return Results(probes, curves, refs, folders)
