"""The one-line messages of :mod:`anatcl_core.config`: pydantic's validation errors said as
``<file>: <section>.<key> = <value>: expected ...``, one clause per key, unknown and missing keys
grouped, long values named rather than echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

_EXPECTED = {
    "greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
    "less_than_equal": "<= {le}", "finite_number": "a finite number", "int_type": "an integer",
    "int_from_float": "an integer", "float_type": "a number", "bool_type": "true or false",
    "string_type": "a string", "literal_error": "one of {expected}", "tuple_type": "a list",
    "list_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping",
    "too_short": "at least {min_length} item(s)", "too_long": "at most {max_length} item(s)",
    "string_too_long": "at most {max_length} characters",
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
        value = f" = {_shown(inputs[key])}" if shown else ""
        clauses.append(f"{where}{key}{value}: {'; '.join(texts)}")
    return "; ".join(clauses)


def _shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a 50 MB string is named, not echoed)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text):,} characters)"


def _lookup(values: Mapping | None, key: str, default: Any) -> Any:
    """The value at ``.a.b`` in ``values`` (the section as given), else ``default``."""
    node: Any = values
    for part in key.strip(".").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
