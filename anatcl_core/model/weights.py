"""Known checkpoints: a registry, a download cache with hash pinning, and checkpoint verification.

The packaged registry (``weights_registry.yaml``) lists upstream's released files (ResNet-18, local
``l3`` / global ``g3`` anatomical kernel x 5 folds). Upstream publishes no checksums, so their
``sha256`` is null until a user pins one: ``fetch --pin`` records the observed hash in a user-side
pins file (``<cache>/pins.yaml``), never in the packaged registry. Our own trained checkpoints go
into a separate registry file through :func:`register_checkpoint` (sha256 + provenance).

    anatcl weights list [--registry FILE]...
    anatcl weights fetch NAME [--cache DIR] [--pin] [--force]
    anatcl weights verify PATH [--name NAME]

Downloads are atomic (temp file in the cache folder, renamed once the hash and the checkpoint check
pass); a failed or mismatching download leaves nothing behind. Loading is always from a local file
through :func:`anatcl_core.model.checkpoint.safe_load`, which never runs pickled code.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import logging
import os
import pickle
import re
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from anatcl_core.atomic import atomic_write
from anatcl_core.model.checkpoint import MODEL_CONFIG_KEYS, check_weight_values, safe_load

logger = logging.getLogger(__name__)

CACHE_ENV = "ANATCL_CACHE"
DEFAULT_CACHE = Path("~/.cache/anatcl")
PINS_FILE = "pins.yaml"
FORMATS = ("upstream", "anatcl")
ENTRY_KEYS = {"format", "url", "path", "sha256", "description", "provenance"}
PROVENANCE_KEYS = ("config", "data_version", "commit")  # expected for our trained checkpoints
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """A registry, download or checkpoint does not meet what was expected."""


@dataclass(frozen=True)
class WeightsEntry:
    """One known checkpoint: a ``url`` to fetch or a local ``path``, optionally a pinned sha256."""

    name: str
    format: str
    url: str | None = None
    path: str | None = None
    sha256: str | None = None
    description: str = ""
    provenance: dict = field(default_factory=dict)
    source: str = ""  # the registry file it came from


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found: format, architecture and hash of a local file."""

    path: Path
    sha256: str
    format: str
    depth: str
    feature_dim: int
    n_tensors: int


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir(cache: str | Path | None = None) -> Path:
    """``cache`` if given, else ``$ANATCL_CACHE``, else ``~/.cache/anatcl``."""
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


# ---------------------------------------------------------------- registry files
def _read_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def _write_yaml(data: dict, path: Path) -> None:
    """Atomic YAML write (:func:`anatcl_core.atomic.atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _parse_entry(name: str, raw: object, source: Path) -> WeightsEntry:
    where = f"{source}: checkpoint {name!r}"
    if not isinstance(raw, dict):
        raise WeightsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise WeightsError(f"{where}: unknown key(s) {unknown}; expected {sorted(ENTRY_KEYS)}")
    if raw.get("format") not in FORMATS:
        raise WeightsError(f"{where}: format {raw.get('format')!r}; expected one of {FORMATS}")
    if (raw.get("url") is None) == (raw.get("path") is None):
        raise WeightsError(f"{where}: give exactly one of 'url' and 'path'")
    sha = raw.get("sha256")
    if sha is not None and not _SHA256.match(str(sha)):
        raise WeightsError(f"{where}: sha256 {sha!r}; expected 64 lower-case hex digits or null")
    path = raw.get("path")
    if path is not None and not Path(path).is_absolute():
        path = str(source.parent / path)  # relative to the registry file
    return WeightsEntry(name, raw["format"], raw.get("url"), path, sha, str(raw.get("description", "")),
                        dict(raw.get("provenance") or {}), str(source))


def packaged_registry() -> Path:
    """Path of the registry shipped with the package."""
    return Path(str(importlib.resources.files("anatcl_core.model") / "weights_registry.yaml"))


def load_registry(extra: Sequence[str | Path] = ()) -> dict[str, WeightsEntry]:
    """Entries of the packaged registry plus those of ``extra`` registry files, by name.

    Raises:
        WeightsError: malformed entry, or one name in two registries.
    """
    entries: dict[str, WeightsEntry] = {}
    for source in [packaged_registry(), *map(Path, extra)]:
        checkpoints = _read_yaml(source).get("checkpoints") or {}
        if not isinstance(checkpoints, dict):
            raise WeightsError(f"{source}: 'checkpoints' must map names to entries")
        for name, raw in checkpoints.items():
            if name in entries:
                raise WeightsError(f"{source}: checkpoint {name!r} is already in {entries[name].source}")
            entries[name] = _parse_entry(str(name), raw, source)
    return entries


def read_pins(cache: str | Path | None = None) -> dict[str, str]:
    """User-side pins ``{name: sha256}`` from ``<cache>/pins.yaml`` (empty if none)."""
    path = cache_dir(cache) / PINS_FILE
    return {str(k): str(v) for k, v in _read_yaml(path).items()} if path.is_file() else {}


def expected_sha256(entry: WeightsEntry, cache: str | Path | None = None) -> str | None:
    """The registry's hash if it pins one, else the user's pin, else None."""
    return entry.sha256 or read_pins(cache).get(entry.name)


# ---------------------------------------------------------------- checkpoint check
def _expected_state(depth: str, config: dict | None) -> dict[str, torch.Tensor]:
    from anatcl_core.model.network import build_model  # models imports checkpoint; keep import light

    with torch.device("meta"):  # shapes and dtypes only, no memory, no init cost
        model = build_model(**config) if config is not None else build_model(depth)
    return model.state_dict()


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Load ``path`` with ``safe_load`` and check its state dict fits the architecture it claims.

    Upstream format (``{"model": state dict}``, no ``"config"``): keys and shapes must be those of
    ``AnatCL(model=depth)`` for one depth of ``RESNET_SPECS``. Ours (``"config"`` present): those of
    ``build_model(**config)``.

    Raises:
        UnsafeCheckpointError: the pickle references code (nothing is run).
        WeightsError: no ``"model"`` state dict, or keys / shapes that fit no architecture.
    """
    from anatcl_core.model.network import RESNET_SPECS

    path = Path(path)
    checkpoint = safe_load(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        found = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise WeightsError(f"{path}: expected a dict with a 'model' state dict, found {found}")
    state = {str(k).removeprefix("module."): v for k, v in checkpoint["model"].items()}
    shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if isinstance(checkpoint.get("config"), dict):
        fmt = "anatcl"
        config = {k: v for k, v in checkpoint["config"].items() if k in MODEL_CONFIG_KEYS}
        candidates = {str(config.get("depth", "resnet18")): config}
    else:
        fmt, candidates = "upstream", {depth: None for depth in RESNET_SPECS}
    for depth, config in candidates.items():
        meta = _expected_state(depth, config)
        expected = {k: tuple(v.shape) for k, v in meta.items()}
        if shapes == expected and len(state) == len(expected):
            check_weight_values(state, meta, str(path))  # no int32 / NaN weights
            return CheckpointInfo(path, sha256_file(path), fmt, depth, expected["head.0.weight"][1],
                                  len(state))
    missing = sorted(set(expected) - set(shapes))[:5]
    unexpected = sorted(set(state) - set(expected))[:5]
    wrong = [f"{k} {shapes[k]} != {v}" for k, v in expected.items() if k in shapes and shapes[k] != v][:3]
    raise WeightsError(f"{path}: {fmt}-format state dict of {len(state)} entries fits no "
                       f"{'/'.join(candidates)} network (e.g. missing {missing}, unexpected "
                       f"{unexpected}, wrong shapes {wrong})")


# ---------------------------------------------------------------- fetch
def _download(url: str, tmp: Path, progress: bool, timeout: float) -> str:
    """Stream ``url`` into ``tmp`` (an :func:`~anatcl_core.atomic.atomic_write` path); returns its sha256."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise WeightsError(f"{url}: unsupported URL scheme {scheme!r}; expected http(s):// or file://")
    digest, written = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=tmp.name, disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
            if total is not None and written != total:
                raise WeightsError(f"{url}: download truncated ({written} of {total} bytes)")
    except (OSError, ValueError) as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{url}: download failed ({type(err).__name__}: {err})") from err
    return digest.hexdigest()


def _record_pin(name: str, sha: str, cache: str | Path | None) -> None:
    pins = read_pins(cache)
    if pins.get(name) != sha:
        pins[name] = sha
        _write_yaml(pins, cache_dir(cache) / PINS_FILE)
        logger.info("pinned %s sha256 %s in %s", name, sha, cache_dir(cache) / PINS_FILE)


def _check_hash(name: str, sha: str, expected: str | None, where: str) -> None:
    if expected is not None and sha != expected:
        raise WeightsError(f"{where}: sha256 {sha} does not match the pinned {expected} for {name!r}")


def fetch(name: str, cache: str | Path | None = None, registries: Sequence[str | Path] = (),
          pin: bool = False, force: bool = False, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Local path of checkpoint ``name``, downloading it into the cache if needed.

    The file lands at ``<cache>/<name>.pth`` only after its sha256 matches the pinned one (registry
    or user pin; none: accepted and logged) and :func:`inspect_checkpoint` accepts it. A mismatch,
    a malicious pickle or a failed download deletes the temp file and raises.

    Args:
        name: a registry entry (``anatcl weights list``).
        cache: cache folder (default ``$ANATCL_CACHE`` or ``~/.cache/anatcl``).
        registries: extra registry files (our trained checkpoints).
        pin: record the observed sha256 in ``<cache>/pins.yaml`` when nothing pins it yet.
        force: download again even if a cached copy exists.

    Raises:
        KeyError: unknown name. WeightsError: download, hash or checkpoint problem.
    """
    entries = load_registry(registries)
    if name not in entries:
        raise KeyError(f"unknown checkpoint {name!r}; known: {sorted(entries)}")
    entry, expected = entries[name], expected_sha256(entries[name], cache)
    if entry.path is not None:  # a local checkpoint (ours): check it, never copy it
        _check_hash(name, sha256_file(entry.path), expected, entry.path)
        return Path(entry.path)
    target = cache_dir(cache) / f"{name}.pth"
    if target.is_file() and not force:
        sha = sha256_file(target)
        _check_hash(name, sha, expected, f"{target} (cached; delete it or use --force)")
        logger.info("%s: using cached %s", name, target)
    else:
        with atomic_write(target) as tmp:  # nothing lands at target unless every check passes
            sha = _download(entry.url, tmp, progress, timeout)
            _check_hash(name, sha, expected, entry.url)
            inspect_checkpoint(tmp)
        logger.info("%s: downloaded to %s (sha256 %s)", name, target, sha)
    if expected is None:
        if pin:
            _record_pin(name, sha, cache)
        else:
            logger.warning("%s: no published checksum; sha256 %s (use --pin to record it)", name, sha)
    return target


def register_checkpoint(path: str | Path, name: str, registry_path: str | Path,
                        provenance: dict, description: str = "") -> WeightsEntry:
    """Add (or replace) our trained checkpoint ``path`` as ``name`` in the registry file.

    The checkpoint is checked first (:func:`inspect_checkpoint`); the entry records its sha256, the
    path (relative to the registry file when below its folder) and ``provenance``, a plain mapping
    expected to hold ``config``, ``data_version`` and ``commit``.

    Raises:
        WeightsError: bad checkpoint, a name of the packaged registry, non-plain provenance.
    """
    path, registry_path = Path(path).resolve(), Path(registry_path)
    if name in load_registry():
        raise WeightsError(f"{name!r} is a packaged registry name; choose another")
    if not isinstance(provenance, dict):
        raise WeightsError(f"provenance for {name!r}: expected a mapping, got {type(provenance).__name__}")
    missing = [k for k in PROVENANCE_KEYS if k not in provenance]
    if missing:
        logger.warning("register %s: provenance lacks %s", name, missing)
    info = inspect_checkpoint(path)
    folder = registry_path.parent.resolve()
    stored = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
    raw = {"format": info.format, "path": stored, "sha256": info.sha256,
           "description": description, "provenance": provenance}
    try:
        yaml.safe_dump(raw)
    except yaml.YAMLError as err:
        raise WeightsError(f"provenance for {name!r} must hold plain values: {err}") from err
    data = _read_yaml(registry_path) if registry_path.is_file() else {"schema": 1}
    data.setdefault("checkpoints", {})[name] = raw
    _write_yaml(data, registry_path)
    logger.info("registered %s (%s, sha256 %s) in %s", name, info.format, info.sha256, registry_path)
    return _parse_entry(name, raw, registry_path)


# ---------------------------------------------------------------- CLI
def _list(args: argparse.Namespace) -> int:
    pins = read_pins(args.cache)
    for entry in load_registry(args.registry).values():
        sha = entry.sha256 or pins.get(entry.name)
        state = ("pinned" if entry.sha256 else "user-pin") if sha else "unpinned"
        local = entry.path or cache_dir(args.cache) / f"{entry.name}.pth"
        here = "cached" if Path(local).is_file() else "-"
        sys.stdout.write(f"{entry.name:<28} {entry.format:<8} {state:<8} {here:<6} "
                         f"{entry.url or entry.path}\n")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    path = fetch(args.name, args.cache, args.registry, pin=args.pin, force=args.force,
                 progress=not args.no_progress)
    sys.stdout.write(f"{path}\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    info = inspect_checkpoint(args.path)
    sys.stdout.write(f"{info.sha256}  {info.path}\n")
    sys.stdout.write(f"format {info.format}, {info.depth}, feature_dim {info.feature_dim}, "
                     f"{info.n_tensors} state-dict entries\n")
    if args.name:
        entries = load_registry(args.registry)
        if args.name not in entries:
            raise KeyError(f"unknown checkpoint {args.name!r}; known: {sorted(entries)}")
        expected = expected_sha256(entries[args.name], args.cache)
        if expected is None:
            sys.stderr.write(f"{args.name}: no pinned sha256 to compare with\n")
        _check_hash(args.name, info.sha256, expected, str(info.path))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``anatcl weights list | fetch NAME | verify PATH``; 0 on success, 1 on an error (logged)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache", default=None, help=f"cache folder (default ${CACHE_ENV} or {DEFAULT_CACHE})")
    common.add_argument("--registry", action="append", default=[],
                        help="extra registry file (our trained checkpoints); repeatable")
    parser = argparse.ArgumentParser(prog="anatcl weights", description="Known AnatCL checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="show registry entries")
    fetch_parser = commands.add_parser("fetch", parents=[common], help="download NAME into the cache")
    fetch_parser.add_argument("name")
    fetch_parser.add_argument("--pin", action="store_true", help="record the observed sha256 (user pins file)")
    fetch_parser.add_argument("--force", action="store_true", help="download again even if cached")
    fetch_parser.add_argument("--no-progress", action="store_true")
    verify_parser = commands.add_parser("verify", parents=[common], help="hash and check a local file")
    verify_parser.add_argument("path")
    verify_parser.add_argument("--name", default=None, help="also compare with NAME's pinned sha256")
    args = parser.parse_args(argv)
    try:
        return {"list": _list, "fetch": _fetch, "verify": _verify}[args.command](args)
    except (WeightsError, KeyError, ValueError, OSError, pickle.UnpicklingError) as err:
        logger.error("%s", err.args[0] if isinstance(err, KeyError) else err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
