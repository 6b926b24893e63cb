"""YAML into plain data that remembers where each mapping key and list item sits in the file.

The builder reports a problem at the line of the key that holds the bad value; the rule loader
reports rule problems the same way. Plain ``dict``/``list`` subclasses, so code that only reads
values needs nothing special.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from otelguard.config.errors import ConfigError, ConfigIssue


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


class _CLineLoader(yaml.CSafeLoader):
    """:class:`_LineLoader` on libyaml's parser (PyYAML's C extension): the same constructors
    and resolvers over C-built nodes (which carry the same marks), ~12x faster to parse the
    default rules files (docs/benchmarks.md#config-and-rules-yaml-benchrules_loadpy)."""


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> LocatedDict:
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


def _construct_sequence(loader: Any, node: yaml.SequenceNode) -> LocatedList:
    out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


class _TextScalarLoader(_LineLoader):
    """:class:`_LineLoader` that leaves every plain scalar as its text, except the YAML 1.2 core
    nulls (empty, ``~``, ``null``): how yaml-cpp hands Falco its rules files. PyYAML's YAML 1.1
    resolvers would read a bare ``=`` as the ``value`` tag (and fail), ``0644`` as octal,
    ``10:30`` as sexagesimal and ``on``/``no`` as booleans; the reader of such a document
    converts the keys that are booleans itself."""


class _CTextScalarLoader(_CLineLoader):
    """:class:`_TextScalarLoader` on libyaml's parser."""


for _loader in (_LineLoader, _CLineLoader):
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    _loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
for _loader in (_TextScalarLoader, _CTextScalarLoader):
    _loader.yaml_implicit_resolvers = {}
    _loader.add_implicit_resolver(
        "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])

LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))  # PyYAML built with its C extension
# (line loader, text-scalar loader) by parser; the C pair only when libyaml is there
LOADERS: dict[str, tuple[type[Any], type[Any]]] = {"python": (_LineLoader, _TextScalarLoader)}
if LIBYAML:
    LOADERS["libyaml"] = (_CLineLoader, _CTextScalarLoader)
PARSER = "libyaml" if LIBYAML else "python"  # the one load_yaml uses


def load_yaml(text: str, source: str = "<string>", text_scalars: bool = False,
              parser: str = "") -> Any:
    """Parse YAML keeping line numbers; a syntax error becomes a :class:`ConfigError`.
    ``text_scalars``: plain scalars stay strings (see :class:`_TextScalarLoader`). ``parser``:
    ``libyaml`` or ``python`` (a key of :data:`LOADERS`); default :data:`PARSER`."""
    loader = LOADERS[parser or PARSER][1 if text_scalars else 0]
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506  # SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}", source, line)]) from exc


def load_yaml_documents(text: str, source: str = "<string>") -> list[Any]:
    """Every document of a ``---``-separated YAML stream, keeping line numbers (policy files
    hold several ``kind:`` documents, as Kubernetes manifests do); empty documents are left out."""
    try:
        docs = list(yaml.load_all(text, Loader=LOADERS[PARSER][0]))  # noqa: S506  # SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}", source, line)]) from exc
    return [d for d in docs if d is not None]


def read_yaml_file(path: Union[str, Path]) -> Any:
    """Read and parse a config file once; unreadable or malformed is a :class:`ConfigError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", f"cannot read config: {exc}", str(p))]) from exc
    return load_yaml(text, str(p))


def line_of(container: Any, key: Union[str, int]) -> Optional[int]:
    """The line of ``container[key]`` (its key's line for a mapping), else the container's."""
    if isinstance(container, LocatedDict) and isinstance(key, str):
        return container.key_lines.get(key, container.line)
    if isinstance(container, LocatedList) and isinstance(key, int):
        if 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line
    return None


def own_line(value: Any) -> Optional[int]:
    """Where a located mapping or list starts; None for scalars and plain data."""
    line = getattr(value, "line", None)
    return line if isinstance(line, int) else None
