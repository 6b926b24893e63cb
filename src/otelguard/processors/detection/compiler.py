"""Conditions -> Python closures, compiled once per rule at load time.

Each check becomes one closure over its field extractor and a pre-converted right-hand side
(ints parsed, CIDRs built, globs and regexes compiled, lists turned into frozensets). ``and`` /
``or`` short-circuit in rule order, as Falco does. Constants are folded: ``never_true``-style
template macros (``evt.num=0``) and empty lists (``x in ()``) become ``False`` at compile time,
so the dozens of ``and not user_known_...`` clauses in Falco's rules cost nothing per record.

Missing values ("the record does not carry this") make every operator except ``exists`` false,
including ``!=``; ``not`` then inverts that, exactly as Falco's engine does.

The compiler also computes which ``evt.type`` values can satisfy a condition, so the engine
evaluates a rule only on records of those types.
"""

from __future__ import annotations

import base64
import fnmatch
import ipaddress
import operator
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

from otelguard.processors.detection.fields import (
    AttrField, EventView, FieldSpec, FieldType, ResourceField, event_type, resolve,
)
from otelguard.processors.detection.parser import (
    And, Check, FieldRef, FieldValue, ListValue, Literal, MacroRef, Node, Not, Or, Value,
)

Pred = Callable[[EventView], bool]
Compiled = Union[Pred, bool]  # a closure, or a constant after folding
IPNet = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_TYPE_FIELDS = frozenset({"evt.type", "syscall.type"})


class CompileError(ValueError):
    """A condition that cannot compile: undefined macro, bad value for a field type, ..."""


class UnsupportedField(CompileError):
    """The condition needs a field we cannot provide; ``field`` names it."""

    def __init__(self, field_text: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_text
        self.reason = reason


@dataclass
class CompileResult:
    pred: Compiled
    event_types: Optional[frozenset[str]]  # None = any type
    fields: set[tuple[str, Optional[str]]] = field(default_factory=set)


class Compiler:
    """Compiles conditions against one set of macros (parsed) and lists (flattened strings)."""

    def __init__(self, macros: Mapping[str, Node], lists: Mapping[str, tuple[str, ...]],
                 known_type: Optional[str] = None) -> None:
        """``known_type``: compile for records of that evt.type only (checks on it fold away)."""
        self.macros = macros
        self.lists = lists
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
            if ref.name in self.lists:
                raise CompileError(f"{ref.name!r} is a list, used where a condition is expected")
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
        spec, arg, reason = resolve(ref.name, ref.arg)
        if spec is None:
            raise UnsupportedField(str(ref), reason or f"unknown field {ref}")
        fields.add((spec.name, arg))
        ftype = spec.type_for(arg)
        getter = _getter(spec, arg)
        for t in ref.transformers:
            getter, ftype = _transform(t, getter, ftype, ref)
        return getter, ftype

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
            return _field_vs_field(get, rget, op, node)
        if node.value is None:
            raise CompileError(f"operator {op!r} needs a value")
        return _compile_op(get, ftype, op, self._values(node.value), node)

    def _values(self, value: Value) -> list[str]:
        """The right-hand side as strings, list names expanded (quoted items never are)."""
        if isinstance(value, Literal):
            return [value.text]
        out: list[str] = []
        if isinstance(value, ListValue):
            for item in value.items:
                if isinstance(item, ListValue):
                    out.extend(self._values(item))
                elif not item.quoted and item.text in self.lists:
                    out.extend(self.lists[item.text])
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


def _transform(name: str, inner: Callable[[EventView], Any], ftype: FieldType, ref: FieldRef
               ) -> tuple[Callable[[EventView], Any], FieldType]:
    fn: Callable[[Any], Any]
    if name == "len":
        def length(v: Any) -> Any:
            return len(v) if isinstance(v, (str, tuple, list)) else None
        fn, out = length, FieldType.NUM
    else:
        if ftype not in (FieldType.STR, FieldType.MULTI):
            raise CompileError(f"transformer {name}() needs a string field, {ref.name} is "
                               f"{ftype.value}")
        out = ftype
        if name == "tolower":
            fn = str.lower
        elif name == "toupper":
            fn = str.upper
        elif name == "basename":
            fn = os.path.basename
        elif name == "b64":
            def b64(v: str) -> Optional[str]:
                try:
                    return base64.b64decode(v, validate=False).decode("utf-8", "replace")
                except (ValueError, TypeError):
                    return None
            fn = b64
        else:
            raise CompileError(f"unknown transformer {name}()")
        if ftype == FieldType.MULTI:
            elem = fn

            def multi(v: Any) -> Any:
                return tuple(elem(x) for x in v if isinstance(x, str))
            fn = multi
    f = fn

    def get(ev: EventView) -> Any:
        v = inner(ev)
        if v is None:
            return None
        if name != "len" and ftype == FieldType.STR and not isinstance(v, str):
            v = str(v)
        return f(v)
    return get, out


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


# --- operators ---------------------------------------------------------------------------------

def _num(text: str, node: Check) -> int:
    try:
        return int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)
    except ValueError:
        raise CompileError(f"{node.field} is numeric, {text!r} is not a number") from None


def _bool(text: str, node: Check) -> bool:
    low = text.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise CompileError(f"{node.field} is a bool, {text!r} is not true/false")


def _net(text: str, node: Check) -> IPNet:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise CompileError(f"{node.field} needs an IP or CIDR, got {text!r}") from None


def _as_int(v: Any) -> Optional[int]:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        return int(str(v), 0)
    except ValueError:
        return None


def _str_matcher(op: str, values: list[str], node: Check) -> Callable[[str], bool]:
    """A test on one string value for ``op`` against the pre-converted right-hand side."""
    if op in ("in", "intersects"):
        s = frozenset(values)
        return s.__contains__
    if op == "pmatch":
        prefixes = tuple(v.rstrip("/") for v in values)

        def pmatch(v: str) -> bool:
            for p in prefixes:
                if v == p or v.startswith(p + "/") or (p == "" and v.startswith("/")):
                    return True
            return False
        return pmatch
    if len(values) != 1:
        raise CompileError(f"operator {op!r} takes one value")
    rhs = values[0]
    if op == "=":
        return rhs.__eq__
    if op == "!=":
        return rhs.__ne__
    if op == "contains":
        return lambda v: rhs in v
    if op == "icontains":
        low = rhs.lower()
        return lambda v: low in v.lower()
    if op == "startswith":
        return lambda v: v.startswith(rhs)
    if op == "endswith":
        return lambda v: v.endswith(rhs)
    if op in ("glob", "iglob"):
        rx = re.compile(fnmatch.translate(rhs), re.DOTALL | (re.IGNORECASE if op == "iglob" else 0))
        return lambda v: rx.match(v) is not None
    if op == "regex":
        try:
            rx = re.compile(rhs)
        except re.error as exc:
            raise CompileError(f"invalid regex {rhs!r}: {exc}") from None
        return lambda v: rx.fullmatch(v) is not None
    if op in ("bcontains", "bstartswith"):
        try:
            needle = bytes.fromhex(rhs)
        except ValueError:
            raise CompileError(f"{op} needs hex bytes, got {rhs!r}") from None
        if op == "bcontains":
            return lambda v: needle in v.encode()
        return lambda v: v.encode().startswith(needle)
    raise CompileError(f"operator {op!r} does not apply to string field {node.field}")


def _num_matcher(op: str, values: list[str], node: Check) -> Callable[[int], bool]:
    nums = [_num(v, node) for v in values]
    if op in ("in", "intersects"):
        s = frozenset(nums)
        return s.__contains__
    if len(nums) != 1:
        raise CompileError(f"operator {op!r} takes one value")
    n = nums[0]
    table: dict[str, Callable[[int], bool]] = {
        "=": lambda v: v == n, "!=": lambda v: v != n, "<": lambda v: v < n,
        "<=": lambda v: v <= n, ">": lambda v: v > n, ">=": lambda v: v >= n,
    }
    if op not in table:
        raise CompileError(f"operator {op!r} does not apply to numeric field {node.field}")
    return table[op]


def _compile_op(get: Callable[[EventView], Any], ftype: FieldType, op: str, values: list[str],
                node: Check) -> Compiled:
    if op in ("in", "intersects", "pmatch") and not values:
        return False  # nothing can be in an empty list
    if ftype == FieldType.NUM:
        nm = _num_matcher(op, values, node)

        def num_check(ev: EventView) -> bool:
            v = get(ev)
            if v is None:
                return False
            if not isinstance(v, int):
                v = _as_int(v)
                if v is None:
                    return False
            return nm(v)
        return num_check
    if ftype == FieldType.BOOL:
        if op not in ("=", "!=", "in"):
            raise CompileError(f"operator {op!r} does not apply to bool field {node.field}")
        wanted = frozenset(_bool(v, node) for v in values)
        neg = op == "!="
        return lambda ev: (v := get(ev)) is not None and ((bool(v) in wanted) != neg)
    if ftype in (FieldType.IP, FieldType.NET):
        if op not in ("=", "!=", "in", "intersects"):
            raise CompileError(f"operator {op!r} does not apply to IP field {node.field}")
        nets = tuple(_net(v, node) for v in values)
        neg = op == "!="

        def ip_in(ip: Any) -> bool:
            for n in nets:
                if ip.version == n.version and ip in n:
                    return True
            return False

        if ftype == FieldType.IP:
            return lambda ev: (v := get(ev)) is not None and (ip_in(v) != neg)
        return lambda ev: (v := get(ev)) is not None and (any(ip_in(ip) for ip in v) != neg)
    if ftype == FieldType.LIST:
        s = frozenset(values)
        if op == "in":
            return lambda ev: (v := get(ev)) is not None and all(x in s for x in v)
        if op == "intersects":
            return lambda ev: (v := get(ev)) is not None and any(x in s for x in v)
        raise CompileError(f"operator {op!r} does not apply to list field {node.field}")
    if op in ("<", "<=", ">", ">="):
        raise CompileError(f"operator {op!r} needs a numeric field, {node.field} is a string")
    m = _str_matcher(op, values, node)
    if ftype == FieldType.STR and op in ("=", "in", "startswith", "contains"):
        # the hot shapes, inlined: one call per check instead of two
        if op == "in":
            s = frozenset(values)
            return lambda ev: (v := get(ev)) is not None and \
                (v if isinstance(v, str) else _as_text(v)) in s
        rhs = values[0]
        if op == "=":
            return lambda ev: (v := get(ev)) is not None and \
                (v if isinstance(v, str) else _as_text(v)) == rhs
        if op == "startswith":
            return lambda ev: (v := get(ev)) is not None and \
                (v if isinstance(v, str) else _as_text(v)).startswith(rhs)
        return lambda ev: (v := get(ev)) is not None and \
            rhs in (v if isinstance(v, str) else _as_text(v))
    if ftype == FieldType.MULTI:
        def any_check(ev: EventView) -> bool:
            v = get(ev)
            if v is None:
                return False
            for x in v:
                if m(x):
                    return True
            return False
        return any_check

    def str_check(ev: EventView) -> bool:
        v = get(ev)
        if v is None:
            return False
        if not isinstance(v, str):
            v = _as_text(v)
        return m(v)
    return str_check


def _as_text(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


_RUNTIME_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "contains": lambda a, b: str(b) in str(a),
    "startswith": lambda a, b: str(a).startswith(str(b)),
    "endswith": lambda a, b: str(a).endswith(str(b)),
}


def _field_vs_field(get: Callable[[EventView], Any], rget: Callable[[EventView], Any], op: str,
                    node: Check) -> Compiled:
    fn = _RUNTIME_OPS.get(op)
    if fn is None:
        raise CompileError(f"operator {op!r} cannot compare two fields")

    def check(ev: EventView) -> bool:
        a, b = get(ev), rget(ev)
        if a is None or b is None:
            return False
        try:
            return fn(a, b)
        except TypeError:
            return False
    return check
