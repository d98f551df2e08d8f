"""Known checkpoints: fetching into a download cache with hash pinning, registering ours, the CLI.

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
through :func:`anatcl_core.model.checkpoint.safe_load`, which never runs pickled code. The registry
files are read by :mod:`anatcl_core.model.registry`; a file is checked by
:func:`anatcl_core.model.trained.inspect_checkpoint`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import sys
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from anatcl_core.atomic import atomic_write
from anatcl_core.model.registry import (
    CACHE_ENV, DEFAULT_CACHE, PINS_FILE, WeightsEntry, cache_dir, expected_sha256, load_registry, parse_entry,
    read_pins, read_yaml, write_yaml,
)
from anatcl_core.model.trained import WeightsError, inspect_checkpoint, sha256_file

logger = logging.getLogger(__name__)

PROVENANCE_KEYS = ("config", "data_version", "commit")  # expected for our trained checkpoints
_CHUNK = 1 << 20


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
        write_yaml(pins, cache_dir(cache) / PINS_FILE)
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
    data = read_yaml(registry_path) if registry_path.is_file() else {"schema": 1}
    data.setdefault("checkpoints", {})[name] = raw
    write_yaml(data, registry_path)
    logger.info("registered %s (%s, sha256 %s) in %s", name, info.format, info.sha256, registry_path)
    return parse_entry(name, raw, registry_path)


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
