"""Pipeline YAML into frozen dataclasses, and the generic loader every processor's Config uses.

Two layers:

* :func:`build` / :func:`from_mapping`: a generic "dataclass from mapping" loader. Given a
  (frozen) dataclass type and plain data, it checks every field against its type hint, fills
  defaults, rejects unknown keys, and collects *all* problems with a dotted path and, when the
  data came from :func:`load_yaml`, the file and line. Helpers E (k8s) and F (detection) call it
  for their own ``Config`` types; the pipeline loader calls it for each ``processors[i].config``.
  Supported hints: ``bool int float str``, ``Optional[X]``/``X | None``, ``tuple[X, ...]``,
  ``tuple[X, Y]``, ``list[X]``, ``frozenset[X]``, ``dict[str, X]``/``Mapping[str, X]``,
  ``Literal[...]``, ``Enum`` subclasses (by value or name), nested dataclasses, ``Any``/``object``.
  A ``ValueError`` raised by a dataclass's ``__post_init__`` becomes an issue at that path, so
  cross-field checks live beside the fields.
* :func:`load_pipeline_config`: the service's file (``service:``, ``forward:``, ``exporters:``,
  ``processors:``) into :class:`PipelineConfig`; each processor's ``config`` is built with the
  ``Config`` type its registry entry names, so a broken processor package is an error for that
  entry only.

A pipeline file (every section optional; ``name`` defaults to ``type`` and labels the metrics)::

    service:  {listen: 0.0.0.0:4317, listen_http: 0.0.0.0:4318, max_inflight_requests: 64}
    forward:  {max_attempts: 4, down_seconds: 5}
    exporters: [otlp:otel-gateway:4317]
    processors:
      - type: k8s_attributes
        config: {mode: gateway}
      - type: falco_rules
        config: {rules: [/etc/otelguard/rules.yaml]}
      - type: noise_control
        config: {window_seconds: 60, rate_per_second: 1, burst: 20}
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, TypeVar, Union

import yaml

from otelguard.processors import registry
from otelguard.processors.errors import ConfigError, ConfigIssue, RegistryError

T = TypeVar("T")


# --- YAML with line numbers --------------------------------------------------------------------


class LocatedDict(dict[str, Any]):
    """A YAML mapping that remembers the 1-based line of each key (and of itself)."""

    line: Optional[int] = None
    key_lines: dict[str, int]


class LocatedList(list[Any]):
    """A YAML sequence that remembers the 1-based line of each item."""

    line: Optional[int] = None
    item_lines: list[int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings and sequences carry line numbers for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    out = LocatedDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = str(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LocatedList:
    out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML keeping line numbers; a syntax error becomes a :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506  # SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}", source, line)]) from exc


def _line_of(container: Any, key: Union[str, int]) -> Optional[int]:
    if isinstance(container, LocatedDict) and isinstance(key, str):
        return container.key_lines.get(key, container.line)
    if isinstance(container, LocatedList) and isinstance(key, int):
        if 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line
    return None


def _own_line(value: Any) -> Optional[int]:
    line = getattr(value, "line", None)
    return line if isinstance(line, int) else None


# --- The generic loader ------------------------------------------------------------------------


@dataclass
class Issues:
    """Collects :class:`ConfigIssue` while building; ``source`` is the file name for messages."""

    source: Optional[str] = None
    items: list[ConfigIssue] = field(default_factory=list)

    def add(self, path: str, message: str, line: Optional[int]) -> None:
        self.items.append(ConfigIssue(path, message, self.source, line))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)



def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def build(tp: Any, value: Any, path: str, issues: Issues, line: Optional[int] = None) -> Any:
    """Check and convert ``value`` against type hint ``tp``; problems go to ``issues``.

    Returns the converted value, or None when invalid (the issue is recorded), so callers keep
    going and report everything. ``line`` is where ``value`` sits in the file.
    """
    line = _own_line(value) or line
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any or tp is object:
        return value
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
        issues.add(path, f"expected {names}, got {_describe(value)}", line)
        return None
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        issues.add(path, f"expected one of {choices}, got {_describe(value)}", line)
        return None
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_dataclass(tp, value, path, issues, line)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value == member.value or value == member.name:
                return member
        choices = ", ".join(repr(m.value) for m in tp)
        issues.add(path, f"expected one of {choices}, got {_describe(value)}", line)
        return None
    if tp is bool:
        if isinstance(value, bool):
            return value
        issues.add(path, f"expected a boolean, got {_describe(value)}", line)
        return None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        issues.add(path, f"expected an integer, got {_describe(value)}", line)
        return None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        issues.add(path, f"expected a number, got {_describe(value)}", line)
        return None
    if tp is str:
        if isinstance(value, str):
            return value
        issues.add(path, f"expected a string, got {_describe(value)}", line)
        return None
    if origin in (tuple, list, frozenset, set) or tp in (tuple, list):
        return _build_sequence(tp, origin or tp, args, value, path, issues, line)
    if origin in (dict, AbcMapping) or tp is dict:
        return _build_dict(args, value, path, issues, line)
    issues.add(path, f"unsupported type in config schema: {tp!r}", line)
    return None


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin in (tuple, list, frozenset, set):
        return "a list"
    if origin in (dict, AbcMapping):
        return "a mapping"
    return getattr(tp, "__name__", repr(tp))


def _build_sequence(
    tp: Any, origin: Any, args: tuple[Any, ...], value: Any, path: str, issues: Issues,
    line: Optional[int],
) -> Any:
    if not isinstance(value, list):
        issues.add(path, f"expected a list, got {_describe(value)}", line)
        return None
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            issues.add(path, f"expected a list of {len(args)} items, got {len(value)}", line)
            return None
        item_types: list[Any] = list(args)
    else:
        item_types = [args[0] if args else Any] * len(value)
    items = [
        build(item_tp, item, f"{path}[{i}]", issues, _line_of(value, i) or line)
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
        issues.add(path, f"expected a mapping, got {_describe(value)}", line)
        return None
    key_tp, val_tp = args if len(args) == 2 else (str, Any)
    out: dict[Any, Any] = {}
    for key, item in value.items():
        item_line = _line_of(value, key) or line
        k = build(key_tp, key, f"{path}.{key}", issues, item_line)
        out[k] = build(val_tp, item, _join(path, str(key)), issues, item_line)
    return out


def _build_dataclass(
    cls: type[Any], value: Any, path: str, issues: Issues, line: Optional[int]
) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping, got {_describe(value)}", line)
        return None
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:  # a broken annotation is the schema author's bug: say which
        issues.add(path, f"cannot read the type hints of {cls.__name__}: {exc}", line)
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    before = len(issues.items)
    for key in value:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            issues.add(_join(path, str(key)), f"unknown key (known: {known})", _line_of(value, key))
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = build(
                hints.get(name, Any), value[name], _join(path, name), issues,
                _line_of(value, name) or line,
            )
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            issues.add(_join(path, name), "required key is missing", line)
    if len(issues.items) > before:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        issues.add(path, str(exc), line)
        return None


def from_mapping(cls: type[T], data: Any, *, path: str = "", source: Optional[str] = None) -> T:
    """Build dataclass ``cls`` from plain data (None means all defaults) or raise ConfigError.

    The entry point for processor packages: ``cfg = from_mapping(Config, raw, path="config")``.
    All problems are collected first; the error lists each with its dotted path (and file:line
    when ``data`` came from :func:`load_yaml`).
    """
    issues = Issues(source)
    out = build(cls, data, path, issues)
    issues.raise_if_any()
    result: T = out
    return result


# --- The service's pipeline file ---------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSection:
    """Where the service listens and how much it holds in memory at once."""

    listen: str = "127.0.0.1:4317"
    listen_http: Optional[str] = None
    metrics: Optional[str] = "127.0.0.1:9466"
    max_request_bytes: int = 16 * 1024 * 1024
    max_inflight_requests: int = 64
    max_inflight_bytes: int = 128 * 1024 * 1024
    flush_interval_seconds: float = 1.0
    # Snapshot each batch before each stage so a failing stage cannot leave it half-changed
    # (costs about one parse per stage per batch; see bench/processor_throughput.py).
    restore_on_failure: bool = True

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_inflight_requests", "max_inflight_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.flush_interval_seconds <= 0:
            raise ValueError("flush_interval_seconds must be > 0")


@dataclass(frozen=True)
class ForwardSection:
    """Retries to the next hop, and how long it is considered down after retries ran out."""

    timeout_seconds: float = 5.0
    max_attempts: int = 4
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    down_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.timeout_seconds, self.initial_backoff_seconds, self.max_backoff_seconds) <= 0:
            raise ValueError("timeout and backoff seconds must be > 0")
        if self.down_seconds < 0:
            raise ValueError("down_seconds must be >= 0")


@dataclass(frozen=True)
class ProcessorSpec:
    """One pipeline entry: registry type, metric label ``name`` and the built Config object."""

    type: str
    name: str
    config: Any


@dataclass(frozen=True)
class PipelineConfig:
    service: ServiceSection = ServiceSection()
    forward: ForwardSection = ForwardSection()
    exporters: tuple[str, ...] = ()
    processors: tuple[ProcessorSpec, ...] = ()


_TOP_KEYS = ("service", "forward", "exporters", "processors")
_ENTRY_KEYS = ("type", "name", "config")


def build_pipeline_config(data: Any, source: Optional[str] = None) -> PipelineConfig:
    """Validate a whole pipeline document; raises ConfigError listing every problem."""
    issues = Issues(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        issues.add("", f"expected a mapping at the top level, got {_describe(data)}", _own_line(data))
        issues.raise_if_any()
    for key in data:
        if key not in _TOP_KEYS:
            issues.add(str(key), f"unknown key (known: {', '.join(_TOP_KEYS)})", _line_of(data, key))
    service = build(ServiceSection, data.get("service"), "service", issues, _line_of(data, "service"))
    forward = build(ForwardSection, data.get("forward"), "forward", issues, _line_of(data, "forward"))
    exporters = build(
        tuple[str, ...], data.get("exporters", []), "exporters", issues, _line_of(data, "exporters")
    )
    specs = _build_processors(data.get("processors", []), issues, _line_of(data, "processors"))
    issues.raise_if_any()
    return PipelineConfig(service, forward, exporters, specs)


def _build_processors(raw: Any, issues: Issues, line: Optional[int]) -> tuple[ProcessorSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        issues.add("processors", f"expected a list, got {_describe(raw)}", line)
        return ()
    specs: list[ProcessorSpec] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"processors[{i}]"
        entry_line = _line_of(raw, i) or line
        if not isinstance(entry, dict):
            issues.add(path, f"expected a mapping with type and config, got {_describe(entry)}",
                       entry_line)
            continue
        for key in entry:
            if key not in _ENTRY_KEYS:
                issues.add(_join(path, str(key)), f"unknown key (known: {', '.join(_ENTRY_KEYS)})",
                           _line_of(entry, key))
        type_name = entry.get("type")
        if not isinstance(type_name, str):
            issues.add(_join(path, "type"), f"expected a processor type, one of: "
                       f"{', '.join(registry.type_names())}", _line_of(entry, "type") or entry_line)
            continue
        name = entry.get("name", type_name)
        if not isinstance(name, str) or not name:
            issues.add(_join(path, "name"), "expected a non-empty string", _line_of(entry, "name"))
            continue
        if name in names:
            issues.add(_join(path, "name"), f"duplicate stage name {name!r}; set a distinct name",
                       _line_of(entry, "name") or entry_line)
        names.add(name)
        try:
            config_type = registry.config_type(type_name)
        except RegistryError as exc:
            issues.add(_join(path, "type"), str(exc), _line_of(entry, "type"))
            continue
        cfg = build(config_type, entry.get("config"), _join(path, "config"), issues,
                    _line_of(entry, "config") or entry_line)
        specs.append(ProcessorSpec(type_name, name, cfg))
    return tuple(specs)


def load_pipeline_config(path: Union[str, Path]) -> PipelineConfig:
    """Read and validate a pipeline YAML file (file:line in every reported issue)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read config: {exc}", str(p))]) from exc
    return build_pipeline_config(load_yaml(text, str(p)), str(p))


def with_overrides(cfg: PipelineConfig, **service: Any) -> PipelineConfig:
    """The config with some ``service:`` fields replaced (command-line flags win over the file)."""
    changes = {k: v for k, v in service.items() if v is not None}
    return dataclasses.replace(cfg, service=dataclasses.replace(cfg.service, **changes))


def as_mapping(obj: Any) -> Mapping[str, Any]:
    """A dataclass config as plain data (for printing the effective config)."""
    return dataclasses.asdict(obj)
