"""Strict loading of ``params.yaml`` sections into dataclasses.

One name per concept: a ``params.yaml`` key is the dataclass field is the keyword argument. A key
the dataclass does not declare is an error (a typo must never silently fall back to a default),
and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter file or section does not match its dataclass."""


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a ``params.yaml`` file into a dict of sections.

    Raises:
        ConfigError: if the file is missing, is not YAML, or its top level is not a mapping.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _check_value(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {k: _check_value(v, args[1] if args else Any, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {hint.__name__}, got boolean {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_mapping(cls: type[T], mapping: Any, where: str) -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types.

    Missing keys take the dataclass defaults. Lists become tuples where the field says ``tuple``.

    Args:
        cls: a dataclass type whose fields carry type annotations.
        mapping: the parsed YAML section (``None`` is taken as empty).
        where: the section's name for error messages, e.g. ``"params.yaml:pretrain"``.

    Raises:
        ConfigError: naming the key and what was expected.
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {mapping!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    values = {k: _check_value(v, hints[k], f"{where}.{k}") for k, v in mapping.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def load_section(path: str | Path, section: str, cls: type[T]) -> T:
    """Load one section of a parameter file into ``cls`` (see :func:`from_mapping`).

    Raises:
        ConfigError: if the section is absent or does not match ``cls``.
    """
    params = load_params(path)
    if section not in params:
        raise ConfigError(f"{path}: no section {section!r}; sections are {sorted(params)}")
    return from_mapping(cls, params[section], f"{path}:{section}")
