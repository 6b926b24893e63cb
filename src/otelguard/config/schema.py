"""JSON Schema (draft 2020-12) from the same dataclasses the builder fills.

Editors validate a config file against the published schema (``docs/config/*.schema.json``,
written by ``otelguard config schema --write docs/config``); a test fails when the published
files drift from what the dataclasses say. The schema states structure: keys, types, choices and
defaults. Value ranges checked in ``__post_init__`` are the loader's business, so a file the
schema accepts can still be refused, with a message at the bad field.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from collections.abc import Mapping as AbcMapping
from typing import Annotated, Any, Literal, Union

from otelguard.config.builder import config_fields, custom_of

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def document_schema(cls: type[Any], title: str) -> dict[str, Any]:
    """The schema of a whole config file whose top level is dataclass ``cls``."""
    return {"$schema": DIALECT, "title": title, **schema_of(cls)}


def render(schema: dict[str, Any]) -> str:
    """The published text of a schema (stable key order, so a diff shows real changes)."""
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def schema_of(tp: Any) -> dict[str, Any]:
    """The schema of a value of type hint ``tp`` (the hints :func:`~.builder.build` supports)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return {}
    if origin is Annotated:
        custom = custom_of(tp)
        return custom.schema(schema_of) if custom is not None else schema_of(args[0])
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [schema_of(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(args)}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _dataclass_schema(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp] + [m.name for m in tp]}
    scalars = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in scalars:
        return {"type": scalars[tp]}
    if origin in (tuple, list, frozenset, set) or tp in (tuple, list):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "prefixItems": [schema_of(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        items = schema_of(args[0]) if args else {}
        return {"type": "array", "items": items}
    if origin in (dict, AbcMapping) or tp is dict:
        value_tp = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": schema_of(value_tp)}
    raise TypeError(f"no JSON Schema for config type {tp!r}")


def _dataclass_schema(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, include_extras=True)
    comments = _field_comments(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for f in config_fields(cls):
        prop = schema_of(hints[f.name])
        if f.name in comments and "description" not in prop:
            prop = {"description": comments[f.name], **prop}
        if f.default is not dataclasses.MISSING:
            default = _json_value(f.default)
            if default is not _NO_JSON:
                prop = {**prop, "default": default}
        elif f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        properties[f.name] = prop
    out: dict[str, Any] = {}
    doc = inspect.getdoc(cls)
    if doc and cls.__doc__ is not None and not doc.startswith(f"{cls.__name__}("):
        out["description"] = doc.split("\n\n")[0].replace("\n", " ")
    # null: an empty section (``sensor:`` with nothing under it) means all defaults
    out.update({"type": ["object", "null"], "properties": properties,
                "additionalProperties": False})
    if required:
        out["required"] = required
    return out


def _field_comments(cls: type[Any]) -> dict[str, str]:
    """Field -> the comment lines above it and its trailing comment, as written in the class.

    The comments beside a config field are its documentation; the schema carries them so an
    editor shows them on hover.
    """
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("class "))
    body = [line for line in lines[start + 1:] if line.strip()]
    if not body:
        return {}
    indent = body[0][: len(body[0]) - len(body[0].lstrip())]
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in body:
        if not line.startswith(indent) or line[len(indent)].isspace():
            continue  # continuation lines and method bodies
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(stripped)
        if match:
            trailing = stripped.partition("  # ")[2].strip()
            if trailing and not trailing.startswith(("noqa", "type:")):
                pending.append(trailing)
            if pending:
                out[match.group(1)] = " ".join(pending)
        pending = []
    return out


_FIELD = re.compile(r"(\w+)\s*:\s*[^=]")
_NO_JSON = object()


def _json_value(value: Any) -> Any:
    """A default as JSON, or _NO_JSON for defaults that are objects (shown by their own keys)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list, frozenset)):
        items = [_json_value(v) for v in (sorted(value) if isinstance(value, frozenset) else value)]
        return _NO_JSON if any(i is _NO_JSON for i in items) else items
    return _NO_JSON
