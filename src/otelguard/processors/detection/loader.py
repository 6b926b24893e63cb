"""Falco rules files -> a compiled :class:`RuleSet`, with every problem located.

Files load in order into one namespace, as Falco does: later files override or append to items
of earlier ones (``override: {condition: append}``, legacy ``append: true``, ``enabled:`` toggles,
exceptions merged by name). Macros and lists resolve after all files are read, so an item may be
used before it is defined. Outcome per rule: ``loaded``, ``disabled`` or ``skipped`` (a field we
cannot provide, or a non-syscall ``source``), never a silent half-load. Errors (YAML, grammar,
undefined macro, bad value) carry file, line and item name and make the set unusable
(``RuleSet.ok`` is False); warnings do not.

Cost: loading Falco's three rule files (~100 rules) takes well under a second; it happens once.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from otelguard.config import LocatedDict, LocatedList, load_yaml
from otelguard.processors.detection import mitre
from otelguard.processors.detection.compiler import (
    CompileError, Compiled, Compiler, UnsupportedField,
)
from otelguard.processors.detection.fieldmap import FIELDS, EventView
from otelguard.processors.detection.output import OutputTemplate, parse_output
from otelguard.processors.detection.prefilter import Guard, GuardDeriver
from otelguard.processors.detection.parser import (
    And, Check, ConditionSyntaxError, ListValue, Literal, Node, Not, Or, parse_condition,
    parse_field, split_list_item, LIST_OPS,
)
from otelguard.processors.errors import ConfigError

ENGINE_VERSION = (0, 57, 0)  # the Falco engine version whose rule language we implement
UUID_NAMESPACE = uuid.UUID("6f1e0c2a-5b8e-4f55-9d0e-0a7c4e9b2f11")


class Priority(IntEnum):
    """Falco's priorities, ordered; ``otel`` is the OTel severity number they map to."""

    DEBUG = 7
    INFORMATIONAL = 6
    NOTICE = 5
    WARNING = 4
    ERROR = 3
    CRITICAL = 2
    ALERT = 1
    EMERGENCY = 0

    @property
    def otel(self) -> int:
        return _OTEL_SEVERITY[self]

    @classmethod
    def parse(cls, text: str) -> "Priority":
        key = text.strip().upper()
        key = {"INFO": "INFORMATIONAL", "WARN": "WARNING", "EMERG": "EMERGENCY",
               "CRIT": "CRITICAL", "ERR": "ERROR"}.get(key, key)
        return cls[key]


_OTEL_SEVERITY = {
    Priority.EMERGENCY: 21, Priority.ALERT: 21, Priority.CRITICAL: 21, Priority.ERROR: 17,
    Priority.WARNING: 13, Priority.NOTICE: 10, Priority.INFORMATIONAL: 9, Priority.DEBUG: 5,
}


@dataclass(frozen=True)
class Diagnostic:
    severity: str  # "error" | "warning"
    file: str
    line: Optional[int]
    item: str  # "rule 'X'", "macro 'y'", "list 'z'", "" for the file
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        item = f" {self.item}:" if self.item else ""
        return f"{where}: {self.severity}:{item} {self.message}"


@dataclass(frozen=True)
class RuleStatus:
    name: str
    state: str  # "loaded" | "skipped" | "disabled" | "error"
    reason: str
    file: str
    line: Optional[int]
    ruleset: str


@dataclass(frozen=True)
class Rule:
    """A loaded, compiled rule: everything a detection record needs, computed once."""

    name: str
    desc: str
    condition: str
    output: OutputTemplate
    priority: Priority
    tags: tuple[str, ...]
    ruleset: str
    file: str
    line: Optional[int]
    pred: Callable[[EventView], bool]
    event_types: Optional[frozenset[str]]
    preds: dict[str, Callable[[EventView], bool]]  # specialised per evt.type (checks folded)
    evidence_keys: tuple[str, ...]
    uuid: str
    version: str
    mitre: mitre.Mitre
    category: str
    # evt.type (None: the rule's generic predicate) -> necessary checks, best first (prefilter)
    guards: dict[Optional[str], tuple[Guard, ...]] = field(default_factory=dict)


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    statuses: list[RuleStatus] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    required_engine_versions: list[tuple[str, str]] = field(default_factory=list)  # (file, ver)
    required_plugins: list[tuple[str, str, str]] = field(default_factory=list)  # (file, name, ver)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> None:
        if self.errors:
            raise RulesError(self.errors)

    def count(self, state: str) -> int:
        return sum(1 for s in self.statuses if s.state == state)


class RulesError(ConfigError):
    """Rule files that do not load; every problem is listed with file and line."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        from otelguard.processors.errors import ConfigIssue

        super().__init__([ConfigIssue(d.item, d.message, d.file, d.line) for d in diagnostics])
        self.diagnostics = tuple(diagnostics)


# --- the mutable definitions collected while reading files -----------------------------------------

@dataclass
class _Def:
    name: str
    file: str
    line: Optional[int]
    ruleset: str


@dataclass
class _ListDef(_Def):
    items: list[str] = field(default_factory=list)


@dataclass
class _MacroDef(_Def):
    condition: str = ""


@dataclass
class _RuleDef(_Def):
    condition: str = ""
    output: str = ""
    desc: str = ""
    priority: str = ""
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    source: str = "syscall"
    order: int = 0


_RULE_KEYS = {"rule", "condition", "output", "desc", "priority", "tags", "enabled", "exceptions",
              "source", "append", "override", "warn_evttypes", "skip-if-unknown-filter",
              "capture", "capture_duration"}
_MACRO_KEYS = {"macro", "condition", "append", "override"}
_LIST_KEYS = {"list", "items", "append", "override"}
_OVERRIDABLE = {
    "rule": {"condition": {"append", "replace"}, "output": {"append", "replace"},
             "desc": {"append", "replace"}, "priority": {"replace"},
             "tags": {"append", "replace"}, "exceptions": {"append", "replace"},
             "enabled": {"replace"}, "source": {"replace"}, "capture": {"replace"},
             "capture_duration": {"replace"}},
    "macro": {"condition": {"append", "replace"}},
    "list": {"items": {"append", "replace"}},
}


class _Reader:
    def __init__(self) -> None:
        self.lists: dict[str, _ListDef] = {}
        self.macros: dict[str, _MacroDef] = {}
        self.rules: dict[str, _RuleDef] = {}
        self.out = RuleSet()
        self._order = 0

    # -- diagnostics ----------------------------------------------------------------------------
    def error(self, file: str, line: Optional[int], item: str, msg: str) -> None:
        self.out.errors.append(Diagnostic("error", file, line, item, msg))

    def warn(self, file: str, line: Optional[int], item: str, msg: str) -> None:
        self.out.warnings.append(Diagnostic("warning", file, line, item, msg))

    # -- files ----------------------------------------------------------------------------------
    def read_file(self, path: Union[str, Path]) -> None:
        p = Path(path)
        file = str(path)
        try:
            text = p.read_text()
        except OSError as exc:
            self.error(file, None, "", f"cannot read rules file: {exc.strerror or exc}")
            return
        self.read_text(text, file, p.stem)

    def read_text(self, text: str, file: str, ruleset: str) -> None:
        try:
            doc = load_yaml(text, file)
        except ConfigError as exc:
            for issue in exc.issues:
                self.error(file, issue.line, "", issue.message)
            return
        if doc is None:
            return
        if not isinstance(doc, list):
            self.error(file, getattr(doc, "line", None), "",
                       "a rules file is a YAML list of rule/macro/list items")
            return
        lines = doc.item_lines if isinstance(doc, LocatedList) else []
        for i, item in enumerate(doc):
            line = lines[i] if i < len(lines) else None
            if not isinstance(item, dict):
                self.error(file, line, "", f"item {i} is not a mapping")
                continue
            self.read_item(item, file, line, ruleset)

    def read_item(self, item: dict[str, Any], file: str, line: Optional[int], ruleset: str) -> None:
        if "required_engine_version" in item:
            ver = str(item["required_engine_version"])
            self.out.required_engine_versions.append((file, ver))
            if _version_tuple(ver) > ENGINE_VERSION:
                self.warn(file, line, "", f"required_engine_version {ver} is newer than the "
                          f"implemented {'.'.join(map(str, ENGINE_VERSION))}; newer features "
                          "may be reported as unsupported")
            return
        if "required_plugin_versions" in item:
            plugins = item["required_plugin_versions"]
            for p in plugins if isinstance(plugins, list) else []:
                if isinstance(p, dict):
                    self.out.required_plugins.append(
                        (file, str(p.get("name", "")), str(p.get("version", ""))))
            return
        for kind, keys in (("rule", _RULE_KEYS), ("macro", _MACRO_KEYS), ("list", _LIST_KEYS)):
            if kind in item:
                name = item[kind]
                label = f"{kind} {name!r}"
                if not isinstance(name, str) or not name.strip():
                    self.error(file, line, label, f"{kind} needs a non-empty name")
                    return
                for key in item:
                    if key not in keys:
                        self.warn(file, _key_line(item, key, line), label,
                                  f"unknown key {key!r} ignored")
                getattr(self, f"read_{kind}")(item, name, file, line, ruleset, label)
                return
        self.error(file, line, "", "unknown item: expected rule, macro, list, "
                   "required_engine_version or required_plugin_versions, got keys "
                   + ", ".join(sorted(map(str, item))))

    def _mode(self, item: dict[str, Any], kind: str, file: str, line: Optional[int],
              label: str) -> Optional[dict[str, str]]:
        """{key: append|replace} for an override/append item; {} for a plain definition."""
        modes: dict[str, str] = {}
        override = item.get("override")
        if override is not None:
            if not isinstance(override, dict):
                self.error(file, line, label, "override must map keys to append or replace")
                return None
            for key, mode in override.items():
                allowed = _OVERRIDABLE[kind].get(key)
                if allowed is None or mode not in allowed:
                    self.error(file, _key_line(override, key, line), label,
                               f"cannot override {key!r} with {mode!r} "
                               f"(allowed: {_allowed_text(kind)})")
                    return None
                if key not in item:
                    self.error(file, line, label, f"override of {key!r} but no {key!r} given")
                    return None
                modes[key] = mode
        if item.get("append") is True:
            if override is not None:
                self.error(file, line, label, "use either append or override, not both")
                return None
            main = {"rule": "condition", "macro": "condition", "list": "items"}[kind]
            if kind == "rule":
                for key in ("condition", "exceptions", "output", "desc", "tags"):
                    if key in item:
                        modes[key] = "append"
            else:
                modes[main] = "append"
        return modes

    def read_list(self, item: dict[str, Any], name: str, file: str, line: Optional[int],
                  ruleset: str, label: str) -> None:
        modes = self._mode(item, "list", file, line, label)
        if modes is None:
            return
        raw = item.get("items")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            self.error(file, line, label, "items must be a list")
            return
        items = [split_list_item(str(x)) if isinstance(x, str) else str(x) for x in raw]
        existing = self.lists.get(name)
        if modes:
            if existing is None:
                self.error(file, line, label, "append/override of a list that is not defined")
                return
            if modes.get("items") == "append":
                existing.items.extend(items)
            else:
                existing.items = items
            return
        if "items" not in item:
            self.error(file, line, label, "list needs items")
            return
        self.lists[name] = _ListDef(name, file, line, ruleset, items)

    def read_macro(self, item: dict[str, Any], name: str, file: str, line: Optional[int],
                   ruleset: str, label: str) -> None:
        modes = self._mode(item, "macro", file, line, label)
        if modes is None:
            return
        cond = item.get("condition")
        if not isinstance(cond, str) or not cond.strip():
            self.error(file, line, label, "macro needs a condition")
            return
        existing = self.macros.get(name)
        if modes:
            if existing is None:
                self.error(file, line, label, "append/override of a macro that is not defined")
                return
            if modes.get("condition") == "append":
                existing.condition = f"{existing.condition} {cond}"
            else:
                existing.condition = cond
            existing.file, existing.line = file, line
            return
        self.macros[name] = _MacroDef(name, file, line, ruleset, cond)

    def read_rule(self, item: dict[str, Any], name: str, file: str, line: Optional[int],
                  ruleset: str, label: str) -> None:
        modes = self._mode(item, "rule", file, line, label)
        if modes is None:
            return
        existing = self.rules.get(name)
        if not modes and existing is not None and set(item) <= {"rule", "enabled"}:
            modes = {"enabled": "replace"}  # legacy toggle: `- rule: X / enabled: false`
        if modes:
            if existing is None:
                self.error(file, line, label, "append/override of a rule that is not defined")
                return
            self._apply(existing, item, modes, file, line, label)
            return
        missing = [k for k in ("condition", "output", "desc", "priority") if k not in item]
        if missing:
            self.error(file, line, label, "rule needs " + ", ".join(missing))
            return
        d = _RuleDef(name, file, line, ruleset)
        self._order += 1
        d.order = self._order
        self._apply(d, item, {k: "replace" for k in item if k not in ("rule", "append")},
                    file, line, label)
        if existing is not None:
            self.warn(file, line, label, f"redefines the rule from {existing.file}:{existing.line}")
            d.order = existing.order
        self.rules[name] = d

    def _apply(self, d: _RuleDef, item: dict[str, Any], modes: dict[str, str], file: str,
               line: Optional[int], label: str) -> None:
        for key, mode in modes.items():
            value = item.get(key)
            if key == "override":
                continue
            if key in ("condition", "output", "desc", "priority", "source"):
                if not isinstance(value, str):
                    self.error(file, _key_line(item, key, line), label, f"{key} must be a string")
                    continue
                if mode == "append":
                    setattr(d, key, f"{getattr(d, key)} {value}".strip())
                else:
                    setattr(d, key, value)
            elif key == "tags":
                if not isinstance(value, list):
                    self.error(file, _key_line(item, key, line), label, "tags must be a list")
                    continue
                tags = [str(t) for t in value]
                d.tags = d.tags + tags if mode == "append" else tags
            elif key == "enabled":
                if not isinstance(value, bool):
                    self.error(file, _key_line(item, key, line), label, "enabled must be a bool")
                    continue
                d.enabled = value
            elif key == "exceptions":
                if not isinstance(value, list):
                    self.error(file, _key_line(item, key, line), label,
                               "exceptions must be a list")
                    continue
                self._exceptions(d, value, mode, file, line, label)
            # capture, capture_duration, warn_evttypes, skip-if-unknown-filter: accepted, unused

    def _exceptions(self, d: _RuleDef, items: list[Any], mode: str, file: str,
                    line: Optional[int], label: str) -> None:
        if mode == "replace":
            d.exceptions = []
        by_name = {e["name"]: e for e in d.exceptions}
        for exc in items:
            if not isinstance(exc, dict) or not isinstance(exc.get("name"), str):
                self.error(file, getattr(exc, "line", line), label,
                           "each exception needs a name")
                continue
            cur = by_name.get(exc["name"])
            if cur is not None:
                vals = exc.get("values") or []
                cur["values"] = list(cur.get("values") or []) + list(vals)
                continue
            if "fields" not in exc:
                self.error(file, getattr(exc, "line", line), label,
                           f"exception {exc['name']!r} needs fields")
                continue
            entry = dict(exc)
            entry["_line"] = getattr(exc, "line", line)
            d.exceptions.append(entry)
            by_name[exc["name"]] = entry


def _key_line(container: Any, key: str, default: Optional[int]) -> Optional[int]:
    if isinstance(container, LocatedDict):
        return container.key_lines.get(key, default)
    return default


def _allowed_text(kind: str) -> str:
    return ", ".join(f"{k}: {'|'.join(sorted(v))}" for k, v in _OVERRIDABLE[kind].items())


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for p in text.strip().split("."):
        try:
            parts.append(int(p))
        except ValueError:
            parts.append(0)
    if len(parts) == 1:  # old integer engine versions (e.g. 26) predate 0.x.y numbering
        return (0, parts[0], 0)
    return tuple(parts)


# --- resolution and compilation ---------------------------------------------------------------------

def _flatten_lists(reader: _Reader) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}

    def expand(name: str, stack: tuple[str, ...]) -> tuple[str, ...]:
        if name in out:
            return out[name]
        d = reader.lists[name]
        items: list[str] = []
        for it in d.items:
            if it in reader.lists and it not in stack:
                items.extend(expand(it, stack + (it,)))
            else:
                items.append(it)
        out[name] = tuple(items)
        return out[name]

    for name in reader.lists:
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


def compile_ruleset(reader: _Reader) -> RuleSet:
    out = reader.out
    lists = _flatten_lists(reader)
    macros: dict[str, Node] = {}
    for m in reader.macros.values():
        try:
            macros[m.name] = parse_condition(m.condition)
        except ConditionSyntaxError as exc:
            reader.error(m.file, m.line, f"macro {m.name!r}",
                         f"condition syntax: {exc.reason} at offset {exc.offset}: "
                         f"{_excerpt(m.condition, exc.offset)}")
    comp = Compiler(macros, lists)
    typed: dict[str, Compiler] = {}  # one compiler (and macro cache) per known evt.type
    derivers: dict[Optional[str], GuardDeriver] = {None: GuardDeriver(comp)}
    for d in sorted(reader.rules.values(), key=lambda r: r.order):
        label = f"rule {d.name!r}"

        def status(state: str, reason: str = "") -> None:
            out.statuses.append(RuleStatus(d.name, state, reason, d.file, d.line, d.ruleset))

        try:
            priority = Priority.parse(d.priority)
        except KeyError:
            reader.error(d.file, d.line, label, f"unknown priority {d.priority!r}")
            status("error", f"unknown priority {d.priority!r}")
            continue
        try:
            node = parse_condition(d.condition)
        except ConditionSyntaxError as exc:
            reader.error(d.file, d.line, label, f"condition syntax: {exc.reason} at offset "
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
            reader.warn(d.file, d.line, label, f"source {d.source!r} is not supported "
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
            reader.warn(d.file, d.line, label, f"skipped: {exc.reason}")
            status("skipped", exc.reason)
            continue
        except (CompileError, ConditionSyntaxError) as exc:
            reader.error(d.file, d.line, label, str(exc))
            status("error", str(exc))
            continue
        template = parse_output(d.output.strip())
        for problem in template.problems():
            reader.warn(d.file, d.line, label, f"{problem}; renders <NA>")
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
            reader.warn(d.file, d.line, label, "condition can never be true")
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
    """Read ``paths`` in order and compile; inspect ``.errors`` (or call raise_if_errors)."""
    reader = _Reader()
    for p in paths:
        reader.read_file(p)
    return compile_ruleset(reader)


def load_rules_text(texts: Sequence[tuple[str, str]]) -> RuleSet:
    """Like :func:`load_rules` for in-memory (name, yaml text) pairs (tests, API callers)."""
    reader = _Reader()
    for name, text in texts:
        reader.read_text(text, name, Path(name).stem)
    return compile_ruleset(reader)
