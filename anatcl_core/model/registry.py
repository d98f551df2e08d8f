"""The registry of known checkpoints: packaged and user registry files, the cache folder, user pins.

The packaged registry (``weights_registry.yaml``) lists upstream's released files; our trained
checkpoints go into registry files of their own (:func:`anatcl_core.model.weights.register_checkpoint`).
Upstream publishes no checksums: a user's pins (``<cache>/pins.yaml``) record observed hashes.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from anatcl_core.atomic import atomic_write
from anatcl_core.config import strict_yaml
from anatcl_core.data.files import read_text
from anatcl_core.model.trained import FORMATS, WeightsError

CACHE_ENV = "ANATCL_CACHE"
DEFAULT_CACHE = Path("~/.cache/anatcl")
PINS_FILE = "pins.yaml"
ENTRY_KEYS = {"format", "url", "path", "sha256", "description", "provenance"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


def cache_dir(cache: str | Path | None = None) -> Path:
    """``cache`` if given, else ``$ANATCL_CACHE``, else ``~/.cache/anatcl``."""
    return Path(cache or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def read_yaml(path: Path) -> dict:
    """A YAML file that must hold a mapping (empty file: {}).

    Raises:
        WeightsError: naming the file: no regular UTF-8 file, not YAML (or a rule of the strict loader
            broken: aliases, duplicate keys, nesting), no mapping.
    """
    text = read_text(path, "a YAML mapping", WeightsError)
    data = strict_yaml(text, path, WeightsError) or {}
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def write_yaml(data: dict, path: Path) -> None:
    """Atomic YAML write (:func:`anatcl_core.atomic.atomic_write`)."""
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def parse_entry(name: str, raw: object, source: Path) -> WeightsEntry:
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
    for key in ("url", "path", "description"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise WeightsError(f"{where}: {key} {raw[key]!r}; expected a string")
    if raw.get("provenance") is not None and not isinstance(raw["provenance"], dict):
        raise WeightsError(f"{where}: provenance {raw['provenance']!r}; expected a mapping")
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
        checkpoints = read_yaml(source).get("checkpoints") or {}
        if not isinstance(checkpoints, dict):
            raise WeightsError(f"{source}: 'checkpoints' must map names to entries")
        for name, raw in checkpoints.items():
            if name in entries:
                raise WeightsError(f"{source}: checkpoint {name!r} is already in {entries[name].source}")
            entries[name] = parse_entry(str(name), raw, source)
    return entries


def read_pins(cache: str | Path | None = None) -> dict[str, str]:
    """User-side pins ``{name: sha256}`` from ``<cache>/pins.yaml`` (empty if none)."""
    path = cache_dir(cache) / PINS_FILE
    return {str(k): str(v) for k, v in read_yaml(path).items()} if path.is_file() else {}


def expected_sha256(entry: WeightsEntry, cache: str | Path | None = None) -> str | None:
    """The registry's hash if it pins one, else the user's pin, else None."""
    return entry.sha256 or read_pins(cache).get(entry.name)
