"""Falco rules files -> a compiled :class:`~.ruleset.RuleSet`, with every problem located.

Loading is Falco's three steps: the :mod:`.reader` turns each file into rule, macro and list
documents with positions; the :mod:`.collector` merges them into one namespace (append,
override, exceptions); this module, once every file is collected, resolves lists and macros
and compiles each rule (:mod:`.compiler`) into a :class:`~.ruleset.Rule` with its per-type
predicates, prefilter guards, evidence keys and MITRE tags. Outcome per rule: ``loaded``,
``disabled``, ``cannot-run`` (a Falco field this sensor does not provide) or ``skipped``
(``skip-if-unknown-filter``, or a non-syscall ``source``), never a silent half-load. Errors
(YAML, grammar, unknown field, undefined macro, bad value) carry file, line and item name and
make the set unusable (``RuleSet.ok`` is False), as they make Falco refuse to start; warnings
do not. Lists, exceptions and macro visibility follow Falco (:mod:`.resolution`).

Cost: loading Falco's three rule files (~100 rules) takes well under a second; it happens once.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from otelguard.processors.detection import mitre
from otelguard.processors.detection.collector import Collector, RuleDef
from otelguard.processors.detection.compiler import Compiler, UnsupportedField
from otelguard.processors.detection.fields import FIELDS, UNAVAILABLE, UNKNOWN, EventView
from otelguard.processors.detection.fields.evt import SENSOR_EVENT_TYPES
from otelguard.processors.detection.operators import CompileError, Compiled
from otelguard.processors.detection.output import parse_output
from otelguard.processors.detection.parser import (
    ConditionSyntaxError, Node, macro_refs, parse_condition,
)
from otelguard.processors.detection.prefilter import Guard, GuardDeriver
from otelguard.processors.detection.reader import Item, RulesReader, expand_rule_paths
from otelguard.processors.detection.resolution import (
    ExceptionError, exception_condition, expand_lists, substitute_lists,
)
from otelguard.processors.detection.ruleset import Priority, Rule, RuleSet, RuleStatus
from otelguard.processors.detection.state import ANCESTOR_IMAGE_FIELDS

UUID_NAMESPACE = uuid.UUID("6f1e0c2a-5b8e-4f55-9d0e-0a7c4e9b2f11")


def _category(tags: tuple[str, ...]) -> str:
    for t in tags:
        if t in ("filesystem", "process", "network", "users", "shell", "k8s", "container",
                 "software_mgmt", "kernel", "evasion", "cloud", "aws"):
            if t != "container":
                return t
    return "process"


def _lists(collected: Collector) -> list[tuple[str, tuple[str, ...]]]:
    defs = sorted(collected.lists.values(), key=lambda d: d.index)
    return expand_lists([(d.name, d.items, d.index, d.visibility) for d in defs])


def _macros(collected: Collector, lists: list[tuple[str, tuple[str, ...]]]) -> dict[str, Node]:
    """Every macro parsed (lists substituted), each checked to use only the macros visible to
    it; problems reported on the macro, used or not (Falco compiles every macro)."""
    out = collected.out
    macros: dict[str, Node] = {}
    for m in sorted(collected.macros.values(), key=lambda d: d.index):
        text = substitute_lists(m.condition, lists)
        try:
            node = macros[m.name] = parse_condition(text)
        except ConditionSyntaxError as exc:
            out.report_error(m.file, m.line, f"macro {m.name!r}",
                             f"condition syntax: {exc.reason} at offset {exc.offset}: "
                             f"{_excerpt(text, exc.offset)}")
            continue
        for ref in macro_refs(node):
            other = collected.macros.get(ref.name)
            if other is not None and other.index < m.visibility:
                continue
            later = "" if other is None else (
                f" (it is defined at {other.file}:{other.line}, after this macro: a macro can "
                "use only the macros defined before it)")
            out.report_error(m.file, m.line, f"macro {m.name!r}",
                             f"undefined macro {ref.name!r} used in condition{later}")
    return macros


def _rule_status(out: RuleSet, d: RuleDef) -> Callable[[str, str], None]:
    def status(state: str, reason: str = "") -> None:
        out.statuses.append(RuleStatus(d.name, state, reason, d.file, d.line, d.ruleset))
    return status


def compile_collected(collected: Collector) -> RuleSet:
    """Every collected rule compiled (or its outcome recorded) into the collector's RuleSet.

    Outcomes (docs/architecture.md#falco-rule-semantics): a rule that loads is kept (in ``rules`` when
    enabled, in ``disabled`` otherwise, so a selection can enable it); a field that is not a
    Falco field, a malformed one, or an unknown output field is an error at the rule's
    file:line, unless the rule says ``skip-if-unknown-filter: true`` (then ``skipped``); a
    Falco field this sensor does not provide makes the rule ``cannot-run`` with the reason."""
    out = collected.out
    lists = _lists(collected)
    macros = _macros(collected, lists)
    comp = Compiler(macros)
    typed: dict[str, Compiler] = {}  # one compiler (and macro cache) per known evt.type
    compilers: dict[Optional[str], Compiler] = {None: comp}  # the same, shared by the rules
    derivers: dict[Optional[str], GuardDeriver] = {None: GuardDeriver(comp)}
    for d in sorted(collected.rules.values(), key=lambda r: r.order):
        label = f"rule {d.name!r}"
        status = _rule_status(out, d)
        try:
            priority = Priority.parse(d.priority)
        except KeyError:
            out.report_error(d.file, d.line, label, f"unknown priority {d.priority!r}")
            status("error", f"unknown priority {d.priority!r}")
            continue
        if d.source != "syscall":
            out.report_warning(d.file, d.line, label, f"source {d.source!r} is not supported "
                               "(only syscall)")
            status("skipped", f"source {d.source!r} not supported")
            continue
        try:
            text = substitute_lists(exception_condition(d.condition, d.exceptions), lists)
        except ExceptionError as exc:
            out.report_error(d.file, d.line, label, str(exc))
            status("error", str(exc))
            continue
        try:
            node = parse_condition(text)
        except ConditionSyntaxError as exc:
            out.report_error(d.file, d.line, label, f"condition syntax: {exc.reason} at offset "
                             f"{exc.offset}: {_excerpt(text, exc.offset)}")
            status("error", "condition syntax error")
            continue
        output = d.output.strip()
        if collected.append_output:
            output = f"{output} {collected.append_output}"
        try:
            result = comp.compile(node)
            template = parse_output(output)
            problem = template.problem()
            if problem is not None:
                raise UnsupportedField(problem.text, problem.reason, problem.kind)
        except UnsupportedField as exc:
            if exc.kind == UNAVAILABLE:
                out.report_warning(d.file, d.line, label, f"cannot run on this sensor: "
                                   f"{exc.reason}")
                status("cannot-run", exc.reason)
            elif exc.kind == UNKNOWN and d.skip_if_unknown_filter:
                out.report_warning(d.file, d.line, label, f"skipped (skip-if-unknown-filter): "
                                   f"{exc.reason}")
                status("skipped", f"{exc.reason} (skip-if-unknown-filter: true)")
            else:
                out.report_error(d.file, d.line, label, exc.reason)
                status("error", exc.reason)
            continue
        except (CompileError, ConditionSyntaxError) as exc:
            out.report_error(d.file, d.line, label, str(exc))
            status("error", str(exc))
            continue
        never = _never_emitted(result.event_types)
        if never is not None:
            out.report_warning(d.file, d.line, label, f"cannot run on this sensor: {never}")
            status("cannot-run", never)
            continue
        for problem_text in template.problems():
            out.report_warning(d.file, d.line, label, f"{problem_text}; renders <NA>")
        pred = _as_pred(result.pred)
        preds: dict[str, Callable[[EventView], bool]] = {}
        for t in sorted(result.event_types or ()):
            tc = typed.get(t)
            if tc is None:
                tc = typed[t] = compilers[t] = Compiler(macros, known_type=t)
            preds[t] = _as_pred(tc.compile(node).pred)
        guards: dict[Optional[str], tuple[Guard, ...]] = {None: derivers[None].candidates(node)}
        for t in sorted(result.event_types or ()):
            deriver = derivers.get(t)
            if deriver is None:
                deriver = derivers[t] = GuardDeriver(typed[t])
            guards[t] = deriver.candidates(node)
        evidence = sorted({k for name, _arg in result.fields for k in FIELDS[name].keys}
                          | {k for s in template.slots if s.spec for k in s.spec.keys})
        used = set(result.fields) | {(sl.spec.name, sl.arg) for sl in template.slots if sl.spec}
        images = frozenset(name for name, arg in used if name in ANCESTOR_IMAGE_FIELDS
                           and arg is not None and arg.isdigit() and int(arg) >= 2)
        tags = tuple(d.tags)
        tag_info = mitre.from_tags(tags)
        digest = hashlib.sha256(f"{d.condition}\n{d.output}\n{d.priority}".encode()).hexdigest()
        rule = Rule(
            name=d.name, desc=" ".join(d.desc.split()), condition=d.condition, output=template,
            priority=priority, tags=tags, ruleset=d.ruleset, file=d.file, line=d.line,
            pred=pred, event_types=result.event_types, preds=preds,
            evidence_keys=tuple(evidence),
            uuid=str(uuid.uuid5(UUID_NAMESPACE, f"{d.ruleset}/{d.name}")), version=digest[:12],
            mitre=tag_info, category=_category(tags), guards=guards, enabled=d.enabled,
            ancestor_images=images, node=node, compilers=compilers,
        )
        if result.pred is False:
            out.report_warning(d.file, d.line, label, "condition can never be true")
        if result.event_types is None and d.warn_evttypes:
            out.report_warning(d.file, d.line, label, "condition does not restrict evt.type: "
                               "the rule runs on every record (warn_evttypes: false silences "
                               "this)")
        out.compiled.append(rule)
        if not d.enabled:
            status("disabled", "enabled: false (loads when enabled)")
            continue
        out.rules.append(rule)
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


def load_rules(paths: Sequence[Union[str, Path]], append_output: str = "",
               extra: Sequence[Item] = ()) -> RuleSet:
    """Read ``paths`` in order (a directory: its rules files in name order) and compile;
    inspect ``.errors`` (or call raise_if_errors). ``append_output``: text (with %fields)
    appended to every rule's output, as Falco's ``append_output`` / ``-p``. ``extra``: items
    collected after the files (a policy tree's exceptions, processors/policy/exceptions.py)."""
    out = RuleSet()
    reader, collected = RulesReader(out), Collector(out, append_output)
    for p in expand_rule_paths(paths):
        for item in reader.read_file(p):
            collected.add(item)
    for item in extra:
        collected.add(item)
    return compile_collected(collected)


def load_rules_text(texts: Sequence[tuple[str, str]], append_output: str = "") -> RuleSet:
    """Like :func:`load_rules` for in-memory (name, yaml text) pairs (tests, API callers)."""
    out = RuleSet()
    reader, collected = RulesReader(out), Collector(out, append_output)
    for name, text in texts:
        out.sources.append((name, hashlib.sha256(text.encode()).hexdigest()))
        for item in reader.read_text(text, name, Path(name).stem):
            collected.add(item)
    return compile_collected(collected)


def _never_emitted(types: Optional[frozenset[str]]) -> Optional[str]:
    """Why a rule restricted to ``types`` never fires here (none of them is an evt.type the
    sensor's records carry), or None."""
    if types is None or types & SENSOR_EVENT_TYPES:
        return None
    return (f"its event types ({', '.join(sorted(types)) or 'none'}) are never emitted by "
            "this sensor (docs/architecture.md#event-names)")
