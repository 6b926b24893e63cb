"""Plain (YAML) data into frozen dataclasses: the one builder every config kind uses.

Given a dataclass type and the data, :func:`build` checks every field against its type hint,
fills defaults, rejects unknown keys and collects *all* problems with a dotted path and, when
the data came from :func:`~otelguard.config.reader.load_yaml`, the file and line.

Supported hints: ``bool int float str``, ``Optional[X]``/``X | None``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``list[X]``, ``frozenset[X]``, ``dict[str, X]``/``Mapping[str, X]``,
``Literal[...]``, ``Enum`` subclasses (by value or name), nested dataclasses, ``Any``/``object``,
and ``Annotated[X, Custom(...)]`` for a value the rules above cannot describe (the pipeline's
``processors:`` list, whose item type depends on its ``type`` key). A field whose metadata is
:data:`INTERNAL` is set by code, never by the file. A ``ValueError`` from a dataclass's
``__post_init__`` becomes an issue at the dataclass's path; :class:`~otelguard.config.errors.Checks`
puts each problem at its own field instead.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, TypeVar, Union

from otelguard.config.errors import ConfigError, ConfigIssue, InvalidFields
from otelguard.config.reader import line_of, own_line, read_yaml_file

T = TypeVar("T")

# ``field(metadata=INTERNAL)``: a field code sets (``replace(cfg, self_tgid=...)``); in a file
# it is an unknown key, and the JSON Schema leaves it out.
INTERNAL: typing.Mapping[str, Any] = types.MappingProxyType({"otelguard.config": "internal"})


@dataclass
class Issues:
    """Collects :class:`ConfigIssue` while building; ``source`` is the file name for messages."""

    source: Optional[str] = None
    items: list[ConfigIssue] = field(default_factory=list)

    def add(self, path: str, message: str, line: Optional[int]) -> None:
        self.items.append(ConfigIssue(path, message, self.source, line))

    def raise_if_any(self) -> None:
        """Raise every issue, in the order of the file (issues without a line first)."""
        if self.items:
            raise ConfigError(sorted(self.items, key=lambda i: i.line or 0))


@dataclass(frozen=True)
class Custom:
    """``Annotated[X, Custom(build, schema)]``: how to build and describe a value of type X.

    ``build(value, path, issues, line)`` returns the built value (None after recording issues);
    ``schema(schema_of)`` returns its JSON Schema, ``schema_of`` giving the schema of any type.
    """

    build: Callable[[Any, str, Issues, Optional[int]], Any]
    schema: Callable[[Callable[[Any], dict[str, Any]]], dict[str, Any]]


def custom_of(tp: Any) -> Optional[Custom]:
    """The :class:`Custom` of an ``Annotated`` hint, if any."""
    if typing.get_origin(tp) is Annotated:
        for meta in getattr(tp, "__metadata__", ()):
            if isinstance(meta, Custom):
                return meta
    return None


def config_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields a file may set: init fields that are not :data:`INTERNAL`."""
    return [f for f in dataclasses.fields(cls)
            if f.init and f.metadata.get("otelguard.config") != "internal"]


def join(path: str, key: str) -> str:
    """``a.b`` + ``c`` -> ``a.b.c``; ``a`` + ``[1]`` -> ``a[1]``."""
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def describe(value: Any) -> str:
    """A value as shown in a message: its type and a short repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def build(tp: Any, value: Any, path: str, issues: Issues, line: Optional[int] = None) -> Any:
    """Check and convert ``value`` against type hint ``tp``; problems go to ``issues``.

    Returns the converted value, or None when invalid (the issue is recorded), so callers keep
    going and report everything. ``line`` is where ``value`` sits in the file.
    """
    line = own_line(value) or line
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any or tp is object:
        return value
    if origin is Annotated:
        custom = custom_of(tp)
        if custom is not None:
            return custom.build(value, path, issues, line)
        return build(args[0], value, path, issues, line)
    if origin is Union or origin is types.UnionType:
        non_none = [a for a in args if a is not type(None)]
        if value is None and len(non_none) < len(args):
            return None
        if len(non_none) == 1:
            return build(non_none[0], value, path, issues, line)
        for candidate in non_none:
            trial = Issues(issues.source)
            out = build(candidate, value, path, trial, line)
            if not trial.items:
                return out
        names = " or ".join(_type_name(a) for a in non_none)
        issues.add(path, f"expected {names}, got {describe(value)}", line)
        return None
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        issues.add(path, f"expected one of {choices}, got {describe(value)}", line)
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_dataclass(tp, value, path, issues, line)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or value == member.name:
                return member
        choices = ", ".join(repr(m.value) for m in tp)
        issues.add(path, f"expected one of {choices}, got {describe(value)}", line)
        return None
    if tp in _SCALARS:
        want, convert, name = _SCALARS[tp]
        if isinstance(value, want) and not (tp is not bool and isinstance(value, bool)):
            return convert(value)
        issues.add(path, f"expected {name}, got {describe(value)}", line)
        return None
    if origin in (tuple, list, frozenset, set) or tp in (tuple, list):
        return _build_sequence(origin or tp, args, value, path, issues, line)
    if origin in (dict, AbcMapping) or tp is dict:
        return _build_dict(args, value, path, issues, line)
    issues.add(path, f"unsupported type in config schema: {tp!r}", line)
    return None


# hint -> (accepted Python types, conversion, name in messages); bool is never an int or float
_SCALARS: dict[Any, tuple[tuple[type, ...], Callable[[Any], Any], str]] = {
    bool: ((bool,), bool, "a boolean"),
    int: ((int,), int, "an integer"),
    float: ((int, float), float, "a number"),
    str: ((str,), str, "a string"),
}


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp in _SCALARS:
        return _SCALARS[tp][2]
    origin = typing.get_origin(tp)
    if origin in (tuple, list, frozenset, set):
        return "a list"
    if origin in (dict, AbcMapping):
        return "a mapping"
    return getattr(tp, "__name__", repr(tp))


def _build_sequence(
    origin: Any, args: tuple[Any, ...], value: Any, path: str, issues: Issues,
    line: Optional[int],
) -> Any:
    if not isinstance(value, list):
        issues.add(path, f"expected a list, got {describe(value)}", line)
        return None
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            issues.add(path, f"expected a list of {len(args)} items, got {len(value)}", line)
            return None
        item_types: list[Any] = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [
        build(item_tp, item, f"{path}[{i}]", issues, line_of(value, i) or line)
        for i, (item_tp, item) in enumerate(zip(item_types, value))
    ]
    if origin is tuple:
        return tuple(items)
    if origin in (frozenset, set):
        try:
            return frozenset(items)
        except TypeError:
            issues.add(path, "list items must be hashable scalars", line)
            return None
    return items


def _build_dict(
    args: tuple[Any, ...], value: Any, path: str, issues: Issues, line: Optional[int]
) -> Any:
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping, got {describe(value)}", line)
        return None
    key_tp, val_tp = args if len(args) == 2 else (str, Any)
    out: dict[Any, Any] = {}
    for key, item in value.items():
        item_line = line_of(value, key) or line
        k = build(key_tp, key, join(path, str(key)), issues, item_line)
        out[k] = build(val_tp, item, join(path, str(key)), issues, item_line)
    return out


def _build_dataclass(
    cls: type[Any], value: Any, path: str, issues: Issues, line: Optional[int]
) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping, got {describe(value)}", line)
        return None
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # a broken annotation is the schema author's bug: say which
        issues.add(path, f"cannot read the type hints of {cls.__name__}: {exc}", line)
        return None
    fields = {f.name: f for f in config_fields(cls)}
    before = len(issues.items)
    for key in value:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            issues.add(join(path, str(key)), f"unknown key (known: {known})", line_of(value, key))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in value:
            field_before = len(issues.items)
            built = build(hints.get(name, Any), value[name], join(path, name), issues,
                          line_of(value, name) or line)
            if len(issues.items) == field_before:
                kwargs[name] = built
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            issues.add(join(path, name), "required key is missing", line)
    complete = len(issues.items) == before
    try:
        # With some fields already refused, the value checks still run on the good ones (the
        # refused ones take their defaults) so one run reports every problem.
        out = cls(**kwargs)
    except InvalidFields as exc:
        for name, message in exc.problems:
            if complete or _root(name) in kwargs:
                issues.add(join(path, name), message, _line_at(value, name) or line)
        return None
    except (ValueError, TypeError) as exc:
        if complete:
            issues.add(path, str(exc), line)
        return None
    return out if complete else None


def _root(relative: str) -> str:
    """``probe.argv_max`` -> ``probe``; ``cgroup_scope[0]`` -> ``cgroup_scope``."""
    return re.split(r"[.\[]", relative, maxsplit=1)[0]


_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _line_at(value: Any, relative: str) -> Optional[int]:
    """The line of the deepest part of ``probe.read_path_prefixes[1]`` present in ``value``."""
    line = None
    current = value
    for name, index in _SEGMENT.findall(relative):
        key: Union[str, int] = int(index) if index else name
        found = line_of(current, key)
        if found is None:
            break
        line = found
        try:
            current = current[key]
        except (KeyError, IndexError, TypeError):
            break
    return line


def from_mapping(cls: type[T], data: Any, *, path: str = "", source: Optional[str] = None,
                 line: Optional[int] = None) -> T:
    """Build dataclass ``cls`` from plain data (None means all defaults) or raise ConfigError.

    ``cfg = from_mapping(Config, raw, path="processors[0].config")``: all problems are collected
    first; the error lists each with its dotted path (and file:line when ``data`` came from
    :func:`~otelguard.config.reader.load_yaml`, ``source`` being the file name).
    """
    issues = Issues(source)
    out = build(cls, data, path, issues, line)
    issues.raise_if_any()
    result: T = out
    return result


def load_file(cls: type[T], path: Union[str, Path]) -> T:
    """Read a config file once and build the whole document; every problem at once."""
    return from_mapping(cls, read_yaml_file(path), source=str(path))


def load_section(cls: type[T], path: Union[str, Path], key: str) -> T:
    """Build one top-level section of a file whose other sections belong to other commands.

    For tools that need a single section (``otelguard ebpf render`` reads ``sensor:`` of an
    agent or ``otelguard run`` file); the commands that own a file use :func:`load_file`.
    """
    doc = read_yaml_file(path)
    issues = Issues(str(path))
    if doc is not None and not isinstance(doc, dict):
        issues.add("", f"expected a mapping at the top level, got {describe(doc)}", own_line(doc))
        issues.raise_if_any()
    section = (doc or {}).get(key)
    out = build(cls, section, key, issues, line_of(doc, key))
    issues.raise_if_any()
    result: T = out
    return result
