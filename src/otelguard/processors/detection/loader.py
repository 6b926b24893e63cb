"""Falco rules files -> a compiled :class:`~.ruleset.RuleSet`, with every problem located.

Loading is Falco's three steps: the :mod:`.reader` turns each file into rule, macro and list
documents with positions; the :mod:`.collector` merges them into one namespace (append,
override, exceptions); this module, once every file is collected, resolves lists and macros
and compiles each rule (:mod:`.compiler`) into a :class:`~.ruleset.Rule` with its per-type
predicates, prefilter guards, evidence keys and MITRE tags. Outcome per rule: ``loaded``,
``disabled`` or ``skipped`` (a field we cannot provide, or a non-syscall ``source``), never a
silent half-load. Errors (YAML, grammar, undefined macro, bad value) carry file, line and item
name and make the set unusable (``RuleSet.ok`` is False); warnings do not.

Cost: loading Falco's three rule files (~100 rules) takes well under a second; it happens once.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from otelguard.processors.detection import mitre
from otelguard.processors.detection.collector import Collector
from otelguard.processors.detection.compiler import Compiler, UnsupportedField
from otelguard.processors.detection.fields import FIELDS, EventView
from otelguard.processors.detection.operators import CompileError, Compiled
from otelguard.processors.detection.output import parse_output
from otelguard.processors.detection.parser import (
    And, Check, ConditionSyntaxError, ListValue, Literal, Node, Not, Or, parse_condition,
    parse_field, split_list_item, LIST_OPS,
)
from otelguard.processors.detection.prefilter import Guard, GuardDeriver
from otelguard.processors.detection.reader import RulesReader, expand_rule_paths
from otelguard.processors.detection.ruleset import Priority, Rule, RuleSet, RuleStatus

UUID_NAMESPACE = uuid.UUID("6f1e0c2a-5b8e-4f55-9d0e-0a7c4e9b2f11")


def _flatten_lists(collected: Collector) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}

    def expand(name: str, stack: tuple[str, ...]) -> tuple[str, ...]:
        if name in out:
            return out[name]
        d = collected.lists[name]
        items: list[str] = []
        for it in d.items:
            if it in collected.lists and it not in stack:
                items.extend(expand(it, stack + (it,)))
            else:
                items.append(it)
        out[name] = tuple(items)
        return out[name]

    for name in collected.lists:
        expand(name, (name,))
    return out


def _exception_node(exc: dict[str, Any]) -> Optional[Node]:
    """An exception as a condition tree (None when it has no values yet)."""
    fields = exc.get("fields")
    comps = exc.get("comps")
    values = exc.get("values") or []
    if not values:
        return None
    if isinstance(fields, str):
        ref = parse_field(fields)
        comp = comps if isinstance(comps, str) else "in"
        if comp in LIST_OPS:
            return Check(ref, comp, _list_value(values), 0)
        return Or(tuple(Check(ref, comp, Literal(str(v), True), 0) for v in values))
    if not isinstance(fields, list) or not fields:
        raise CompileError(f"exception {exc['name']!r}: fields must be a field or a list")
    refs = [parse_field(str(f)) for f in fields]
    comp_list = list(comps) if isinstance(comps, list) else ["="] * len(refs)
    if len(comp_list) != len(refs):
        raise CompileError(f"exception {exc['name']!r}: {len(refs)} fields but "
                           f"{len(comp_list)} comps")
    alts: list[Node] = []
    for tup in values:
        if not isinstance(tup, list) or len(tup) != len(refs):
            raise CompileError(f"exception {exc['name']!r}: each value must be a list of "
                               f"{len(refs)} items, got {tup!r}")
        checks: list[Node] = []
        for ref, comp, v in zip(refs, comp_list, tup):
            comp = str(comp)
            if comp in LIST_OPS:
                items = v if isinstance(v, list) else [v]
                checks.append(Check(ref, comp, _list_value(items), 0))
            else:
                checks.append(Check(ref, comp, Literal(str(v), True), 0))
        alts.append(And(tuple(checks)) if len(checks) > 1 else checks[0])
    return Or(tuple(alts)) if len(alts) > 1 else alts[0]


def _list_value(items: list[Any]) -> ListValue:
    # bare strings may name a list (expanded by the compiler), as in a condition
    return ListValue(tuple(Literal(split_list_item(str(v)), False) for v in items))


def _category(tags: tuple[str, ...]) -> str:
    for t in tags:
        if t in ("filesystem", "process", "network", "users", "shell", "k8s", "container",
                 "software_mgmt", "kernel", "evasion", "cloud", "aws"):
            if t != "container":
                return t
    return "process"


def compile_collected(collected: Collector) -> RuleSet:
    """Every collected rule compiled (or its outcome recorded) into the collector's RuleSet."""
    out = collected.out
    lists = _flatten_lists(collected)
    macros: dict[str, Node] = {}
    for m in collected.macros.values():
        try:
            macros[m.name] = parse_condition(m.condition)
        except ConditionSyntaxError as exc:
            out.report_error(m.file, m.line, f"macro {m.name!r}",
                             f"condition syntax: {exc.reason} at offset {exc.offset}: "
                             f"{_excerpt(m.condition, exc.offset)}")
    comp = Compiler(macros, lists)
    typed: dict[str, Compiler] = {}  # one compiler (and macro cache) per known evt.type
    derivers: dict[Optional[str], GuardDeriver] = {None: GuardDeriver(comp)}
    for d in sorted(collected.rules.values(), key=lambda r: r.order):
        label = f"rule {d.name!r}"

        def status(state: str, reason: str = "") -> None:
            out.statuses.append(RuleStatus(d.name, state, reason, d.file, d.line, d.ruleset))

        try:
            priority = Priority.parse(d.priority)
        except KeyError:
            out.report_error(d.file, d.line, label, f"unknown priority {d.priority!r}")
            status("error", f"unknown priority {d.priority!r}")
            continue
        try:
            node = parse_condition(d.condition)
        except ConditionSyntaxError as exc:
            out.report_error(d.file, d.line, label, f"condition syntax: {exc.reason} at offset "
                             f"{exc.offset}: {_excerpt(d.condition, exc.offset)}")
            status("error", "condition syntax error")
            continue
        if not d.enabled:
            try:  # say whether it would run if enabled
                comp.compile(node)
                status("disabled", "enabled: false (would load if enabled)")
            except UnsupportedField as exc:
                status("disabled", f"enabled: false (would skip: {exc.reason})")
            except CompileError as exc:
                status("disabled", f"enabled: false (would not compile: {exc})")
            continue
        if d.source != "syscall":
            out.report_warning(d.file, d.line, label, f"source {d.source!r} is not supported "
                               "(only syscall)")
            status("skipped", f"source {d.source!r} not supported")
            continue
        try:
            exc_nodes = [n for n in (_exception_node(e) for e in d.exceptions) if n is not None]
            if exc_nodes:
                node = And((node, Not(Or(tuple(exc_nodes)) if len(exc_nodes) > 1
                                     else exc_nodes[0])))
            result = comp.compile(node)
        except UnsupportedField as exc:
            out.report_warning(d.file, d.line, label, f"skipped: {exc.reason}")
            status("skipped", exc.reason)
            continue
        except (CompileError, ConditionSyntaxError) as exc:
            out.report_error(d.file, d.line, label, str(exc))
            status("error", str(exc))
            continue
        template = parse_output(d.output.strip())
        for problem in template.problems():
            out.report_warning(d.file, d.line, label, f"{problem}; renders <NA>")
        pred = _as_pred(result.pred)
        preds: dict[str, Callable[[EventView], bool]] = {}
        for t in sorted(result.event_types or ()):
            tc = typed.get(t)
            if tc is None:
                tc = typed[t] = Compiler(macros, lists, known_type=t)
            preds[t] = _as_pred(tc.compile(node).pred)
        guards: dict[Optional[str], tuple[Guard, ...]] = {None: derivers[None].candidates(node)}
        for t in sorted(result.event_types or ()):
            deriver = derivers.get(t)
            if deriver is None:
                deriver = derivers[t] = GuardDeriver(typed[t])
            guards[t] = deriver.candidates(node)
        evidence = sorted({k for name, _arg in result.fields for k in FIELDS[name].keys}
                          | {k for s in template.slots if s.spec for k in s.spec.keys})
        tags = tuple(d.tags)
        tag_info = mitre.from_tags(tags)
        digest = hashlib.sha256(f"{d.condition}\n{d.output}\n{d.priority}".encode()).hexdigest()
        out.rules.append(Rule(
            name=d.name, desc=" ".join(d.desc.split()), condition=d.condition, output=template,
            priority=priority, tags=tags, ruleset=d.ruleset, file=d.file, line=d.line,
            pred=pred, event_types=result.event_types, preds=preds,
            evidence_keys=tuple(evidence),
            uuid=str(uuid.uuid5(UUID_NAMESPACE, f"{d.ruleset}/{d.name}")), version=digest[:12],
            mitre=tag_info, category=_category(tags), guards=guards,
        ))
        if result.pred is False:
            out.report_warning(d.file, d.line, label, "condition can never be true")
        status("loaded", "")
    return out


def _as_pred(c: Compiled) -> Callable[[EventView], bool]:
    if isinstance(c, bool):
        const = c
        return lambda ev: const
    return c


def _excerpt(text: str, offset: int) -> str:
    flat = " ".join(text.split("\n"))
    lo = max(0, offset - 25)
    return f"...{flat[lo:offset]}>>>{flat[offset:offset + 25]}..."


def load_rules(paths: Sequence[Union[str, Path]]) -> RuleSet:
    """Read ``paths`` in order (a directory: its rules files in name order) and compile;
    inspect ``.errors`` (or call raise_if_errors)."""
    out = RuleSet()
    reader, collected = RulesReader(out), Collector(out)
    for p in expand_rule_paths(paths):
        for item in reader.read_file(p):
            collected.add(item)
    return compile_collected(collected)


def load_rules_text(texts: Sequence[tuple[str, str]]) -> RuleSet:
    """Like :func:`load_rules` for in-memory (name, yaml text) pairs (tests, API callers)."""
    out = RuleSet()
    reader, collected = RulesReader(out), Collector(out)
    for name, text in texts:
        out.sources.append((name, hashlib.sha256(text.encode()).hexdigest()))
        for item in reader.read_text(text, name, Path(name).stem):
            collected.add(item)
    return compile_collected(collected)
