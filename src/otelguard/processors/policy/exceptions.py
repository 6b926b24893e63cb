"""``exceptions/`` of a policy tree: reviewed, owned, expiring exceptions to Falco rules
(``kind: RuleException``, here) and to profile deviations (``kind: ProfileException``,
profile_exceptions.py).

One YAML document per exception (docs/policy.md#exceptions)::

    apiVersion: otelguard.dev/v1alpha1
    kind: RuleException
    metadata: {name: backup-reads-shadow}
    spec:
      owner: sre@example.com
      expires: 2027-03-31          # applies through that day (UTC), then stops applying
      reason: nightly backup reads /etc/shadow
      rule: Read sensitive file untrusted
      fields: [proc.name, fd.name]
      comps: [=, startswith]       # optional, Falco's default is = (in for a list value)
      values: [[backup-agent, /etc/shadow]]

Each one compiles to a Falco rule exception appended to the named rule
(``override: {exceptions: append}``), so matching is the engine's own exception semantics
(:mod:`otelguard.processors.detection.resolution`) and a bad field or comparison is reported as
Falco would. An expired exception is not compiled: it stops applying, with a warning at load
(:func:`active_items`) and the ``otelguard_policy_exceptions_expired`` gauge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

from otelguard.config import (
    Checks, ConfigError, ConfigIssue, LocatedDict, from_mapping, load_yaml_documents,
)
from otelguard.processors.detection.fields import (
    INVALID, UNAVAILABLE, FieldProblem, resolve,
)
from otelguard.processors.detection.parser import ConditionSyntaxError, parse_field_at
from otelguard.processors.detection.reader import Item
from otelguard.processors.policy.expiry import Expiring, check_owned, today_utc
from otelguard.processors.policy.profile_exceptions import (
    ProfileException, ProfileExceptionDocument,
)


@dataclass(frozen=True)
class Metadata:
    name: str  # unique across the tree; the Falco exception's name on the rule


@dataclass(frozen=True)
class Spec:
    owner: str  # who answers for it (a person or team address); required
    # the last day (YYYY-MM-DD, UTC) it applies; required: every exception ends
    expires: Any
    rule: str  # the Falco rule it applies to (must be loaded from rules/)
    fields: tuple[str, ...]  # Falco fields compared, as a rule's exceptions[].fields
    values: tuple[Any, ...]  # tuples of values, one per field (a list for in/pmatch comps)
    comps: tuple[str, ...] = ()  # comparison per field (default: Falco's)
    reason: str = ""  # why (shown in reviews and `policy validate`)

    def __post_init__(self) -> None:
        checks = Checks()
        check_owned(checks, self.owner, self.expires)
        if not self.fields:
            checks.add("fields", "needs at least one field")
        if self.comps and len(self.comps) != len(self.fields):
            checks.add("comps", f"has {len(self.comps)} entries for {len(self.fields)} fields")
        for i, v in enumerate(self.values):
            if not isinstance(v, list) or len(v) != len(self.fields):
                checks.add(f"values[{i}]", f"must be a list of {len(self.fields)} value(s), "
                           "one per field")
        if not self.values:
            checks.add("values", "needs at least one tuple of values")
        checks.done()


@dataclass(frozen=True)
class ExceptionDocument:
    apiVersion: Literal["otelguard.dev/v1alpha1"]  # noqa: N815 - the file's key
    kind: Literal["RuleException"]
    metadata: Metadata
    spec: Spec


@dataclass(frozen=True)
class RuleException(Expiring):
    """A loaded exception and where it was written."""

    name: str
    spec: Spec
    file: str
    line: Optional[int]

    def field_issues(self) -> list[ConfigIssue]:
        """Fields that are not Falco fields (or malformed), located here rather than on the
        rule they would break; a field this sensor lacks is left to the rule (cannot-run)."""
        out = []
        for i, text in enumerate(self.spec.fields):
            try:
                ref, end = parse_field_at(text, 0)
                problem = resolve(ref.name, ref.arg)[2] if ref.join is None else None
                if end != len(text):
                    problem = FieldProblem(f"not a field: {text!r}", INVALID)
            except ConditionSyntaxError as exc:
                problem = FieldProblem(f"not a field: {text!r} ({exc.reason})", INVALID)
            if problem is not None and problem.kind != UNAVAILABLE:
                out.append(ConfigIssue(f"spec.fields[{i}]", problem.reason, self.file,
                                       self.line))
        return out

    def item(self) -> Item:
        """The Falco rule document that appends this exception to its rule."""
        exc = {"name": self.name, "fields": [str(f) for f in self.spec.fields],
               "values": [_text(v) for v in self.spec.values]}
        if self.spec.comps:
            exc["comps"] = list(self.spec.comps)
        body = {"rule": self.spec.rule, "exceptions": [exc],
                "override": {"exceptions": "append"}}
        return Item("rule", self.spec.rule, body, self.file, self.line, Path(self.file).stem)


AnyException = Union[RuleException, ProfileException]
__all__ = ["AnyException", "ProfileException", "RuleException", "load_exceptions",
           "parse_exceptions", "today_utc"]


def _text(value: Any) -> Any:
    """Values as the rules reader gives them (plain scalars as text)."""
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_exceptions(text: str, source: str) -> tuple[list[AnyException], list[ConfigIssue]]:
    """The exceptions (RuleException or ProfileException, by ``kind``) of one file's text and
    every problem in it (file:line)."""
    out: list[AnyException] = []
    issues: list[ConfigIssue] = []
    try:
        docs = load_yaml_documents(text, source)
    except ConfigError as exc:
        return out, list(exc.issues)
    for i, raw in enumerate(docs):
        if raw is None:
            continue
        path = f"[{i}]" if len(docs) > 1 else ""
        line = raw.line if isinstance(raw, LocatedDict) else None
        try:
            if isinstance(raw, dict) and raw.get("kind") == "ProfileException":
                pdoc = from_mapping(ProfileExceptionDocument, raw, path=path, source=source,
                                    line=line)
                out.append(ProfileException(pdoc.metadata.name, pdoc.spec, source, line))
            else:
                doc = from_mapping(ExceptionDocument, raw, path=path, source=source, line=line)
                out.append(RuleException(doc.metadata.name, doc.spec, source, line))
        except ConfigError as exc:
            issues += exc.issues
    return out, issues


def load_exceptions(files: Sequence[Path]) -> tuple[list[AnyException], list[ConfigIssue]]:
    """Every exception of ``files`` in order (both kinds), duplicates of a name reported."""
    out: list[AnyException] = []
    issues: list[ConfigIssue] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ConfigIssue("", f"cannot read exceptions: {exc}", str(f)))
            continue
        found, bad = parse_exceptions(text, str(f))
        out += found
        issues += bad
    seen: dict[str, AnyException] = {}
    for e in out:
        first = seen.setdefault(e.name, e)
        if first is not e:
            issues.append(ConfigIssue("metadata.name", f"duplicate exception name {e.name!r} "
                                      f"(first at {first.file}:{first.line})", e.file, e.line))
    return out, issues
