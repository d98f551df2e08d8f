"""Parameter profiles: a YAML overlay merged over ``params.yaml`` (``profiles/paper.yaml``, ``tiny.yaml``).

    python -m anatcl_core.cli.profile profiles/paper.yaml [--params params.yaml] [--out params.yaml]

An overlay only names the keys it changes; every one of them must already exist in the base file
(a typo is an error, as everywhere else). Mappings merge key by key, anything else is replaced.
The base file is rewritten in ruamel.yaml's round-trip mode: its comments, key order, quoting and
flow lists stay as they were and only the overlaid values change (review them with ``git diff``).

Nothing is written unless the merged file passes every section's declared rules
(:func:`anatcl_core.sections.check_params`) and ``--out`` is a regular file (or a new name) ending
in ``.yaml`` that is not the profile (:func:`anatcl_core.arguments.check_output`).
"""

from __future__ import annotations

import argparse
import copy
import io
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from anatcl_core.arguments import ArgumentError, check_output
from anatcl_core.atomic import atomic_write
from anatcl_core.config import ConfigError, parse_params, read_params_text
from anatcl_core.sections import check_params

PROG = "python -m anatcl_core.cli.profile"


def _round_trip() -> YAML:
    """A ruamel.yaml round-trip parser/writer that writes ``params.yaml`` back as it was written.

    ``null`` stays ``null`` (ruamel would write an empty value) and long flow lines are not wrapped.
    """
    parser = YAML(typ="rt")
    parser.preserve_quotes = True
    parser.width = 4096
    parser.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    return parser


def _detached(value: Any) -> Any:
    """``value`` without the overlay file's comments: a round-trip list or mapping is copied with
    its flow style only; plain values (a :func:`merge` of plain dicts) pass through."""
    if isinstance(value, CommentedSeq):
        fresh: CommentedSeq | CommentedMap = CommentedSeq(_detached(item) for item in value)
    elif isinstance(value, CommentedMap):
        fresh = CommentedMap((key, _detached(item)) for key, item in value.items())
    else:
        return value
    if value.fa.flow_style():
        fresh.fa.set_flow_style()
    return fresh


def _replace(old: Any, new: Any) -> Any:
    """``new`` in the place of ``old``: a list replacing a round-trip list is written into it.

    That keeps the old list's flow style and the comment on its line.
    """
    if isinstance(old, CommentedSeq) and isinstance(new, list):
        old[:] = [_detached(item) for item in new]
        return old
    return _detached(new)


def overlay_into(base: MutableMapping, overlay: Mapping, where: str = "") -> None:
    """Apply ``overlay`` to ``base`` in place, recursively (mappings key by key, the rest replaced).

    Values equal to the base's are left untouched, so their text stays as written.

    Raises:
        ConfigError: a key of ``overlay`` that ``base`` does not have.
    """
    for key, value in overlay.items():
        if key not in base:
            raise ConfigError(f"profile key {where}{key} is not in the parameter file")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            overlay_into(base[key], value, f"{where}{key}.")
        elif type(base[key]) is not type(value) or base[key] != value:  # 1 is not 1.0 nor true
            base[key] = _replace(base[key], value)


def merge(base: Mapping, overlay: Mapping) -> dict:
    """A copy of ``base`` with ``overlay`` applied (:func:`overlay_into`); ``base`` is not changed."""
    out = copy.deepcopy(dict(base))
    overlay_into(out, overlay)
    return out


def _read(path: str | Path) -> str:
    """A parameter file's text, read once (a pipe such as ``<(cat f)`` has no second reading) and
    parsed strictly (:func:`anatcl_core.config.parse_params`: no aliases, bounded size and depth)
    before the round-trip parser, which has no such bounds, sees it."""
    text = read_params_text(path)
    parse_params(text, path)
    return text


def apply_profile(profile: str | Path, params: str | Path = "params.yaml") -> MutableMapping:
    """The parameters of ``params`` with ``profile`` merged over them, as a round-trip document.

    Each file is read once and parsed strictly first (:mod:`anatcl_core.config`: UTF-8, no duplicate
    key, no alias, at most 1 MB); the round-trip parser then reads the same text, and the document
    keeps ``params``' comments and key order (:func:`dump` writes it). The merged values are not
    checked here: :func:`merged_text` does.

    Raises:
        ConfigError: a file that does not load, or a profile key that ``params`` does not have.
    """
    params_text, profile_text = _read(params), _read(profile)
    parser = _round_trip()
    document = parser.load(params_text)
    try:
        overlay_into(document, parser.load(profile_text))
    except ConfigError as err:  # a profile key params.yaml lacks: say which file holds it
        raise ConfigError(f"{profile}: {err}") from None
    return document


def merged_text(profile: str | Path, params: str | Path = "params.yaml") -> str:
    """The text :func:`main` writes: ``profile`` over ``params``, every section checked.

    The text itself is parsed back and validated (:func:`anatcl_core.sections.check_params`), so
    what is written is exactly what was checked.

    Raises:
        ConfigError: as :func:`apply_profile`, or a merged value that breaks its section's rules,
            naming the profile, the key and what was expected.
    """
    text = dump(apply_profile(profile, params))
    where = f"{profile} (merged over {params})"
    check_params(parse_params(text, where), where)
    return text


def dump(document: MutableMapping) -> str:
    """The YAML text of a document from :func:`apply_profile`, comments included."""
    out = io.StringIO()
    _round_trip().dump(document, out)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Merge a profile over a parameter file and write the result (in place by default)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default=None, help="where to write (default: --params, in place)")
    args = parser.parse_args(argv)
    out = args.out or args.params
    try:  # the profile is never overwritten; the parameter file is, by default (in place)
        check_output(out, [args.profile], (".yaml", ".yml"), PROG)
        text = merged_text(args.profile, args.params)
    except (ArgumentError, ConfigError) as err:
        sys.stderr.write(f"{err}\n")
        return 2
    with atomic_write(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
