"""Strict loading of ``params.yaml`` sections into declared, validated dataclasses.

One name per concept: a ``params.yaml`` key is the dataclass field is the keyword argument. Each
section is a :func:`section` dataclass (a frozen pydantic dataclass) whose every rule sits beside
its field, as a type (``Literal`` names, ``tuple[...]``) and a constraint (:data:`Positive`,
``Field(ge=1)``, ``min_length=1``, ...). Loading refuses, with one line naming the file, the key,
the value and what was expected (``params.yaml: pretrain.temperature = 0: expected > 0``):

* a key the dataclass does not declare (a typo must never fall back to a default);
* a key it declares without a default that the file does not give (``params.yaml: evaluate:
  missing key(s) ['n_repeats']``): the params sections declare none, so ``params.yaml`` is the one
  home of every pipeline value;
* a value of the wrong type: YAML values are validated in pydantic's strict JSON mode, so
  ``"3"`` is not an integer, ``true`` is not a number and ``2.0`` is not an integer;
* NaN or infinite numbers anywhere, values outside their range, empty lists where one is needed;
* a duplicate key in the file (YAML would keep the last one silently) and a file that is not
  UTF-8 text.

To add a field, declare it with its type and constraint, and give its value in ``params.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from anatcl_core.cores import MAX_COUNT

T = TypeVar("T")

#: Rules every section shares: no unknown keys, no NaN/Inf.
PARAMS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
#: A thread count: ``auto`` (follows the machine, :func:`anatcl_core.cores.resolve_threads`) or a number
#: (lowered to the usable cores when it runs; more than 18 digits is no count).
Threads = Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_COUNT)]


class ConfigError(ValueError):
    """A parameter file or section does not match its dataclass."""


def section(cls: type[T]) -> type[T]:
    """Decorator of a params section: a frozen pydantic dataclass with :data:`PARAMS_CONFIG`.

    It stays a standard dataclass (``dataclasses.replace`` / ``asdict`` work, and ``replace``
    validates again); constructing one in code validates the same rules as loading it.
    """
    return pydantic.dataclasses.dataclass(cls, frozen=True, config=PARAMS_CONFIG)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):  # `? [a, b]`: SafeLoader's own "found unhashable key"
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]}; YAML would keep "
                    "the last one silently)", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a ``params.yaml`` file into a dict of sections.

    Raises:
        ConfigError: missing file, not UTF-8, not YAML, a duplicate key, or a top level that is
            not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a YAML parameter file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                          f"{err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:  # PyYAML recurses once per level: `[[[[...]]]]` thousands deep
        raise ConfigError(f"{path}: YAML nested too deeply; expected a few levels of sections and keys") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _plain(value: Any, where: str) -> Any:
    """YAML value -> JSON-able value, refusing what JSON cannot say (dates, binary, sets)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value  # NaN / Infinity pass into JSON and are refused there as "not finite"
    raise ConfigError(f"{where} = {value!r}: expected a number, string, list or mapping, "
                      f"not {type(value).__name__}")


_EXPECTED = {
    "greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
    "less_than_equal": "<= {le}", "finite_number": "a finite number", "int_type": "an integer",
    "int_from_float": "an integer", "float_type": "a number", "bool_type": "true or false",
    "string_type": "a string", "literal_error": "one of {expected}", "tuple_type": "a list",
    "list_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping",
    "too_short": "at least {min_length} item(s)", "too_long": "at most {max_length} item(s)",
    "none_required": "null", "missing": "a value", "missing_argument": "a value",
}
#: pydantic's error types of a declared key that the mapping does not give.
_MISSING = ("missing", "missing_argument")


def _where(loc: tuple) -> tuple[str, str | None]:
    """Error location -> (``.a.b[0]``, union member tag such as ``"tuple[int, int, int]"`` or None)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in ("int", "float", "str", "bool", "none"):
            return out, part  # pydantic names the union member that failed: stop at the field
        else:
            out += f".{part}"
    return out, None


def _expected(error: dict, tag: str | None) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if tag is not None:  # a union: say which member forms are accepted
        return "expected " + (ctx["expected"] if kind == "literal_error" else tag.replace("tuple", "list").replace("constrained-", ""))
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("int_type", "float_type") and isinstance(error["input"], bool):
        return f"expected {_EXPECTED[kind]}, not a boolean"
    template = _EXPECTED.get(kind)
    return "expected " + template.format(**ctx) if template else error["msg"]


def format_error(err: ValidationError, where: str, values: Mapping | None = None) -> str:
    """``<where>.<key> = <value>: expected ...``, one clause per key (unknown and missing keys grouped)."""
    unknown: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    reasons: dict[str, list[str]] = {}
    inputs: dict[str, Any] = {}
    for error in err.errors():
        key, tag = _where(tuple(error["loc"]))
        if error["type"] == "unexpected_keyword_argument":
            parent, _, name = key.rpartition(".")
            unknown.setdefault(parent, []).append(name)
            continue
        if error["type"] in _MISSING and tag is None and isinstance(error["loc"][-1], str):  # not a list item
            parent, _, name = key.rpartition(".")
            missing.setdefault(parent, []).append(name)
            continue
        reasons.setdefault(key, []).append(_expected(error, tag))
        inputs.setdefault(key, error["input"] if tag is None else _lookup(values, key, error["input"]))
    for key in list(reasons):  # "too short" after an item failed says nothing new
        if any(other.startswith(key + "[") or other.startswith(key + ".") for other in reasons if other != key):
            reasons[key] = [r for r in reasons[key] if "item(s)" not in r] or reasons[key]
            if not reasons[key] or all("item(s)" in r for r in reasons[key]):
                del reasons[key]
    clauses = [f"{where}{parent}: unknown key(s) {sorted(names)}" for parent, names in unknown.items()]
    clauses += [f"{where}{parent}: missing key(s) {names}" for parent, names in missing.items()]
    for key, texts in reasons.items():
        texts = list(dict.fromkeys(texts))
        if all(t.startswith("expected ") for t in texts):  # a union: any of its members
            texts = ["expected " + " or ".join(t.removeprefix("expected ") for t in texts)]
        shown = key and not (isinstance(inputs[key], Mapping) and inputs[key])  # a whole block: not repeated
        value = f" = {inputs[key]!r}" if shown else ""
        clauses.append(f"{where}{key}{value}: {'; '.join(texts)}")
    return "; ".join(clauses)


def _lookup(values: Mapping | None, key: str, default: Any) -> Any:
    """The value at ``.a.b`` in ``values`` (the section as given), else ``default``."""
    node: Any = values
    for part in key.strip(".").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _adapter(cls: type) -> TypeAdapter:
    if not pydantic.dataclasses.is_pydantic_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a params section (decorate it with config.section)")
    return TypeAdapter(cls)


def from_mapping(cls: type[T], mapping: Any, where: str) -> T:
    """Build section ``cls`` from a parsed YAML mapping, with every declared rule checked.

    Every field declared without a default must be given (the params sections declare no
    defaults); a field with one (:class:`~anatcl_core.contrastive.objectives.MethodConfig`) takes it
    when its key is absent. Lists become tuples where the field says ``tuple``.

    Args:
        cls: a :func:`section` dataclass.
        mapping: the parsed YAML section (``None`` is taken as empty).
        where: the section's name for error messages, e.g. ``"params.yaml: pretrain"``.

    Raises:
        ConfigError: one line naming the key, the value and what was expected.
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {mapping!r}")
    text = json.dumps(_plain(mapping, where))
    try:
        return _adapter(cls).validate_json(text, strict=True)
    except ValidationError as err:
        raise ConfigError(format_error(err, where, mapping)) from None


def load_section(path: str | Path, section_name: str, cls: type[T]) -> T:
    """Load one section of a parameter file into ``cls`` (see :func:`from_mapping`).

    Raises:
        ConfigError: if the section is absent or does not match ``cls``.
    """
    params = load_params(path)
    if section_name not in params:
        raise ConfigError(f"{path}: no section {section_name!r}; sections are {sorted(params)}")
    return from_mapping(cls, params[section_name], f"{path}: {section_name}")
