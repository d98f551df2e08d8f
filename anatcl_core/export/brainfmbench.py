"""``anatcl export brainfmbench``: a trained encoder as a BrainFMBench code submission.

    anatcl export brainfmbench RUN --out DIR [--name NAME] [--weights-url URL ...] [--voxel-mm MM]

BrainFMBench (epics-lab/BrainFMBench, its ``CONTRIBUTING.md``) compares frozen brain-MRI encoders:
a submission is a folder ``models/<slug>/`` with ``model.yaml`` (``name``, ``authors``,
``preprocessing``, ``embedding_dim``, ``datasets`` within {NKI, HBN}, ``tasks`` within {sex, age,
bmi}), ``extract.py`` defining ``extract(input_dir, output_csv, weights_dir)``, ``weights.txt``
(direct-download URLs, one a line; each file lands in ``weights_dir`` under the URL's last path
segment) and a pinned ``requirements.txt``.

RUN is a pretrain stage's output folder (``outputs/pretrain/<method>-s<seed>``, its
``checkpoint.pt``), a checkpoint file of ours, or ``upstream:<prefix>`` for the released upstream
files ``<prefix>-fold0..4`` of the weights registry (their features averaged over the five folds,
as upstream's own leaderboard rows were). The folder's ``extract.py`` is
:mod:`anatcl_core.export.extract_template` with its ``CONFIG`` filled in: it imports torch, numpy
and nibabel only. For our runs the encoder's tensors are written to a slim weights file
(``<DIR>.weights/<file>``, the file to upload; its name is the URL's last segment) whose sha256
``extract.py`` checks. The model's grid is CAT12's field of view at the run's voxel size, read from
the cohort arrays beside the run (``outputs/cohort/arrays``) unless ``--voxel-mm`` says it.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import pprint
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import yaml

from anatcl_core.atomic import atomic_write
from anatcl_core.data import arrays, io, layout
from anatcl_core.model.checkpoint import save_checkpoint
from anatcl_core.model.registry import load_registry
from anatcl_core.model.trained import inspect_checkpoint, load_trained, sha256_file

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("extract_template.py")
#: Distributions ``extract.py`` imports (pinned to this environment's versions).
REQUIREMENTS = ("torch", "numpy", "nibabel")
DATASETS, TASKS = ("NKI", "HBN"), ("sex", "age", "bmi")
UPSTREAM_PREFIX = "upstream:"
UPSTREAM_FOLDS = 5
DEFAULT_WEIGHTS_FILE = "encoder.pt"
#: The network keys the extractor's encoder takes (ModelSpec's, the projection head's left out).
ENCODER_KEYS = ("depth", "base_width", "norm", "in_channels")
_CONFIG_LINE = "CONFIG: dict = {}\n"


class ExportError(ValueError):
    """A run, option or output folder the exporter cannot use; the message names it."""


@dataclass(frozen=True)
class Source:
    """What is exported: the network, its weight files (local path, shipped name, URL) and provenance."""

    model: dict
    feature_dim: int
    voxel_mm: float
    crop: tuple[int, int, int] | None
    image_dtype: str
    seed: int
    weights: list[tuple[Path, str, str | None]]
    name: str
    description: str


def pinned_requirements() -> str:
    """``requirements.txt``: this environment's versions of :data:`REQUIREMENTS` (local build labels dropped)."""
    lines = [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in REQUIREMENTS]
    return "\n".join(lines) + "\n"


def _arrays_voxel_mm(run_dir: Path) -> float | None:
    """Voxel size of the cohort arrays beside a pretrain output folder (``outputs/cohort/arrays``), or None."""
    parents = run_dir.resolve().parents
    if len(parents) < 2:
        return None
    arrays_dir = parents[1] / "cohort" / "arrays"
    if not arrays.files(arrays_dir, "openbhb")["images"].is_file():
        return None
    shape = np.load(arrays.files(arrays_dir, "openbhb")["images"], mmap_mode="r").shape[-3:]
    return io.infer_voxel_mm(shape)


def _url_file(url: str) -> str:
    """The file a URL lands as in ``weights_dir``: its last path segment."""
    name = Path(urlparse(url).path).name
    if not url.startswith(("http://", "https://")) or not name:
        raise ExportError(f"--weights-url {url!r}: expected a direct-download http(s) URL ending in a file name")
    return name


def _ours(run: Path, out: Path, urls: list[str], voxel_mm: float | None) -> Source:
    """A pretrain run (folder or checkpoint file): its encoder written as a slim weights file."""
    checkpoint = run / "checkpoint.pt" if run.is_dir() else run
    if not checkpoint.is_file():
        raise ExportError(f"{checkpoint}: no checkpoint; expected a pretrain stage output folder or file")
    trained = load_trained(checkpoint)
    if trained.run is None:
        raise ExportError(f"{checkpoint}: no run record (method, seed, recipe); expected a pretrain checkpoint")
    voxel_mm = voxel_mm or _arrays_voxel_mm(checkpoint.parent)
    if voxel_mm is None:
        raise ExportError(f"{run}: the training grid is unknown (no outputs/cohort/arrays beside it); "
                          "give --voxel-mm")
    if len(urls) > 1:
        raise ExportError(f"{run}: one weights file is exported; got {len(urls)} --weights-url")
    file_name = _url_file(urls[0]) if urls else DEFAULT_WEIGHTS_FILE
    weights = Path(f"{out}.weights") / file_name
    encoder = {f"encoder.{k}": v for k, v in trained.model.encoder.state_dict().items()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": encoder}, weights)
    spec, rec = trained.run.model, trained.run
    ckpt = trained.checkpoint
    name = (f"AnatCL-compendium {rec.method} seed{rec.seed} {spec.depth}-w{spec.base_width} "
            f"{rec.epochs}ep {voxel_mm:g}mm {str(ckpt.get('fingerprint', ''))[:8]}")
    provenance = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
                  "run_fingerprint (data + training code)": ckpt.get("fingerprint"),
                  "epochs_done": ckpt.get("epoch"), "complete": ckpt.get("complete"),
                  "data": f"OpenBHB-layout cohort at {voxel_mm:g} mm", "params": rec.to_config()}
    model = {k: v for k, v in asdict(spec).items() if k in ENCODER_KEYS}  # the head is dropped
    return Source(model, trained.model.encoder.feature_dim, voxel_mm,
                  io.resolve_crop(rec.data.crop, layout.grid_shape(voxel_mm)), rec.data.image_dtype,
                  int(rec.seed), [(weights, file_name, urls[0] if urls else None)], name,
                  "AnatCL-style contrastive encoder trained with the AnatCL compendium. Provenance: "
                  + json.dumps(provenance, sort_keys=True, default=str))


def _upstream(prefix: str, registries: list[str]) -> Source:
    """Upstream's released folds ``<prefix>-fold0..4``: local copies (``anatcl weights fetch``) hashed."""
    from anatcl_core.model.weights import fetch

    entries = load_registry(registries)
    names = [f"{prefix}-fold{k}" for k in range(UPSTREAM_FOLDS)]
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ExportError(f"upstream:{prefix}: no registry entries {unknown} (see anatcl weights list)")
    weights, depth, feature_dim = [], None, None
    for name in names:
        path = fetch(name, registries=registries, progress=False)  # the cached copy, hash checked
        info = inspect_checkpoint(path)
        depth, feature_dim = info.depth, info.feature_dim
        url = entries[name].url
        weights.append((path, _url_file(url) if url else path.name, url))
    if len({w[1] for w in weights}) != len(weights):
        raise ExportError(f"upstream:{prefix}: the folds' files share a name in weights_dir")
    model = {"depth": depth, "base_width": 64, "norm": "batch", "in_channels": 1}
    return Source(model, int(feature_dim), layout.CAT12_VOXEL_MM, layout.UPSTREAM_INPUT_SHAPE, "float32", 0,
                  weights, f"AnatCL upstream {prefix} ({UPSTREAM_FOLDS} folds averaged)",
                  f"Upstream AnatCL release {prefix} (Barbano et al.), features averaged over folds 0-4; "
                  f"files {[entries[n].url for n in names]}")


def _extract_py(source: Source, hashes: list[str]) -> str:
    """The template with :data:`CONFIG` filled in (a plain literal)."""
    config = {"model": source.model, "feature_dim": source.feature_dim,
              "grid": {"shape": list(layout.grid_shape(source.voxel_mm)),
                       "affine": layout.grid_affine(source.voxel_mm).tolist()},
              "crop": None if source.crop is None else list(source.crop), "image_dtype": source.image_dtype,
              "seed": source.seed,
              "weights": [{"file": name, "sha256": sha} for (_, name, _), sha in zip(source.weights, hashes)]}
    text = TEMPLATE.read_text(encoding="utf-8")
    if text.count(_CONFIG_LINE) != 1:
        raise ExportError(f"{TEMPLATE}: expected one line {_CONFIG_LINE.strip()!r}")
    return text.replace(_CONFIG_LINE, f"CONFIG: dict = {pprint.pformat(config, sort_dicts=False, width=100)}\n")


def slug(name: str) -> str:
    """A folder name for ``models/<slug>/`` from a model name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def export(run: str | Path, out: str | Path, name: str | None = None, weights_urls: list[str] = (),
           voxel_mm: float | None = None, authors: list[str] = ("AnatCL compendium",),
           registries: list[str] = ()) -> Path:
    """Write the submission folder ``out``; returns it.

    Raises:
        ExportError: an unusable run, URL or option (nothing written).
    """
    out, urls = Path(out), list(weights_urls)
    if str(run).startswith(UPSTREAM_PREFIX):
        source = _upstream(str(run)[len(UPSTREAM_PREFIX):], list(registries))
        if urls:
            raise ExportError("--weights-url: upstream's URLs come from the registry; give none")
    else:
        source = _ours(Path(run), out, urls, voxel_mm)
    hashes = [sha256_file(path) for path, _, _ in source.weights]
    meta = {"name": name or source.name, "authors": list(authors), "preprocessing": "cat12",
            "embedding_dim": int(source.feature_dim), "datasets": list(DATASETS), "tasks": list(TASKS),
            "description": source.description,
            "architecture": f"3D {source.model['depth']}, width {source.model['base_width']}, "
                            f"{source.model['norm']} norm; {source.feature_dim}-d encoder output (head dropped)",
            "code": "AnatCL compendium, anatcl export brainfmbench", "seed": source.seed}
    lines = [url or f"# upload {path.name} and put its direct-download URL here" for path, _, url in source.weights]
    files = {"model.yaml": yaml.safe_dump(meta, sort_keys=False, width=1000),
             "extract.py": _extract_py(source, hashes), "weights.txt": "\n".join(lines) + "\n",
             "requirements.txt": pinned_requirements()}
    out.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        with atomic_write(out / file_name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    logger.info("wrote BrainFMBench submission %s (%s, %d-d); weights %s", out, meta["name"],
                source.feature_dim, [str(p) for p, _, _ in source.weights])
    return out



def main(argv: list[str] | None = None) -> int:
    """``anatcl export brainfmbench RUN --out DIR``; 0 on success."""
    import argparse

    parser = argparse.ArgumentParser(prog="anatcl export brainfmbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="pretrain output folder, checkpoint file, or upstream:<prefix>")
    parser.add_argument("--out", required=True, help="the submission folder models/<slug>/")
    parser.add_argument("--name", help="model.yaml name (default: method, seed, network, budget, grid, data hash)")
    parser.add_argument("--weights-url", action="append", default=[], help="direct-download URL of the weights")
    parser.add_argument("--voxel-mm", type=float, help="the training grid's voxel size (default: from the arrays)")
    parser.add_argument("--author", action="append", help="model.yaml authors (repeatable)")
    parser.add_argument("--registry", action="append", default=[], help="extra weights registry (upstream:)")
    args = parser.parse_args(argv)
    export(args.run, args.out, args.name, args.weights_url, args.voxel_mm,
           args.author or ["AnatCL compendium"], args.registry)
    return 0
