"""What loading rules files produces: the compiled rules, each rule's outcome and every problem
located by file and line (:class:`RuleSet`), and Falco's :class:`Priority` scale.

Built by :func:`~otelguard.processors.detection.loader.load_rules` (reader -> collector ->
compile step); read by the engine, the stage config and ``otelguard rules``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable, Mapping, Optional, Sequence

from otelguard.processors.detection import mitre
from otelguard.processors.detection.fields import EventView
from otelguard.processors.detection.output import OutputTemplate
from otelguard.processors.detection.parser import Node
from otelguard.processors.detection.prefilter import Guard
from otelguard.processors.errors import ConfigError, ConfigIssue

ENGINE_VERSION = (0, 57, 0)  # the Falco engine version whose rule language we implement


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
    state: str  # "loaded" | "disabled" | "cannot-run" | "skipped" | "error"
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
    enabled: bool = True  # False: ``enabled: false`` in its file (a selection may enable it)
    # proc.aexe / proc.aexepath used beyond the parent (condition or output): the stage state
    # then remembers exec'ed images per pid (state.py); empty: no tracking cost
    ancestor_images: frozenset[str] = frozenset()
    # the parsed condition (macros by name, lists substituted) and the compilers it was compiled
    # with (evt.type -> Compiler, None: the generic one): the engine generates its per-type
    # matchers from them (matcher.py); a rule without them runs its closures
    node: Optional[Node] = None
    compilers: Mapping[Optional[str], Any] = field(default_factory=dict)


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)  # loaded and enabled
    compiled: list[Rule] = field(default_factory=list)  # loaded, enabled or not, in rule order
    statuses: list[RuleStatus] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    required_engine_versions: list[tuple[str, str]] = field(default_factory=list)  # (file, ver)
    required_plugins: list[tuple[str, str, str]] = field(default_factory=list)  # (file, name, ver)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (file, sha256), in read order

    @property
    def revision(self) -> str:
        """The loaded files' content hash (12 hex): names the rule set in metrics and logs, and
        changes with any edit of any file read (docs/architecture.md#live-reload)."""
        h = hashlib.sha256()
        for file, digest in self.sources:
            h.update(f"{file}\0{digest}\n".encode())
        return h.hexdigest()[:12]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> None:
        if self.errors:
            raise RulesError(self.errors)

    def count(self, state: str) -> int:
        return sum(1 for s in self.statuses if s.state == state)

    def report_error(self, file: str, line: Optional[int], item: str, msg: str) -> None:
        self.errors.append(Diagnostic("error", file, line, item, msg))

    def report_warning(self, file: str, line: Optional[int], item: str, msg: str) -> None:
        self.warnings.append(Diagnostic("warning", file, line, item, msg))


@dataclass(frozen=True)
class RuleSelection:
    """Which loaded rules run, as Falco's ``rules:`` selection in falco.yaml and ``-D``/``-T``/
    ``-t`` do: rule names may hold ``*`` wildcards; tags match exactly. Applied in this order:
    disable by name, disable by tag, enable by name, enable by tag (an enable wins, so "disable
    ``*``, enable tag ``network``" runs only the network rules; an enable also turns on a rule
    that is ``enabled: false`` in its file). An entry that selects no rule is an error, so a
    misspelled name never leaves the rule running unnoticed."""

    disabled_rules: tuple[str, ...] = ()
    disabled_tags: tuple[str, ...] = ()
    enabled_rules: tuple[str, ...] = ()
    enabled_tags: tuple[str, ...] = ()

    def apply(self, compiled: Sequence[Rule]) -> tuple[list[Rule], list[str]]:
        """(the rules that run, in rule order; the entries that selected no rule)."""
        everything = list(compiled)
        on = {r.name: r.enabled for r in everything}
        unmatched: list[str] = []

        def select(entries: tuple[str, ...], what: str, hit: Callable[[Rule, str], bool],
                   value: bool) -> None:
            for entry in entries:
                names = [r.name for r in everything if hit(r, entry)]
                if not names:
                    unmatched.append(f"{what} {entry!r} matches no loaded rule")
                for n in names:
                    on[n] = value

        select(self.disabled_rules, "disabled_rules", _name_matches, False)
        select(self.disabled_tags, "disabled_tags", _has_tag, False)
        select(self.enabled_rules, "enabled_rules", _name_matches, True)
        select(self.enabled_tags, "enabled_tags", _has_tag, True)
        return [r for r in everything if on[r.name]], unmatched


def _name_matches(rule: Rule, pattern: str) -> bool:
    if "*" not in pattern:
        return rule.name == pattern
    rx = re.compile(".*".join(re.escape(p) for p in pattern.split("*")) + r"\Z", re.DOTALL)
    return rx.match(rule.name) is not None


def _has_tag(rule: Rule, tag: str) -> bool:
    return tag in rule.tags


class RulesError(ConfigError):
    """Rule files that do not load; every problem is listed with file and line."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        super().__init__([ConfigIssue(d.item, d.message, d.file, d.line) for d in diagnostics])
        self.diagnostics = tuple(diagnostics)
