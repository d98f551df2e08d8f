"""``anatcl check brainfmbench DIR``: a BrainFMBench submission folder against the contract, strictly.

    anatcl check brainfmbench DIR [--pip] [--inputs DIR --weights-dir DIR] [--timeout S]

Checked, each failure one line naming the file and what was expected:

- ``model.yaml``: the required fields and their types (``name`` and every author a non-empty
  string, ``preprocessing`` cat12 or turboprep, ``embedding_dim`` a positive int, ``datasets``
  a non-empty subset of {NKI, HBN}, ``tasks`` of {sex, age, bmi}), the optional ones' types;
- ``weights.txt``: direct-download http(s) URLs (no Drive, Dropbox or ``/blob/`` page), one a
  line, their file names distinct, at least one unless ``weightless: true``;
- ``requirements.txt``: exact ``name==version`` pins;
- ``extract.py`` (read, not imported, by the checker): a top-level
  ``def extract(input_dir, output_csv, weights_dir)``, exactly these three positional parameters,
  no defaults, no ``*args`` / ``**kwargs`` / keyword-only ones;
- the run: ``extract`` on two random 16^3 volumes (identity affine, as BrainFMBench's validator
  writes them) with an empty ``weights_dir``, and on ``--inputs`` with ``--weights-dir`` if given,
  each twice, in the fresh environment of :mod:`anatcl_core.export.sandbox` (only the folder's
  requirements, offline, every socket connection refused and logged): it must succeed, use no
  network, write ``subject_id,f0..f{D-1}`` with D = ``embedding_dim``, one row per subject, finite
  floats, and the same bytes both times.
"""

from __future__ import annotations

import argparse
import ast
import csv
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import nibabel as nib
import numpy as np
import yaml

from anatcl_core.export import sandbox

logger = logging.getLogger(__name__)

PREPROCESSING = ("cat12", "turboprep")
DATASETS, TASKS = ("NKI", "HBN"), ("sex", "age", "bmi")
SIGNATURE = ("input_dir", "output_csv", "weights_dir")
OPTIONAL_STR = ("description", "architecture", "citation", "code", "submitted_by")
BAD_HOSTS = ("drive.google.com", "docs.google.com", "dropbox.com")
VALIDATOR_SUBJECTS = ("SUB01", "SUB02")
FRESH_NOTE = ("fresh environment = a new venv without site packages exposing only requirements.txt's "
              "distributions (+ numpy, nibabel, PyYAML) and their dependency closure, at the pinned "
              "versions, linked from this environment; nothing downloaded (--pip installs them for real)")


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def check_model_yaml(path: Path) -> tuple[list[str], dict]:
    """Problems of ``model.yaml`` and the parsed mapping."""
    if not path.is_file():
        return [f"{path}: missing"], {}
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        return [f"{path}: not YAML ({' '.join(str(err).split())})"], {}
    if not isinstance(meta, dict):
        return [f"{path}: expected a mapping, got {type(meta).__name__}"], {}
    rules = {
        "name": (_is_text, "a non-empty string"),
        "authors": (lambda v: isinstance(v, list) and v and all(map(_is_text, v)), "a list of non-empty strings"),
        "preprocessing": (lambda v: v in PREPROCESSING, f"one of {PREPROCESSING}"),
        "embedding_dim": (lambda v: type(v) is int and v > 0, "a positive int"),
        "datasets": (lambda v: isinstance(v, list) and v and set(v) <= set(DATASETS), f"a non-empty subset of {DATASETS}"),
        "tasks": (lambda v: isinstance(v, list) and v and set(v) <= set(TASKS), f"a non-empty subset of {TASKS}"),
    }
    problems = [f"{path}: {key} {meta.get(key)!r}; expected {what}" for key, (ok, what) in rules.items()
                if key not in meta or not ok(meta[key])]
    problems += [f"{path}: {key} {meta[key]!r}; expected a string" for key in OPTIONAL_STR
                 if key in meta and not isinstance(meta[key], str)]
    if "seed" in meta and type(meta["seed"]) is not int:
        problems.append(f"{path}: seed {meta['seed']!r}; expected an int")
    if "weightless" in meta and not isinstance(meta["weightless"], bool):
        problems.append(f"{path}: weightless {meta['weightless']!r}; expected true or false")
    return problems, meta


def check_weights_txt(path: Path, weightless: bool) -> list[str]:
    """Problems of ``weights.txt``: URLs that are no direct download, clashing file names, none at all."""
    if not path.is_file():
        return [f"{path}: missing"]
    urls = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")]
    problems = []
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not Path(parsed.path).name:
            problems.append(f"{path}: {url!r}; expected an http(s) URL ending in a file name")
        elif any(host in parsed.netloc for host in BAD_HOSTS) or "/blob/" in parsed.path:
            problems.append(f"{path}: {url!r} is a viewer page, not a direct download")
    names = [Path(urlparse(u).path).name for u in urls]
    if len(set(names)) != len(names):
        problems.append(f"{path}: two URLs land under the same file name in weights_dir ({names})")
    if not urls and not weightless:
        problems.append(f"{path}: lists no URL; expected at least one (or weightless: true in model.yaml)")
    return problems


def check_signature(path: Path) -> list[str]:
    """Problems of ``extract.py``'s ``extract`` definition, read with ``ast`` (nothing executed)."""
    if not path.is_file():
        return [f"{path}: missing"]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except SyntaxError as err:
        return [f"{path}:{err.lineno}: syntax error ({err.msg})"]
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "extract"]
    if len(defs) != 1 or isinstance(defs[0], ast.AsyncFunctionDef):
        return [f"{path}: expected exactly one top-level def extract(input_dir, output_csv, weights_dir)"]
    args = defs[0].args
    names = tuple(a.arg for a in args.posonlyargs + args.args)
    extra = args.vararg or args.kwarg or args.kwonlyargs or args.defaults or args.kw_defaults
    if names != SIGNATURE or extra:
        return [f"{path}:{defs[0].lineno}: extract has parameters {ast.unparse(args)!r}; expected exactly "
                f"{', '.join(SIGNATURE)} (no defaults, no extra ones)"]
    return []


def write_validator_inputs(input_dir: Path, seed: int = 0) -> list[str]:
    """Two random 16^3 float32 volumes in ``<id>/normalized.nii.gz`` (identity affine); their ids."""
    rng = np.random.default_rng(seed)
    for subject in VALIDATOR_SUBJECTS:
        (input_dir / subject).mkdir(parents=True)
        volume = (rng.random((16, 16, 16)) * 100).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), input_dir / subject / "normalized.nii.gz")
    return list(VALIDATOR_SUBJECTS)


def check_csv(path: Path, dim: int, subjects: Sequence[str]) -> list[str]:
    """Problems of an extract's CSV: header, width against ``embedding_dim``, rows, finite floats."""
    if not path.is_file():
        return [f"{path}: extract wrote no CSV"]
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    expected = ["subject_id", *(f"f{j}" for j in range(dim))]
    if not rows or rows[0] != expected:
        head = rows[0][:3] if rows else []
        return [f"{path}: header {head}... of {len(rows[0]) if rows else 0} columns; expected subject_id,f0.."
                f"f{dim - 1} ({dim + 1} columns, embedding_dim {dim})"]
    problems = []
    if sorted(r[0] for r in rows[1:]) != sorted(subjects):
        problems.append(f"{path}: subject ids {[r[0] for r in rows[1:]]}; expected one row each for {list(subjects)}")
    for number, row in enumerate(rows[1:], 2):
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            problems.append(f"{path}:{number}: a feature is not a number")
            continue
        if len(values) != dim or not all(map(math.isfinite, values)):
            problems.append(f"{path}:{number}: {len(values)} values, finite: {all(map(math.isfinite, values))}; "
                            f"expected {dim} finite floats")
    return problems


def check_runs(folder: Path, python: Path, dim: int, scratch: Path, inputs: Path | None = None,
               weights_dir: Path | None = None, timeout_s: float = 900.0) -> tuple[list[str], list[str]]:
    """Run ``extract`` twice per case in the sandbox; (problems, report lines)."""
    validator_in = scratch / "validator_inputs"
    cases = [("validator (2 random 16^3 volumes, empty weights_dir)", validator_in,
              write_validator_inputs(validator_in), scratch / "empty_weights")]
    (scratch / "empty_weights").mkdir()
    if inputs is not None:
        ids = sorted(p.name for p in Path(inputs).iterdir() if (p / "normalized.nii.gz").is_file())
        cases.append((f"{inputs} with weights {weights_dir}", Path(inputs), ids, Path(weights_dir or scratch / "empty_weights")))
    problems, report = [], []
    for label, input_dir, subjects, weights in cases:
        outputs = []
        for attempt in (1, 2):
            out = scratch / f"features_{len(report)}_{attempt}.csv"
            done, network = sandbox.run_extract(python, folder, [str(input_dir), str(out), str(weights)],
                                                scratch, timeout_s)
            if network:
                problems.append(f"{folder}/extract.py: network use during extract ({network[0][0]}, "
                                f"{len(network)} attempt(s)); expected none")
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                problems.append(f"{folder}/extract.py: extract failed on {label}: {last}")
                break
            outputs.append(out)
            problems += check_csv(out, dim, subjects)
        if len(outputs) == 2 and outputs[0].read_bytes() != outputs[1].read_bytes():
            problems.append(f"{folder}/extract.py: two runs on {label} wrote different bytes; expected determinism")
        warned = [line for line in done.stderr.splitlines() if "Warning" in line]
        report.append(f"{label}: {len(outputs)} run(s) ok" + (f"; warning: {warned[0].strip()}" if warned else ""))
    return problems, report


def check(folder: str | Path, pip: bool = False, inputs: str | Path | None = None,
          weights_dir: str | Path | None = None, timeout_s: float = 900.0) -> tuple[list[str], list[str]]:
    """Every check of the module docstring on ``folder``; returns (problems, report lines)."""
    folder = Path(folder)
    problems, meta = check_model_yaml(folder / "model.yaml")
    problems += check_weights_txt(folder / "weights.txt", bool(meta.get("weightless")))
    problems += check_signature(folder / "extract.py")
    report = [FRESH_NOTE if not pip else "fresh environment = a new venv, requirements pip-installed"]
    if problems or type(meta.get("embedding_dim")) is not int:
        return problems, report + ["extract not run: fix the problems above first"]
    with tempfile.TemporaryDirectory(prefix="brainfmbench-check-") as tmp:
        scratch = Path(tmp)
        try:
            build = sandbox.pip_environment if pip else sandbox.offline_environment
            python = build(folder, scratch)
        except sandbox.SandboxError as err:
            return [str(err)], report
        found, lines = check_runs(folder, python, meta["embedding_dim"], scratch,
                                  Path(inputs) if inputs else None, Path(weights_dir) if weights_dir else None,
                                  timeout_s)
    return found, report + lines


def main(argv: Sequence[str] | None = None) -> int:
    """``anatcl check brainfmbench DIR``: 0 when every check holds, 1 otherwise (one line per problem)."""
    parser = argparse.ArgumentParser(prog="anatcl check brainfmbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="models/<slug>/ folder")
    parser.add_argument("--pip", action="store_true", help="pip-install requirements.txt (network) instead")
    parser.add_argument("--inputs", help="also run on these <subject>/normalized.nii.gz folders")
    parser.add_argument("--weights-dir", help="with --inputs: the weights_dir of that run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per extract run")
    args = parser.parse_args(argv)
    problems, report = check(args.folder, args.pip, args.inputs, args.weights_dir, args.timeout)
    for line in report:
        sys.stdout.write(f"{line}\n")
    for line in problems:
        sys.stdout.write(f"FAIL {line}\n")
    sys.stdout.write(f"{args.folder}: {'VALID' if not problems else f'{len(problems)} problem(s)'}\n")
    return 1 if problems else 0
