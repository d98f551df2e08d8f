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
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from anatcl_core.config_messages import format_error
from anatcl_core.cores import MAX_COUNT

T = TypeVar("T")

#: Rules every section shares: no unknown keys, no NaN/Inf, no string longer than a path can be
#: (free text such as ``report.title`` declares its own, shorter cap: :data:`Text`).
PARAMS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=4096)

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
#: A thread count: ``auto`` (follows the machine, :func:`anatcl_core.cores.resolve_threads`) or a number
#: (lowered to the usable cores when it runs; more than 18 digits is no count).
Threads = Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_COUNT)]
#: Free text shown to a reader (a title, a label): a line, not a document.
Text = Annotated[str, Field(max_length=200)]


class ConfigError(ValueError):
    """A parameter file or section does not match its dataclass."""


def section(cls: type[T]) -> type[T]:
    """Decorator of a params section: a frozen pydantic dataclass with :data:`PARAMS_CONFIG`.

    It stays a standard dataclass (``dataclasses.replace`` / ``asdict`` work, and ``replace``
    validates again); constructing one in code validates the same rules as loading it.
    """
    return pydantic.dataclasses.dataclass(cls, frozen=True, config=PARAMS_CONFIG)


#: A parameter file is a few hundred values (params.yaml: ~14 kB, ~750 YAML nodes); these caps keep
#: a hostile or broken file (50 MB of comments, an alias bomb, ``[[[[...]]]]``) to a second of work.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 20_000
MAX_DEPTH = 20
#: Integers beyond 64 bits mean nothing here, and Python refuses to read > 4,300 digits anyway.
MAX_INT = 2**63 - 1
_MAX_INT_TEXT = 80  # characters of an integer's text worth converting at all (bases 2..60)


class _Refused(yaml.MarkedYAMLError):
    """A parameter file breaks one of the loader's rules; its message says which and where."""

    def __init__(self, mark, problem: str):
        super().__init__(problem=problem, problem_mark=mark)

    def __str__(self) -> str:
        return f"line {self.problem_mark.line + 1}: {self.problem}"


class StrictLoader(yaml.SafeLoader):
    """The one YAML loader of parameter files (``params.yaml``, profiles): PyYAML's ``SafeLoader`` plus

    * no aliases (``*name``): parameter files have no need for them, and nested ones expand
      exponentially (a 345-byte file became 10 GB);
    * at most :data:`MAX_NODES` values, nested at most :data:`MAX_DEPTH` deep;
    * mapping keys are scalars (a name or number), each given once (YAML would keep the last);
    * integers within 64 bits.
    """

    _nodes = 0
    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(event.start_mark, f"YAML alias *{event.anchor}: parameter files take no aliases "
                           "(write each value out)")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(self.peek_event().start_mark, f"more than {MAX_NODES:,} values; a parameter file "
                           "holds a few hundred")
        if self._depth >= MAX_DEPTH:
            raise _Refused(self.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise _Refused(key_node.start_mark, f"a {kind} used as a key; expected a name or number")
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _Refused(key_node.start_mark, f"duplicate key {key!r} (first on line {seen[key]}; YAML "
                               "would keep the last one silently)")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        value = super().construct_yaml_int(node) if len(text) <= _MAX_INT_TEXT else None
        if value is None or abs(value) > MAX_INT:
            shown = text if len(text) <= 20 else f"{text[:20]}... ({len(text)} characters)"
            raise _Refused(node.start_mark, f"integer {shown} is outside +-{MAX_INT} (64 bits)")
        return value


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def read_params_text(path: str | Path) -> str:
    """The text of a parameter file, read once (a pipe such as ``<(cat f)`` works) and at most
    :data:`MAX_FILE_BYTES` long.

    Raises:
        ConfigError: missing, a folder, larger than the cap, or not UTF-8.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)  # never more, whatever the file is (/dev/zero)
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameter file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a YAML parameter file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MB; a parameter file is a few kB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                          f"{err.start})") from None


def strict_yaml(text: str, where: str | Path, error: type[Exception] | None = None) -> Any:
    """Parse YAML text with :class:`StrictLoader`: the one YAML reader of the project's own files
    (parameter files, profiles, weights registries and pins).

    Args:
        text: the file's text; where: the file's name for messages; error: the exception class
            raised (default :class:`ConfigError`).

    Raises:
        ``error``: not YAML (PyYAML's scanner raises a bare ``ValueError`` for an escape such as
            ``"\\U00110000"`` beyond Unicode, caught here too) or a rule of :class:`StrictLoader` broken.
    """
    error = error or ConfigError
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except _Refused as err:
        raise error(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        raise error(f"{where}: not valid YAML ({' '.join(str(err).split())})") from None
    except ValueError as err:  # chr() of a \U escape beyond U+10FFFF, inside PyYAML's scanner
        raise error(f"{where}: not valid YAML ({err}; an escape beyond Unicode?)") from None
    except RecursionError:  # belt and braces: StrictLoader stops at MAX_DEPTH long before Python's limit
        raise error(f"{where}: YAML nested too deeply; expected a few levels of keys") from None


def parse_params(text: str, where: str | Path) -> dict[str, Any]:
    """Parse parameter-file text with :func:`strict_yaml` into a dict of sections.

    Args:
        text: the file's text (:func:`read_params_text`).
        where: the file's name for error messages.

    Raises:
        ConfigError: not YAML, a rule of :class:`StrictLoader` broken, or a top level that is not a
            mapping.
    """
    data = strict_yaml(text, where)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of sections at the top level")
    return data


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a ``params.yaml`` file (or a profile) into a dict of sections, strictly.

    Raises:
        ConfigError: see :func:`read_params_text` and :func:`parse_params`.
    """
    return parse_params(read_params_text(path), path)


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
