"""Response policies as code: ``kind: ResponsePolicy`` YAML documents (docs/response.md#policies).

A file holds one or more documents (``---``); a directory's ``*.yaml``/``*.yml`` files are read
in name order, as rules are. Policies are read with the one config loader, so an unknown key, a
bad value, an unknown action or a duplicate name is an error with file:line, and every problem
of every file is reported at once (:class:`~otelguard.config.ConfigError`). Policies are
evaluated in load order; the first that matches a detection or incident wins unless it says
``continue: true``.

A policy's revision is the SHA-256 of its canonical JSON (12 hex): a request records the
revision it was made under, so an edit after a proposal is visible in the request and the
audit trail.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Literal, Mapping, Optional, Sequence, Union

from otelguard.config import (
    Checks, ConfigError, ConfigIssue, LocatedDict, from_mapping, line_of, load_yaml_documents,
)
from otelguard.config import parse_duration
from otelguard.response.actions import registry

API_VERSION: Literal["otelguard.dev/v1alpha1"] = "otelguard.dev/v1alpha1"
KIND: Literal["ResponsePolicy"] = "ResponsePolicy"
Mode = Literal["advise", "approve", "auto"]
Source = Literal["detection", "incident"]
Priority = Literal["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
                   "INFORMATIONAL", "DEBUG"]
AnomalyKind = Literal["process", "untrusted_exec", "file_write", "file_read", "egress", "dns",
                      "listen", "capability"]
# Falco priority -> rank (higher is worse), for "at or above"
PRIORITY_RANK: Mapping[str, int] = {
    "DEBUG": 0, "INFORMATIONAL": 1, "INFO": 1, "NOTICE": 2, "WARNING": 3, "WARN": 3, "ERROR": 4,
    "CRITICAL": 5, "ALERT": 6, "EMERGENCY": 7}
OWN_NAMESPACE_DEFAULT = "otelguard"


def own_namespace() -> str:
    """The namespace otelguard runs in (its pod's service account), else ``otelguard``."""
    from otelguard.kube import own_namespace as of_pod
    return of_pod(OWN_NAMESPACE_DEFAULT)


@dataclass(frozen=True)
class Match:
    """What a policy responds to. Every criterion that is set must hold (lists: any item)."""

    source: Source = "detection"  # detection records or incident records
    # Rule names (fnmatch patterns) of the detection (detection only)
    rules: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # any of the rule's tags (detection only)
    priority: Optional[Priority] = None  # the detection's priority at or above (detection only)
    # ATT&CK technique ids; T1059 also matches its sub-techniques (T1059.004)
    techniques: tuple[str, ...] = ()
    # Profile deviations of these kinds (detection only; otelguard.anomaly.kind)
    anomaly_kinds: tuple[AnomalyKind, ...] = ()
    incident_severity: Optional[Priority] = None  # the incident's severity at or above (incident only)
    namespaces: tuple[str, ...] = ()  # the workload's namespace (fnmatch patterns)
    # Pod labels that must all be equal (only the labels k8s_attributes copies are known)
    pod_labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = Checks()
        if self.source == "incident":
            for name in ("rules", "tags", "priority", "anomaly_kinds"):
                if getattr(self, name):
                    checks.add(name, "applies to detections only (source: incident)")
        elif self.incident_severity is not None:
            checks.add("incident_severity", "applies to incidents only (set source: incident)")
        checks.done()


@dataclass(frozen=True)
class ActionStep:
    """One action of a policy, run in order after approval."""

    action: str  # an action name (docs/response.md#actions)
    params: dict[str, Any] = field(default_factory=dict)  # the action's parameters
    ignore_errors: bool = False  # a failure of this action does not stop the later ones


@dataclass(frozen=True)
class Spec:
    """A policy: what it matches, what it would do, and how much a human must be asked."""

    match: Match
    actions: tuple[ActionStep, ...]
    # advise: proposals only (never executed); approve: a human approves each request;
    # auto: executed at once (must be written explicitly)
    mode: Mode = "advise"
    dry_run: bool = False  # plan and record the diff, change nothing
    # Evaluate later policies too when this one matched (default: the first match wins)
    continue_: bool = False
    ttl: Optional[str] = None  # revert automatically this long after it was done (e.g. 1h)
    expire_after: str = "15m"  # a proposal not approved within this expires
    max_per_hour: int = 10  # requests this policy may create per hour; more are counted, not made
    # Namespaces never acted on; null: kube-system and otelguard's own namespace
    protected_namespaces: Optional[tuple[str, ...]] = None
    # Pods a workload must keep ready after a disruptive action (delete, scale)
    min_healthy_replicas: int = 1

    def __post_init__(self) -> None:
        checks = Checks()
        if not self.actions:
            checks.add("actions", "must name at least one action")
        for name in ("ttl", "expire_after"):
            value = getattr(self, name)
            if value is not None:
                try:
                    parse_duration(value)
                except ValueError as exc:
                    checks.add(name, str(exc))
        checks.at_least(self, 1, "max_per_hour")
        checks.at_least(self, 0, "min_healthy_replicas")
        checks.done()

    @property
    def ttl_seconds(self) -> Optional[float]:
        return parse_duration(self.ttl) if self.ttl else None

    @property
    def expire_seconds(self) -> float:
        return parse_duration(self.expire_after)

    def protected(self) -> tuple[str, ...]:
        if self.protected_namespaces is not None:
            return self.protected_namespaces
        return ("kube-system", own_namespace())


@dataclass(frozen=True)
class Metadata:
    name: str  # unique across all loaded policies

    def __post_init__(self) -> None:
        checks = Checks()
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            checks.add("name", f"must be non-empty letters, digits, '-', '_' or '.', "
                               f"got {self.name!r}")
        checks.done()


@dataclass(frozen=True)
class PolicyDocument:
    apiVersion: Literal["otelguard.dev/v1alpha1"]  # noqa: N815 - the file's key
    kind: Literal["ResponsePolicy"]
    metadata: Metadata
    spec: Spec


@dataclass(frozen=True)
class Policy:
    """A loaded policy: its document, where it came from, and its revision."""

    name: str
    spec: Spec
    revision: str  # 12 hex of the SHA-256 of the canonical document
    source: str  # file:line, for messages

    @property
    def mode(self) -> Mode:
        return self.spec.mode


@dataclass(frozen=True)
class Facts:
    """What a policy matches on, read from one detection or incident record."""

    source: Source
    rule: str = ""
    tags: tuple[str, ...] = ()
    priority: str = ""
    techniques: tuple[str, ...] = ()
    anomaly_kind: str = ""
    incident_severity: str = ""
    namespace: str = ""
    pod_labels: Mapping[str, str] = field(default_factory=dict)


def matches(match: Match, facts: Facts) -> bool:
    """Whether every criterion of ``match`` holds for ``facts``."""
    if match.source != facts.source:
        return False
    if match.rules and not any(fnmatch.fnmatchcase(facts.rule, p) for p in match.rules):
        return False
    if match.tags and not set(match.tags) & set(facts.tags):
        return False
    if match.priority is not None and \
            PRIORITY_RANK.get(facts.priority.upper(), -1) < PRIORITY_RANK[match.priority]:
        return False
    if match.incident_severity is not None and PRIORITY_RANK.get(
            facts.incident_severity.upper(), -1) < PRIORITY_RANK[match.incident_severity]:
        return False
    if match.techniques and not any(
            t == want or t.startswith(want + ".")
            for t in facts.techniques for want in match.techniques):
        return False
    if match.anomaly_kinds and facts.anomaly_kind not in match.anomaly_kinds:
        return False
    if match.namespaces and not any(fnmatch.fnmatchcase(facts.namespace, p)
                                    for p in match.namespaces):
        return False
    return all(facts.pod_labels.get(k) == v for k, v in match.pod_labels.items())


def revision_of(doc: PolicyDocument) -> str:
    canon = json.dumps(dataclasses.asdict(doc), sort_keys=True, separators=(",", ":"),
                       default=list)
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PolicySet:
    """The policies in evaluation order; ``revision`` hashes them all (for metrics and logs)."""

    policies: tuple[Policy, ...] = ()

    @property
    def revision(self) -> str:
        h = hashlib.sha256("|".join(f"{p.name}:{p.revision}" for p in self.policies).encode())
        return h.hexdigest()[:12]

    def get(self, name: str) -> Optional[Policy]:
        return next((p for p in self.policies if p.name == name), None)

    def matching(self, facts: Facts) -> list[Policy]:
        """The policies that respond to ``facts``: the first match, and more while they say
        ``continue``."""
        out = []
        for p in self.policies:
            if matches(p.spec.match, facts):
                out.append(p)
                if not p.spec.continue_:
                    break
        return out


def policy_files(paths: Sequence[Union[str, Path]]) -> list[Path]:
    """Files in order; a directory gives its ``*.yaml``/``*.yml`` files in name order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(c for c in p.iterdir() if c.suffix in (".yaml", ".yml")
                          and not c.name.startswith(".") and c.is_file())
        else:
            out.append(p)
    return out


def _rename_continue(raw: Any) -> Any:
    """``spec.continue`` is a Python keyword: the dataclass field is ``continue_``."""
    spec = raw.get("spec") if isinstance(raw, dict) else None
    if isinstance(spec, LocatedDict) and "continue" in spec:
        spec["continue_"] = spec.pop("continue")
        spec.key_lines["continue_"] = spec.key_lines.get("continue", spec.line or 0)
    elif isinstance(spec, dict) and "continue" in spec:
        spec["continue_"] = spec.pop("continue")
    return raw


def _issue(issue: ConfigIssue) -> ConfigIssue:
    return dataclasses.replace(issue, path=issue.path.replace("continue_", "continue"),
                               message=issue.message.replace("continue_", "continue"))


def parse_policies(text: str, source: str,
                   known_actions: Optional[Collection[str]] = None) -> list[Policy]:
    """The policies of one file's text (every problem raised at once)."""
    return _parse(text, source, known_actions, [])


def _parse(text: str, source: str, known_actions: Optional[Collection[str]],
           issues: list[ConfigIssue]) -> list[Policy]:
    out: list[Policy] = []
    try:
        docs = load_yaml_documents(text, source)
    except ConfigError as exc:
        issues.extend(exc.issues)
        return out
    for i, raw in enumerate(docs):
        path = f"[{i}]" if len(docs) > 1 else ""
        line = getattr(raw, "line", None)
        known = known_actions if known_actions is not None else registry.ACTIONS
        issues += _action_issues(raw, path, source, known)
        try:
            doc = from_mapping(PolicyDocument, _rename_continue(raw), path=path, source=source,
                               line=line)
        except ConfigError as exc:
            issues.extend(_issue(x) for x in exc.issues)
            continue
        out.append(Policy(doc.metadata.name, doc.spec, revision_of(doc), f"{source}:{line}"))
    return out


def _action_issues(raw: Any, path: str, source: str,
                   known: Collection[str]) -> list[ConfigIssue]:
    """Action names not in ``known`` and bad parameters of registered actions, read from the
    raw document (reported even when other problems keep the document from building)."""
    spec = raw.get("spec") if isinstance(raw, dict) else None
    steps = spec.get("actions") if isinstance(spec, dict) else None
    out = []
    for j, step in enumerate(steps if isinstance(steps, list) else []):
        name = step.get("action") if isinstance(step, dict) else None
        if isinstance(name, str) and name not in known:
            out.append(ConfigIssue(
                f"{path}.spec.actions[{j}].action".lstrip("."),
                f"unknown action {name!r} (known: {', '.join(sorted(known)) or 'none'})",
                source, line_of(step, "action")))
        elif isinstance(name, str) and name in registry.ACTIONS:
            raw_params = step.get("params")
            try:
                registry.params(name, raw_params if isinstance(raw_params, dict) else None,
                                path=f"{path}.spec.actions[{j}].params".lstrip("."),
                                source=source, line=line_of(step, "params"))
            except ConfigError as exc:
                out += exc.issues
    return out


def load_policies(paths: Sequence[Union[str, Path]],
                  known_actions: Optional[Collection[str]] = None) -> PolicySet:
    """Every policy of ``paths`` in order, or one :class:`ConfigError` listing every problem.
    ``known_actions``: the action names a policy may use (default: the registry's); the
    parameters of registered actions are checked by their ``Params`` dataclass."""
    issues: list[ConfigIssue] = []
    policies: list[Policy] = []
    for f in policy_files(paths):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            issues.append(ConfigIssue("", f"cannot read policies: {exc}", str(f)))
            continue
        found: list[ConfigIssue] = []
        policies += _parse(text, str(f), known_actions, found)
        issues += sorted(found, key=lambda i: i.line or 0)  # in the order of the file
    seen: dict[str, Policy] = {}
    for p in policies:
        if p.name in seen:
            file, _, line = p.source.rpartition(":")
            issues.append(ConfigIssue("metadata.name", f"duplicate policy name {p.name!r} "
                                      f"(first at {seen[p.name].source})", file,
                                      int(line) if line.isdigit() else None))
        else:
            seen[p.name] = p
    if issues:
        raise ConfigError(issues)
    return PolicySet(tuple(policies))

