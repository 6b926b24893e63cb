"""Every config key, flattened from the JSON Schemas ``otelguard config schema`` publishes.

The schemas are generated from the config dataclasses (:mod:`otelguard.config.schema`), so the
keys, types and defaults here are the loader's own; a key's description is its dataclass field's
comment. A list whose items are typed by their ``type`` key (the ``processors:`` list) becomes
one group of rows per type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Key:
    """One settable key: dotted path, type in words, default as JSON text, description."""

    path: str
    type: str
    default: str
    description: str


@dataclass(frozen=True)
class Group:
    """The keys of one section, or of one variant of a typed list (``processors[]`` type X)."""

    title: str
    description: str
    keys: tuple[Key, ...]


def section_groups(name: str, schema: dict[str, Any]) -> list[Group]:
    """The groups of top-level section ``name``: its own keys first, then one per variant."""
    variants: list[Group] = []
    keys = [_key(name, schema)] + _children(name, schema, variants)
    return [Group(f"{name}:", str(_object_of(schema).get("description", "")), tuple(keys)),
            *variants]


def _key(path: str, schema: dict[str, Any]) -> Key:
    default = json.dumps(schema["default"]) if "default" in schema else ""
    description = schema.get("description") or _object_of(schema).get("description") or ""
    return Key(path, type_text(schema), default, description)


def _object_of(schema: dict[str, Any]) -> dict[str, Any]:
    """The alternative of an ``anyOf`` that has properties or items, else the schema itself."""
    for alternative in schema.get("anyOf", ()):
        if "properties" in alternative or "items" in alternative:
            return dict(alternative)
    return schema


def _children(path: str, schema: dict[str, Any], variants: list[Group]) -> list[Key]:
    """The keys under ``path``: properties (recursively) and the items of a list of mappings."""
    node = _object_of(schema)
    out: list[Key] = []
    for name, prop in node.get("properties", {}).items():
        child = f"{path}.{name}"
        out.append(_key(child, prop))
        out.extend(_children(child, prop, variants))
    items = node.get("items")
    if isinstance(items, dict) and "properties" in items:
        out.extend(_children(f"{path}[]", items, variants))
        for variant in items.get("allOf", ()):
            _add_variant(f"{path}[]", variant, variants)
    return out


def _add_variant(path: str, variant: dict[str, Any], variants: list[Group]) -> None:
    """``if type == X then config: {...}`` of a typed list, as its own group."""
    selector = variant.get("if", {}).get("properties", {})
    then = variant.get("then", {}).get("properties", {})
    for key, condition in selector.items():
        if "const" not in condition:
            continue
        for name, sub in then.items():
            nested: list[Group] = []
            keys = _children(f"{path}.{name}", sub, nested)
            title = f"{path} with {key}: {condition['const']}"
            variants.append(Group(title, str(_object_of(sub).get("description", "")),
                                  tuple(keys)))
            variants.extend(nested)


def _either(words: Iterable[str]) -> str:
    """``a or b``, each alternative once (nested unions flattened)."""
    parts = [part for word in words for part in word.split(" or ")]
    return " or ".join(dict.fromkeys(parts))


def type_text(schema: dict[str, Any]) -> str:
    """A schema's type in words: ``integer``, ``list of string``, ``one of "a", "b"``."""
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        return _either(type_text(a) for a in schema["anyOf"])
    kinds = schema.get("type")
    if kinds is None:
        return "any"
    if isinstance(kinds, list):
        return _either(type_text({**schema, "type": k}) for k in kinds)
    if kinds == "array":
        if "prefixItems" in schema:
            return "list of [" + ", ".join(type_text(i) for i in schema["prefixItems"]) + "]"
        items = schema.get("items", {})
        return "list of " + ("mappings" if "properties" in items else type_text(items))
    if kinds == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return f"mapping of string to {type_text(extra)}"
        return "mapping"
    return str(kinds)
