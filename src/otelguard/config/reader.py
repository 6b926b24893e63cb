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


class _TextScalarLoader(_LineLoader):
    """:class:`_LineLoader` that leaves every plain scalar as its text, except the YAML 1.2 core
    nulls (empty, ``~``, ``null``): how yaml-cpp hands Falco its rules files. PyYAML's YAML 1.1
    resolvers would read a bare ``=`` as the ``value`` tag (and fail), ``0644`` as octal,
    ``10:30`` as sexagesimal and ``on``/``no`` as booleans; the reader of such a document
    converts the keys that are booleans itself."""


_TextScalarLoader.yaml_implicit_resolvers = {}
_TextScalarLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])


def load_yaml(text: str, source: str = "<string>", text_scalars: bool = False) -> Any:
    """Parse YAML keeping line numbers; a syntax error becomes a :class:`ConfigError`.
    ``text_scalars``: plain scalars stay strings (see :class:`_TextScalarLoader`)."""
    loader = _TextScalarLoader if text_scalars else _LineLoader
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
        docs = list(yaml.load_all(text, Loader=_LineLoader))  # noqa: S506  # SafeLoader subclass
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
