"""A check's right-hand side and operator -> one closure over a field getter.

The right-hand side is converted once at compile time (ints parsed, CIDRs built, globs and
regexes compiled, lists turned into frozensets); the closure then costs one getter call and
one comparison per record. Missing values (``None``) make every operator false, ``!=``
included, as in Falco; ``not`` is applied by the compiler above. Transformers
(``tolower(proc.name)``) wrap a getter the same way. Used by :mod:`.compiler` (and the guard
derivation in :mod:`.prefilter`, which shares the value coercions).
"""

from __future__ import annotations

import base64
import ipaddress
import operator
import os
import re
from typing import Any, Callable, Optional, Union

from otelguard.processors.detection.fields import EventView, FieldType
from otelguard.processors.detection.parser import Check, FieldRef
from otelguard.processors.detection.patterns import glob_matcher, path_prefix_matcher

Pred = Callable[[EventView], bool]
Compiled = Union[Pred, bool]  # a closure, or a constant after folding
IPNet = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


class CompileError(ValueError):
    """A condition that cannot compile: undefined macro, bad value for a field type, ..."""


def transform(name: str, inner: Callable[[EventView], Any], ftype: FieldType, ref: FieldRef
              ) -> tuple[Callable[[EventView], Any], FieldType]:
    """``inner`` wrapped by the transformer ``name`` (len, tolower, toupper, basename, b64)."""
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


def coerce_int(v: Any) -> Optional[int]:
    """A field value compared as a number (bools as 0/1, numeric strings in any base)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    try:
        return int(str(v), 0)
    except ValueError:
        return None


def str_matcher(op: str, values: list[str], node: Check) -> Callable[[str], bool]:
    """A test on one string value for ``op`` against the pre-converted right-hand side."""
    if op in ("in", "intersects"):
        s = frozenset(values)
        return s.__contains__
    if op == "pmatch":
        return path_prefix_matcher(values)
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
        return glob_matcher(rhs, casefold=op == "iglob")
    if op in _ORDER:  # strcmp order: UTF-8 byte order is code point order
        cmp = _ORDER[op]
        return lambda v: cmp(v, rhs)
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


def compile_op(get: Callable[[EventView], Any], ftype: FieldType, op: str, values: list[str],
               node: Check) -> Compiled:
    """``get(ev) op values`` as one closure, shaped by the field's type (constant if folded)."""
    if op in ("in", "intersects", "pmatch") and not values:
        return False  # nothing can be in an empty list
    if ftype == FieldType.NUM:
        nm = _num_matcher(op, values, node)

        def num_check(ev: EventView) -> bool:
            v = get(ev)
            if v is None:
                return False
            if not isinstance(v, int):
                v = coerce_int(v)
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
    if ftype == FieldType.MULTI:
        return _any_of(get, op, values, node)
    m = str_matcher(op, values, node)
    if ftype == FieldType.STR and op in ("=", "in", "startswith", "contains"):
        # the hot shapes, inlined: one call per check instead of two
        if op == "in":
            s = frozenset(values)
            return lambda ev: (v := get(ev)) is not None and \
                (v if isinstance(v, str) else as_text(v)) in s
        rhs = values[0]
        if op == "=":
            return lambda ev: (v := get(ev)) is not None and \
                (v if isinstance(v, str) else as_text(v)) == rhs
        if op == "startswith":
            return lambda ev: (v := get(ev)) is not None and \
                (v if isinstance(v, str) else as_text(v)).startswith(rhs)
        return lambda ev: (v := get(ev)) is not None and \
            rhs in (v if isinstance(v, str) else as_text(v))
    def str_check(ev: EventView) -> bool:
        v = get(ev)
        if v is None:
            return False
        if not isinstance(v, str):
            v = as_text(v)
        return m(v)
    return str_check


def _any_of(get: Callable[[EventView], Any], op: str, values: list[str], node: Check
            ) -> Compiled:
    """A multi-valued field (``proc.aname``, ``proc.apid`` without index, ``fd.port``): true
    when any value passes; numbers compare as numbers, strings as strings."""
    try:
        sm: Optional[Callable[[str], bool]] = str_matcher(op, values, node)
    except CompileError:
        sm = None
    try:
        nm: Optional[Callable[[int], bool]] = _num_matcher(op, values, node)
    except CompileError:
        nm = None
    if sm is None and nm is None:
        raise CompileError(f"operator {op!r} does not apply to {node.field} with {values!r}")

    def any_check(ev: EventView) -> bool:
        v = get(ev)
        if v is None:
            return False
        for x in v:
            if isinstance(x, int) and not isinstance(x, bool):
                if nm is not None and nm(x):
                    return True
            elif sm is not None and sm(x if isinstance(x, str) else as_text(x)):
                return True
        return False
    return any_check


def as_text(v: Any) -> str:
    """A non-string field value compared as a string, spelled as Falco prints it."""
    return "true" if v is True else "false" if v is False else str(v)


def field_vs_field(get: Callable[[EventView], Any], ftype: FieldType,
                   rget: Callable[[EventView], Any], op: str, node: Check) -> Compiled:
    """``field op val(other)`` / ``field op tolower(other)``: the right-hand side is read per
    record and compared with the operator's usual meaning for the left field's type (every
    operator ``compile_op`` has). A right-hand side seen before reuses its matcher (bounded
    cache), so ``glob val(...)`` compiles a pattern once per distinct value."""
    if op == "exists":
        raise CompileError("exists takes no value")
    cache: dict[tuple[str, ...], Compiled] = {}

    def check(ev: EventView) -> bool:
        b = rget(ev)
        if b is None:
            return False
        if isinstance(b, (tuple, list)):
            key = tuple(as_text(x) for x in b)
        else:
            key = (as_text(b),)
        if not key:
            return False
        c = cache.get(key)
        if c is None:
            try:
                c = compile_op(get, ftype, op, list(key), node)
            except CompileError:
                c = False
            if len(cache) < 1024:
                cache[key] = c
        return c if isinstance(c, bool) else c(ev)
    return check
