"""Guards: cheap necessary checks per (rule, evt.type), shared by rules that test one field.

Most records match no rule, and a rule's compiled predicate costs a dozen closure calls before
its first failing check. A guard is a condition the rule's condition *implies* (a check every
satisfying record must pass), derived from the condition tree at load time:

* a check ``F op values`` implies itself for ``op`` in ``= in startswith endswith contains
  pmatch glob`` on string fields (a glob by its literal head), ``= in`` on numeric, bool and IP
  fields (CIDRs included);
* ``a and b`` implies whatever ``a`` or ``b`` implies (each top-level conjunct is a candidate);
* ``a or b`` implies the disjunction of what ``a`` and ``b`` imply, field by field (children
  that fold to false for the evt.type are dropped; one that folds to true kills the guard);
* macros are expanded; ``not``, ``!=``, ``exists``, ``icontains``, ``regex`` and field-to-field
  comparisons imply nothing.

Because a guard is implied, "guard fails" means "the rule is false" under Falco's semantics (a
missing value fails every operator but ``exists``, so it fails the guard too): skipping the rule
is exact. :func:`plan` groups the rules of one evt.type by guard fields and tests the union of
their value sets with one field read and a set lookup / ``str.startswith(tuple)``; only when the
union passes are the members checked against their own guards, then evaluated in full. A rule
takes its most selective guard unless another of its guards reads only fields other rules read
anyway; fields that merely classify records (``fd.typechar``, ``evt.dir``, ...) rank last.
tests/processors/detection/test_prefilter.py checks the guarded engine against the exhaustive
one on every rule case and thousands of mutations of them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from otelguard.processors.detection.compiler import Compiler
from otelguard.processors.detection.fields import EventView, FieldType
from otelguard.processors.detection.operators import CompileError, IPNet, as_text, coerce_int
from otelguard.processors.detection.parser import (
    And, Check, FieldRef, ListValue, Literal, MacroRef, Node, Or,
)
from otelguard.processors.detection.patterns import fnmatch_regex

# fields whose values sort records into a few classes: a guard on them rarely skips anything
_CLASSIFIERS = frozenset({"evt.dir", "fd.typechar", "fd.type", "fd.l4proto", "fd.sockfamily",
                          "evt.res", "fd.connected", "fd.is_server", "evt.failed", "fd.num",
                          "evt.is_open_read", "evt.is_open_write", "evt.is_open_create",
                          "evt.rawres", "evt.source"})
# field classes read from the Resource (a dict lookup per record, no attribute read): a guard on
# them is preferred when a rule has one, whatever its selectivity (see plan)
_RESOURCE_CLASSES = ("container.", "k8s.")
_STR_OPS = frozenset({"=", "in", "startswith", "endswith", "contains", "pmatch", "glob"})
_EXACT_OPS = frozenset({"=", "in"})
_GLOB_META = re.compile(r"[*?\[\\]")


@dataclass
class ValueSet:
    """The union of value tests on one field; ``None``-valued records never pass."""

    kind: FieldType
    eq: set[Any] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)
    suffixes: set[str] = field(default_factory=set)
    subs: set[str] = field(default_factory=set)
    patterns: set[str] = field(default_factory=set)  # fnmatch globs, anchored
    nets: set[IPNet] = field(default_factory=set)  # IP fields: in any of these networks

    def union(self, other: "ValueSet") -> "ValueSet":
        return ValueSet(self.kind, self.eq | other.eq, self.prefixes | other.prefixes,
                        self.suffixes | other.suffixes, self.subs | other.subs,
                        self.patterns | other.patterns, self.nets | other.nets)

    def looseness(self) -> tuple[int, int]:
        """Lower is more selective: (worst operator class, -shortest literal)."""
        texts = [str(v) for v in self.eq] + list(self.prefixes | self.suffixes | self.subs)
        worst = 3 if self.patterns else 2 if (self.subs or self.kind == FieldType.BOOL) else 1 if (
            self.prefixes or self.suffixes or self.nets or self.kind == FieldType.NUM) else 0
        return worst, -min((len(t) for t in texts), default=0)

    def matches_everything(self) -> bool:
        return "" in self.prefixes or "" in self.suffixes or "" in self.subs or \
            any(p.strip("*") == "" for p in self.patterns) or \
            any(n.prefixlen == 0 for n in self.nets)

    def test(self) -> Callable[[Any], bool]:
        """A predicate on the field's (non-None) value, as the compiled checks convert it."""
        eq = frozenset(self.eq)
        if self.kind == FieldType.NUM:
            def num_test(v: Any) -> bool:
                if not isinstance(v, int):
                    v = coerce_int(v)
                return v in eq
            return num_test
        if self.kind == FieldType.BOOL:
            return lambda v: bool(v) in eq
        if self.kind == FieldType.IP:
            # (network, mask) as integers per address family: no ipaddress properties per test
            v4 = tuple((int(n.network_address), int(n.netmask)) for n in self.nets
                       if n.version == 4)
            v6 = tuple((int(n.network_address), int(n.netmask)) for n in self.nets
                       if n.version == 6)

            def ip_test(ip: Any) -> bool:
                pairs = v4 if isinstance(ip, ipaddress.IPv4Address) else v6
                x = int(ip)
                for net, mask in pairs:
                    if x & mask == net:
                        return True
                return False
            return ip_test
        prefixes, suffixes = tuple(self.prefixes), tuple(self.suffixes)
        subs = tuple(self.subs)
        rx = re.compile("|".join(f"(?:{fnmatch_regex(p).pattern})" for p in self.patterns)
                        ) if self.patterns else None
        if not (prefixes or suffixes or subs or rx):
            return lambda v: (v if isinstance(v, str) else as_text(v)) in eq

        def str_test(v: Any) -> bool:
            if not isinstance(v, str):
                v = as_text(v)
            if v in eq or (prefixes and v.startswith(prefixes)) or \
                    (suffixes and v.endswith(suffixes)):
                return True
            for s in subs:
                if s in v:
                    return True
            return rx is not None and rx.match(v) is not None
        return str_test


_EMPTY = "empty"  # the node is false for this evt.type: it implies anything


Disjunction = dict[FieldRef, ValueSet]  # passes when any field's value passes its ValueSet


@dataclass(frozen=True)
class Guard:
    """A necessary condition of a rule: some field in ``fields`` passes its value set."""

    fields: tuple[tuple[FieldRef, ValueSet], ...]

    @property
    def key(self) -> tuple[FieldRef, ...]:
        return tuple(ref for ref, _vs in self.fields)


def _score(d: Disjunction) -> tuple[int, int, int, int]:
    """Lower is cheaper and more selective: classifiers last, fewer fields, tighter values."""
    loose = max(vs.looseness() for vs in d.values())
    return (int(any(ref.name in _CLASSIFIERS for ref in d)), len(d)) + loose


class GuardDeriver:
    """Derives guards with the (evt.type-specialised) compiler the rule was compiled with."""

    def __init__(self, compiler: Compiler) -> None:
        self.compiler = compiler
        self._kinds: dict[FieldRef, Optional[FieldType]] = {}
        # memo by node identity (the node is kept alive beside its result)
        self._consts: dict[int, tuple[Node, Optional[bool]]] = {}
        self._memo: dict[int, tuple[Node, Any]] = {}

    def guard(self, node: Node) -> Optional[Guard]:
        """The best guard of ``node``, or None."""
        found = self.candidates(node)
        return found[0] if found else None

    def candidates(self, node: Node) -> tuple[Guard, ...]:
        """Every guard implied by one top-level conjunct (macros expanded), best first; the
        engine may prefer a worse one whose fields other rules read anyway."""
        out: dict[tuple[FieldRef, ...], tuple[tuple[int, int, int, int], Guard]] = {}
        for part in [node, *self._conjuncts(node, set())]:
            d = self._implied(part)
            if not isinstance(d, dict) or any(vs.matches_everything() for vs in d.values()):
                continue
            g = Guard(tuple(sorted(d.items(), key=lambda kv: str(kv[0]))))
            if g.key not in out:
                out[g.key] = (_score(d), g)
        return tuple(g for _s, g in sorted(out.values(), key=lambda sg: sg[0]))

    def _conjuncts(self, node: Node, seen: set[str]) -> list[Node]:
        if isinstance(node, MacroRef) and node.name not in seen and \
                node.name in self.compiler.macros:
            seen.add(node.name)
            return self._conjuncts(self.compiler.macros[node.name], seen)
        if isinstance(node, And):
            out: list[Node] = []
            for ch in node.children:
                out.append(ch)
                out.extend(self._conjuncts(ch, seen))
            return out
        return []

    def _kind(self, ref: FieldRef) -> Optional[FieldType]:
        if ref in self._kinds:
            return self._kinds[ref]
        kind: Optional[FieldType] = None
        if ref.name not in ("evt.type", "syscall.type"):
            try:
                _get, ftype = self.compiler.field_getter(ref, set())
            except CompileError:
                ftype = None
            if ftype in (FieldType.STR, FieldType.NUM, FieldType.BOOL, FieldType.IP):
                kind = ftype
        self._kinds[ref] = kind
        return kind

    def _const(self, node: Node) -> Optional[bool]:
        hit = self._consts.get(id(node))
        if hit is not None:
            return hit[1]
        try:
            pred = self.compiler.compile(node).pred
            out = pred if isinstance(pred, bool) else None
        except CompileError:
            out = None
        self._consts[id(node)] = (node, out)
        return out

    # -- what a node implies ----------------------------------------------------------------------
    def _implied(self, node: Node) -> Any:
        """A Disjunction every record satisfying ``node`` passes, _EMPTY, or None (nothing)."""
        hit = self._memo.get(id(node))
        if hit is None:
            hit = self._memo[id(node)] = (node, self._implied_uncached(node))
        return hit[1]

    def _implied_uncached(self, node: Node) -> Any:
        const = self._const(node)
        if const is False:
            return _EMPTY
        if const is True:
            return None
        if isinstance(node, Check):
            vs = self._check(node, node.field)
            return None if vs is None or vs.matches_everything() else {node.field: vs}
        if isinstance(node, MacroRef):
            body = self.compiler.macros.get(node.name)
            return None if body is None else self._implied(body)
        if isinstance(node, And):
            found: Optional[Disjunction] = None
            for ch in node.children:
                d = self._implied(ch)
                if d == _EMPTY:
                    return _EMPTY
                if isinstance(d, dict) and (found is None or _score(d) < _score(found)):
                    found = d
            return found
        if isinstance(node, Or):
            acc: Optional[Disjunction] = None
            for ch in node.children:
                d = self._implied(ch)
                if d == _EMPTY:
                    continue
                if d is None:
                    return None
                if acc is None:
                    acc = dict(d)
                else:
                    for ref, vs in d.items():
                        acc[ref] = acc[ref].union(vs) if ref in acc else vs
            return _EMPTY if acc is None else acc
        return None  # Not (non-constant): implies nothing

    def _check(self, node: Check, ref: FieldRef) -> Optional[ValueSet]:
        kind = self._kind(ref)
        if kind is None or not isinstance(node.value, (Literal, ListValue)):
            return None
        values = self.compiler._values(node.value)
        op = node.op
        if kind == FieldType.IP:
            if op not in ("=", "in", "intersects"):
                return None
            try:
                return ValueSet(kind, nets={ipaddress.ip_network(v.strip(), strict=False)
                                            for v in values})
            except ValueError:
                return None
        if kind in (FieldType.NUM, FieldType.BOOL):
            if op not in _EXACT_OPS:
                return None
            try:
                if kind == FieldType.NUM:
                    return ValueSet(kind, eq={parse_num(v) for v in values})
                return ValueSet(kind, eq={parse_bool(v) for v in values})
            except ValueError:
                return None
        if op not in _STR_OPS:
            return None
        if op in _EXACT_OPS:
            return ValueSet(kind, eq=set(values))
        if len(values) != 1 and op != "pmatch":
            return None
        if op == "startswith":
            return ValueSet(kind, prefixes={values[0]})
        if op == "endswith":
            return ValueSet(kind, suffixes={values[0]})
        if op == "contains":
            return ValueSet(kind, subs={values[0]})
        if op == "pmatch":  # implies nothing cheaper: "//" and glob components (patterns.py)
            return None
        pattern = values[0]  # glob: its literal head is a necessary prefix
        head = _GLOB_META.split(pattern, 1)[0]
        if head and head != pattern:
            return ValueSet(kind, prefixes={head})
        return ValueSet(kind, patterns={pattern})


def parse_num(text: str) -> int:
    """A numeric literal of a condition (decimal or 0x); ValueError otherwise."""
    return int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)


def parse_bool(text: str) -> bool:
    """A bool literal of a condition (true/false/1/0, any case); ValueError otherwise."""
    low = text.lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise ValueError(text)


Pred = Callable[[EventView], bool]
Member = tuple[int, Any, Pred]  # (rule order, rule, predicate)


@dataclass(frozen=True)
class GuardGroup:
    """Rules of one evt.type whose guards read the same fields: if no ``(get, test)`` pair
    passes, none of ``members`` can match and they are skipped."""

    fields: str
    tests: tuple[tuple[Callable[[EventView], Any], Callable[[Any], bool]], ...]
    members: tuple[Member, ...]
    # what ``tests`` test (the fields and their united value sets), and per member the guards
    # its predicate runs behind in ``members`` (empty: the group's test suffices): the
    # generated matchers (matcher.py) inline both
    sets: tuple[tuple[FieldRef, ValueSet], ...] = ()
    own: tuple[tuple[Guard, ...], ...] = ()

    def passes(self, ev: EventView) -> bool:
        for get, test in self.tests:
            v = get(ev)
            if v is not None and test(v):
                return True
        return False


@dataclass(frozen=True)
class TypePlan:
    """How the engine evaluates the rules of one evt.type: unguarded ones, then groups."""

    always: tuple[Member, ...]
    groups: tuple[GuardGroup, ...]


def plan(members: list[tuple[int, Any, Pred, tuple[Guard, ...]]], compiler: Compiler
         ) -> TypePlan:
    """Group guarded rules by guard fields (value sets united); the rest always run.

    Each rule takes a guard on Resource fields when it has one (container.*, k8s.*: no record
    attribute read, and most records fail them: "privileged container", a namespace), else its
    best guard, unless another of its guards reads only fields that the other rules' best guards
    read anyway (and is no mere classifier): a field already read costs nothing more, so the
    rule joins that group. Members of a group keep their own guard, checked
    on the (cached) field values before their predicate when the group's union passes."""
    hot: dict[int, set[FieldRef]] = {}
    cands_of = {order: cands for order, _rule, _pred, cands in members}
    for order, _rule, _pred, cands in members:
        if cands:
            hot[order] = set(cands[0].key)
    always: list[Member] = []
    by_key: dict[tuple[FieldRef, ...], tuple[dict[FieldRef, ValueSet], list[tuple[int, Any, Pred, Guard]]]] = {}
    for order, rule, pred, cands in members:
        if not cands:
            always.append((order, rule, pred))
            continue
        others = set().union(*(f for o, f in hot.items() if o != order))
        chosen = next((g for g in cands if all(r.name.startswith(_RESOURCE_CLASSES)
                                               and r.join is None for r in g.key)), cands[0])
        if chosen is cands[0] and not set(chosen.key) <= others:
            for g in cands[1:]:
                if set(g.key) <= others and not any(r.name in _CLASSIFIERS for r in g.key):
                    chosen = g
                    break
        entry = by_key.setdefault(chosen.key, ({}, []))
        for ref, vs in chosen.fields:
            entry[0][ref] = entry[0][ref].union(vs) if ref in entry[0] else vs
        entry[1].append((order, rule, pred, chosen))
    getters: dict[FieldRef, Callable[[EventView], Any]] = {}

    def getter(ref: FieldRef) -> Callable[[EventView], Any]:
        if ref not in getters:
            getters[ref] = compiler.field_getter(ref, set())[0]
        return getters[ref]

    groups = []
    for key, (sets, ms) in by_key.items():
        tests = tuple((getter(ref), sets[ref].test()) for ref in key)
        guarded: list[Member] = []
        behind: list[tuple[Guard, ...]] = []
        for order, rule, pred, g in ms:
            # its own guard (the group's union is looser), then its other implied checks:
            # each is a conjunct of the rule, so all must pass (at most three, classifiers not)
            own = [g] + [c for c in cands_of[order] if c is not g
                         and not any(r.name in _CLASSIFIERS for r in c.key)][:2]
            if len(ms) > 1 or len(own) > 1:
                pred = _behind(tuple(tuple((getter(ref), vs.test()) for ref, vs in c.fields)
                                     for c in own), pred)
                behind.append(tuple(own))
            else:
                behind.append(())
            guarded.append((order, rule, pred))
        groups.append(GuardGroup(" or ".join(str(r) for r in key), tests, tuple(guarded),
                                 tuple((ref, sets[ref]) for ref in key), tuple(behind)))
    return TypePlan(tuple(always), tuple(groups))


Tests = tuple[tuple[Callable[[EventView], Any], Callable[[Any], bool]], ...]


def _behind(guards: tuple[Tests, ...], pred: Pred) -> Pred:
    """``pred`` run only when each of the rule's guards passes (exact: each is implied)."""
    def guarded(ev: EventView) -> bool:
        try:
            for tests in guards:
                for get, test in tests:
                    v = get(ev)
                    if v is not None and test(v):
                        break
                else:
                    return False
        except Exception:  # a field the predicate may never reach: let it decide
            pass
        return pred(ev)
    return guarded


__all__ = ["Guard", "GuardDeriver", "GuardGroup", "TypePlan", "ValueSet", "parse_bool", "parse_num",
           "plan"]
