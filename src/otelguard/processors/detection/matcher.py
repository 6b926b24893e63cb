"""One generated Python function per evt.type: the type's guard groups and rule conditions as
straight-line code over a flat record view.

Why: with guards (:mod:`.prefilter`) a record runs few rules, but each test still cost a chain
of closure calls (group test -> field getter -> per-record cache -> operator lambda), ~100 calls
for a file open, and a Python call costs as much as a dict lookup and a comparison together.
Here each field a type's rules read is one local of the generated function (the flat record
view: read once, on first use, then a local load), and the common checks (``=``, ``!=``, ``in``,
``startswith``, ``endswith``, ``contains``, ``exists``, numeric and bool comparisons, guard
value sets) are inline expressions; only the rest (globs, regexes, IP networks, lists,
field-to-field comparisons, transformers' own calls) stay calls into the closures
:mod:`.compiler` built. ``and`` / ``or`` / ``not`` are Python's, so short-circuit order is the
rule's, as in Falco.

Exact by construction: every inline check is the expression its closure in :mod:`.operators`
evaluates (missing values false for every operator but ``exists``), constants folded as the
compiler folds them (``evt.type`` checks for the function's type, ``evt.num=0``, empty lists).
A rule's exceptions are its own (``try`` per rule: a failing rule is counted and skipped, the
others still run); a guard that raises lets the rule decide, as the closure path does.
tests/processors/detection/test_prefilter.py compares this path with the exhaustive closure
reference on every rule case and thousands of mutations. The stage generates every type's
function when it loads rules (``RuleEngine.warm``, ~0.3 s for stable + incubating); other
engines generate a type's on its first record. A plan whose source will not compile (nesting
beyond Python's limits) runs through the closures (none of Falco's three files needs it).

Cost: x1.1 less CPU per record than the closures on the stable + incubating rules (x1.12-1.16
for opens and execs); what remains is mostly reading attributes from upb (docs/benchmarks.md,
"Stable + incubating rules").
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from otelguard.processors.detection.compiler import Compiler
from otelguard.processors.detection.fields import AttrField, EventView, FieldType, event_type
from otelguard.processors.detection.fields.registry import resolve
from otelguard.processors.detection.operators import (
    CompileError, as_text, coerce_int, str_matcher,
)
from otelguard.processors.detection.parser import (
    And, Check, FieldRef, Literal, ListValue, MacroRef, Node, Not, Or,
)
from otelguard.processors.detection.prefilter import (
    Guard, TypePlan, ValueSet, parse_bool, parse_num,
)

Hit = tuple[int, Any]  # (rule order, rule)
Matcher = Callable[[EventView], list[Hit]]

_UNSET: Any = object()  # a field local not read yet
_MAX_DEPTH = 40  # deeper subtrees stay closure calls (Python's parser nests ~200 parentheses)
_STR_INLINE = {"=": "{v} == {c}", "!=": "{v} != {c}", "in": "{v} in {c}",
               "intersects": "{v} in {c}", "startswith": "{v}.startswith({c})",
               "endswith": "{v}.endswith({c})", "contains": "{c} in {v}"}
_NUM_INLINE = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "in",
               "intersects": "in"}


class _Source:
    """The text and the constants of one generated function."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {"_U": _UNSET, "as_text": as_text,
                                       "coerce_int": coerce_int, "event_type": event_type}
        self._ids: dict[int, str] = {}
        self.fields: dict[FieldRef, tuple[str, FieldType]] = {}  # ref -> (local, type)
        self.reads: dict[str, str] = {}  # local -> the expression reading it from the record
        self.lines: list[str] = []

    def const(self, obj: Any, prefix: str = "c") -> str:
        name = self._ids.get(id(obj))
        if name is None:
            name = self._ids[id(obj)] = f"{prefix}{len(self.consts)}"
            self.consts[name] = obj
        return name

    def field(self, ref: FieldRef, comp: Compiler) -> tuple[str, str, FieldType]:
        """(expression reading the field once per record, its local, its type)."""
        hit = self.fields.get(ref)
        if hit is None:
            getter, ftype = comp.field_getter(ref, set())
            local = f"f{len(self.fields)}"
            hit = self.fields[ref] = (local, ftype)
            spec = None if ref.join or ref.transformers else resolve(ref.name, ref.arg)[0]
            if spec is not None and isinstance(spec.extract, AttrField) \
                    and ref.name not in ("evt.type", "syscall.type"):
                self.reads[local] = f"ev.attr({self.const(spec.extract.key, 'k')})"
            elif getter is event_type:
                self.reads[local] = "event_type(ev)"
            else:
                self.reads[local] = f"{self.const(getter, 'g')}(ev)"
        local, ftype = hit
        read = self.reads[local]
        return f"({local} if {local} is not _U else ({local} := {read}))", local, ftype

    def compile(self, name: str) -> Callable[..., Any]:
        fields = [local for local, _t in self.fields.values()]
        body = [f"def {name}(ev):", "    hits = []"]
        if fields:
            body.append("    " + " = ".join(fields) + " = _U")
        body.extend("    " + line for line in self.lines)
        body.append("    return hits")
        namespace = dict(self.consts)
        exec(compile("\n".join(body), f"<otelguard matcher {name}>", "exec"), namespace)
        fn: Callable[..., Any] = namespace[name]
        return fn


class _Conditions:
    """Emits a rule's condition tree as one expression (``True``/``False`` when it folds)."""

    def __init__(self, src: _Source, comp: Compiler) -> None:
        self.src = src
        self.comp = comp
        self._macros: dict[str, Any] = {}

    def expr(self, node: Node, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            return self._call(node)
        if isinstance(node, Check):
            return self._check(node)
        if isinstance(node, MacroRef):
            hit = self._macros.get(node.name)
            if hit is None:
                hit = self._macros[node.name] = self.expr(self.comp.macros[node.name], depth)
            return hit
        if isinstance(node, Not):
            child = self.expr(node.child, depth + 1)
            return (not child) if isinstance(child, bool) else f"(not {child})"
        if isinstance(node, (And, Or)):
            is_and = isinstance(node, And)
            parts = [self.expr(ch, depth + 1) for ch in node.children]
            if any(p is (not is_and) for p in parts):
                return not is_and
            rest = [p for p in parts if not isinstance(p, bool)]
            if not rest:
                return is_and
            if len(rest) == 1:
                return rest[0]
            return "(" + (" and " if is_and else " or ").join(rest) + ")"
        return self._call(node)

    def _call(self, node: Node) -> Any:
        pred = self.comp.compile(node).pred
        return pred if isinstance(pred, bool) else f"{self.src.const(pred, 'p')}(ev)"

    def _check(self, node: Check) -> Any:
        compiled = self.comp._check(node, set())
        if isinstance(compiled, bool):
            return compiled
        inline = self._inline(node)
        return inline if inline is not None else f"{self.src.const(compiled, 'p')}(ev)"

    def _inline(self, node: Check) -> Optional[str]:
        op = node.op
        if op == "exists":
            read, _local, _t = self.src.field(node.field, self.comp)
            return f"({read} is not None)"
        if not isinstance(node.value, (Literal, ListValue)):
            return None
        values = self.comp._values(node.value)
        read, v, ftype = self.src.field(node.field, self.comp)
        if ftype == FieldType.STR:
            text = f"({v} if {v}.__class__ is str else as_text({v}))"
            pattern = _STR_INLINE.get(op)
            if pattern is not None:
                rhs: Any = frozenset(values) if op in ("in", "intersects") else values[0]
                test = pattern.format(v=text, c=self.src.const(rhs))
            else:
                try:
                    m = str_matcher(op, values, node)
                except CompileError:
                    return None
                test = f"{self.src.const(m, 'm')}({text})"
            return f"({read} is not None and {test})"
        if ftype == FieldType.NUM and op in _NUM_INLINE:
            try:
                nums = [parse_num(x) for x in values]
            except ValueError:
                return None
            if op in ("in", "intersects"):
                rhs = frozenset(nums)
            elif len(nums) == 1:
                rhs = nums[0]
            else:
                return None
            return (f"({read} is not None and (_n := ({v} if isinstance({v}, int) else "
                    f"coerce_int({v}))) is not None and _n {_NUM_INLINE[op]} "
                    f"{self.src.const(rhs)})")
        if ftype == FieldType.BOOL and op in ("=", "in", "!="):
            try:
                wanted = frozenset(parse_bool(x) for x in values)
            except ValueError:
                return None
            neg = "not in" if op == "!=" else "in"
            return f"({read} is not None and bool({v}) {neg} {self.src.const(wanted)})"
        return None


def _guard(src: _Source, comp: Compiler, fields: tuple[tuple[FieldRef, ValueSet], ...]) -> str:
    """Passes when any field's value (not None) passes its value set, as GuardGroup.passes."""
    alts = []
    for ref, vs in fields:
        read, v, _t = src.field(ref, comp)
        if vs.kind == FieldType.STR and not (vs.subs or vs.patterns):
            # ValueSet.test's string case: equal to one, or with one of the prefixes/suffixes
            # (the value converted once, in the first alternative)
            parts: list[str] = []
            if vs.eq:
                parts.append("{s} in " + src.const(frozenset(vs.eq)))
            if vs.prefixes:
                parts.append("{s}.startswith(" + src.const(tuple(vs.prefixes)) + ")")
            if vs.suffixes:
                parts.append("{s}.endswith(" + src.const(tuple(vs.suffixes)) + ")")
            first = f"(_s := ({v} if {v}.__class__ is str else as_text({v})))"
            test = "(" + " or ".join(p.format(s=first if i == 0 else "_s")
                                     for i, p in enumerate(parts)) + ")" if parts else "False"
        else:
            test = f"{src.const(vs.test(), 't')}({v})"
        alts.append(f"({read} is not None and {test})")
    return " or ".join(alts) if alts else "True"


def generate(evt_type: Optional[str], plan: TypePlan,
             on_error: Callable[[], None]) -> Optional[Matcher]:
    """The matcher of ``plan`` (rules of records whose evt.type is ``evt_type``; None: the
    plan of records whose type no rule names), or None when some rule lacks its condition
    tree (the caller then runs the plan's closures). Returns (rule order, rule) per match, in
    evaluation order (the caller sorts)."""
    src = _Source()
    src.consts["_err"] = on_error
    conds: dict[int, _Conditions] = {}

    def compiler_of(rule: Any) -> Optional[Compiler]:
        """The compiler the rule's predicate for this type came from (None: no tree kept)."""
        if rule.node is None:
            return None
        comp: Optional[Compiler] = rule.compilers.get(evt_type if evt_type in rule.preds
                                                      else None)
        return comp

    def member(order: int, rule: Any, own: tuple[Guard, ...], indent: str) -> bool:
        comp = compiler_of(rule)
        if comp is None:
            return False
        emitter = conds.get(id(comp))
        if emitter is None:
            emitter = conds[id(comp)] = _Conditions(src, comp)
        e = emitter.expr(rule.node)
        cond = repr(e) if isinstance(e, bool) else e
        hit = src.const((order, rule), "h")
        lines = src.lines
        body = indent
        if own:  # the rule's own guards, as prefilter._behind checks them
            checks = " and ".join(f"({_guard(src, comp, g.fields)})" for g in own)
            lines += [f"{indent}try:", f"{indent}    _ok = {checks}",
                      f"{indent}except Exception:", f"{indent}    _ok = True",
                      f"{indent}if _ok:"]
            body = indent + "    "
        lines += [f"{body}try:", f"{body}    if {cond}:", f"{body}        hits.append({hit})",
                  f"{body}except Exception:", f"{body}    _err()"]
        return True

    for order, rule, _pred in plan.always:
        if not member(order, rule, (), ""):
            return None
    generic = Compiler({})
    for group in plan.groups:
        src.lines += ["try:", f"    _g = {_guard(src, generic, group.sets)}",
                      "except Exception:", "    _g = True", "if _g:"]
        for (order, rule, _pred), own in zip(group.members, group.own or
                                             ((),) * len(group.members)):
            if not member(order, rule, own, "    "):
                return None
    try:
        fn = src.compile(f"match_{_ident(evt_type)}")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None
    return fn


def _ident(text: Optional[str]) -> str:
    return "any" if text is None else "".join(c if c.isalnum() else "_" for c in text)


__all__ = ["Hit", "Matcher", "generate"]
