"""Parameter profiles: a YAML overlay merged over ``params.yaml`` (``profiles/paper.yaml``, ``tiny.yaml``).

    python -m anatcl_core.cli.profile profiles/paper.yaml [--params params.yaml] [--out params.yaml]

An overlay only names the keys it changes; every one of them must already exist in the base file
(a typo is an error, as everywhere else). Mappings merge key by key, anything else is replaced.
Writing in place drops the base file's comments: keep the original in git and review the change
with ``git diff``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from anatcl_core.atomic import atomic_write
from anatcl_core.config import ConfigError, load_params


def merge(base: Mapping, overlay: Mapping, where: str = "") -> dict:
    """``base`` with ``overlay`` applied recursively.

    Raises:
        ConfigError: a key of ``overlay`` that ``base`` does not have (except inside a mapping
            that is itself new, e.g. a new method block).
    """
    out = dict(base)
    for key, value in overlay.items():
        if key not in base:
            raise ConfigError(f"profile key {where}{key} is not in the parameter file")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            out[key] = merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def apply_profile(profile: str | Path, params: str | Path = "params.yaml") -> dict:
    """The parameters of ``params`` with ``profile`` merged over them."""
    overlay = load_params(profile)
    return merge(load_params(params), overlay)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="where to write (default: --params, in place)")
    args = parser.parse_args(argv)
    try:
        merged = apply_profile(args.profile, args.params)
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    with atomic_write(args.out or args.params) as tmp:
        tmp.write_text(yaml.safe_dump(merged, sort_keys=False, width=110))
    return 0


if __name__ == "__main__":
    sys.exit(main())
