"""Conditions -> Python closures, compiled once per rule at load time.

Each check becomes one closure over its field getter and a pre-converted right-hand side
(:mod:`.operators`: ints parsed, CIDRs built, globs and regexes compiled, lists turned into
frozensets); this module walks the tree, expands macros and lists, and folds. ``and`` /
``or`` short-circuit in rule order, as Falco does. Constants are folded: ``never_true``-style
template macros (``evt.num=0``) and empty lists (``x in ()``) become ``False`` at compile time,
so the dozens of ``and not user_known_...`` clauses in Falco's rules cost nothing per record.

Missing values ("the record does not carry this") make every operator except ``exists`` false,
including ``!=``; ``not`` then inverts that, exactly as Falco's engine does.

The compiler also computes which ``evt.type`` values can satisfy a condition, so the engine
evaluates a rule only on records of those types.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from otelguard.processors.detection.fields import (
    AttrField, EventView, FieldSpec, FieldType, ResourceField, event_type, resolve,
)
from otelguard.processors.detection.operators import (
    CompileError, Compiled, as_text, compile_op, field_vs_field, transform,
)
from otelguard.processors.detection.parser import (
    And, Check, FieldRef, FieldValue, Join, ListValue, Literal, MacroRef, Node, Not, Or, Value,
)

_TYPE_FIELDS = frozenset({"evt.type", "syscall.type"})


class UnsupportedField(CompileError):
    """The condition needs a field we cannot evaluate; ``field`` names it, ``kind`` says why
    (fields.UNKNOWN: not a Falco field; INVALID: used wrongly; UNAVAILABLE: a Falco field this
    sensor does not provide)."""

    def __init__(self, field_text: str, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.field = field_text
        self.reason = reason
        self.kind = kind


@dataclass
class CompileResult:
    pred: Compiled
    event_types: Optional[frozenset[str]]  # None = any type
    fields: set[tuple[str, Optional[str]]] = field(default_factory=set)


class Compiler:
    """Compiles conditions against one set of macros (parsed; lists were substituted into the
    condition text before parsing, see :mod:`.resolution`)."""

    def __init__(self, macros: Mapping[str, Node], known_type: Optional[str] = None) -> None:
        """``known_type``: compile for records of that evt.type only (checks on it fold away)."""
        self.macros = macros
        self.known_type = known_type
        self._macro_cache: dict[str, tuple[Compiled, Optional[frozenset[str]],
                                           set[tuple[str, Optional[str]]]]] = {}
        self._stack: list[str] = []

    def compile(self, node: Node) -> CompileResult:
        fields: set[tuple[str, Optional[str]]] = set()
        pred, types = self._node(node, fields)
        return CompileResult(pred, types, fields)

    # -- tree ------------------------------------------------------------------------------
    def _node(self, node: Node, fields: set[tuple[str, Optional[str]]]
              ) -> tuple[Compiled, Optional[frozenset[str]]]:
        if isinstance(node, Check):
            return self._check(node, fields), _check_types(node, self)
        if isinstance(node, MacroRef):
            return self._macro(node, fields)
        if isinstance(node, Not):
            child, _types = self._node(node.child, fields)
            if isinstance(child, bool):
                return (not child), None
            c = child
            return (lambda ev: not c(ev)), None
        if isinstance(node, And):
            parts = [self._node(ch, fields) for ch in node.children]
            return _and([p for p, _t in parts]), _and_types([t for _p, t in parts])
        if isinstance(node, Or):
            parts = [self._node(ch, fields) for ch in node.children]
            return _or([p for p, _t in parts]), _or_types([t for _p, t in parts])
        raise CompileError(f"unknown node {node!r}")

    def _macro(self, ref: MacroRef, fields: set[tuple[str, Optional[str]]]
               ) -> tuple[Compiled, Optional[frozenset[str]]]:
        cached = self._macro_cache.get(ref.name)
        if cached is not None:
            fields.update(cached[2])
            return cached[0], cached[1]
        body = self.macros.get(ref.name)
        if body is None:
            raise CompileError(f"undefined macro {ref.name!r}")
        if ref.name in self._stack:
            raise CompileError(f"macro loop: {' -> '.join(self._stack + [ref.name])}")
        self._stack.append(ref.name)
        try:
            own: set[tuple[str, Optional[str]]] = set()
            pred, types = self._node(body, own)
        finally:
            self._stack.pop()
        self._macro_cache[ref.name] = (pred, types, own)
        fields.update(own)
        return pred, types

    # -- checks ----------------------------------------------------------------------------
    def field_getter(self, ref: FieldRef, fields: set[tuple[str, Optional[str]]]
                     ) -> tuple[Callable[[EventView], Any], FieldType]:
        if ref.join is not None:
            getter, ftype = self._join(ref.join, fields)
        else:
            spec, arg, problem = resolve(ref.name, ref.arg)
            if spec is None:
                assert problem is not None
                raise UnsupportedField(str(ref), problem.reason, problem.kind)
            fields.add((spec.name, arg))
            ftype = spec.type_for(arg)
            getter = _getter(spec, arg)
        for t in ref.transformers:
            getter, ftype = transform(t, getter, ftype, ref)
        return getter, ftype

    def _join(self, join: Join, fields: set[tuple[str, Optional[str]]]
              ) -> tuple[Callable[[EventView], Any], FieldType]:
        """``join(sep, (parts))``: a missing part makes the join missing."""
        parts: list[Callable[[EventView], Any]] = []
        for p in join.parts:
            if isinstance(p, Literal):
                parts.append(_constant(p.text))
            else:
                get, _t = self.field_getter(p, fields)
                parts.append(get)
        sep = join.sep

        def joined(ev: EventView) -> Optional[str]:
            out: list[str] = []
            for get in parts:
                v = get(ev)
                if v is None:
                    return None
                if isinstance(v, (tuple, list)):
                    out.extend(as_text(x) for x in v)
                else:
                    out.append(as_text(v))
            return sep.join(out)
        return joined, FieldType.STR

    def _check(self, node: Check, fields: set[tuple[str, Optional[str]]]) -> Compiled:
        get, ftype = self.field_getter(node.field, fields)
        op = node.op
        if self.known_type is not None and node.field.name in _TYPE_FIELDS \
                and not node.field.transformers and op in ("=", "!=", "in") \
                and isinstance(node.value, (Literal, ListValue)):
            values = self._values(node.value)
            if op == "=":
                return values == [self.known_type]
            if op == "!=":
                return values != [self.known_type]
            return self.known_type in values
        if op == "exists":
            return lambda ev: get(ev) is not None
        if node.field.name == "evt.num" and op == "=" and isinstance(node.value, Literal) \
                and node.value.text == "0" and not node.field.transformers:
            return False  # Falco's never_true: record numbers start at 1
        if isinstance(node.value, FieldValue):
            rget, _rtype = self.field_getter(node.value.field, fields)
            return field_vs_field(get, ftype, rget, op, node)
        if node.value is None:
            raise CompileError(f"operator {op!r} needs a value")
        return compile_op(get, ftype, op, self._values(node.value), node)

    def _values(self, value: Value) -> list[str]:
        """The right-hand side as strings (nested lists flattened)."""
        if isinstance(value, Literal):
            return [value.text]
        out: list[str] = []
        if isinstance(value, ListValue):
            for item in value.items:
                if isinstance(item, ListValue):
                    out.extend(self._values(item))
                else:
                    out.append(item.text)
        return out


def _getter(spec: FieldSpec, arg: Optional[str]) -> Callable[[EventView], Any]:
    """The field's value for a record, computed once per record (cached in the view)."""
    if spec.name in _TYPE_FIELDS:
        return event_type
    extract = spec.extract
    if isinstance(extract, AttrField):  # one attribute: EventView.attr caches it
        return operator.methodcaller("attr", extract.key)
    if isinstance(extract, ResourceField):
        rkey = extract.key
        return lambda ev: ev.res.get(rkey)
    key = spec.name if arg is None else f"{spec.name}[{arg}]"
    missing = _MISSING

    def get(ev: EventView) -> Any:
        cache = ev.cache
        v = cache.get(key, missing)
        if v is missing:
            v = cache[key] = extract(ev, arg)
        return v
    return get


_MISSING: Any = object()


def _constant(text: str) -> Callable[[EventView], Any]:
    return lambda _ev: text


# --- folding -----------------------------------------------------------------------------------

def _and(parts: list[Compiled]) -> Compiled:
    if any(p is False for p in parts):
        return False
    preds = [p for p in parts if not isinstance(p, bool)]
    if not preds:
        return True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda ev: a(ev) and b(ev)
    if len(preds) == 3:
        a, b, c = preds
        return lambda ev: a(ev) and b(ev) and c(ev)
    tup = tuple(preds)

    def all_of(ev: EventView) -> bool:
        for p in tup:
            if not p(ev):
                return False
        return True
    return all_of


def _or(parts: list[Compiled]) -> Compiled:
    if any(p is True for p in parts):
        return True
    preds = [p for p in parts if not isinstance(p, bool)]
    if not preds:
        return False
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda ev: a(ev) or b(ev)
    tup = tuple(preds)

    def any_of(ev: EventView) -> bool:
        for p in tup:
            if p(ev):
                return True
        return False
    return any_of


def _and_types(types: list[Optional[frozenset[str]]]) -> Optional[frozenset[str]]:
    known = [t for t in types if t is not None]
    if not known:
        return None
    out = known[0]
    for t in known[1:]:
        out = out & t
    return out


def _or_types(types: list[Optional[frozenset[str]]]) -> Optional[frozenset[str]]:
    if any(t is None for t in types):
        return None
    out: frozenset[str] = frozenset()
    for t in types:
        assert t is not None
        out = out | t
    return out


def _check_types(node: Check, comp: Compiler) -> Optional[frozenset[str]]:
    if node.field.name not in _TYPE_FIELDS or node.field.transformers or node.value is None:
        return None
    if node.op == "=" and isinstance(node.value, Literal):
        return frozenset({node.value.text})
    if node.op == "in" and isinstance(node.value, ListValue):
        return frozenset(comp._values(node.value))
    return None
