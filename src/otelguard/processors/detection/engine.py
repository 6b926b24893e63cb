"""The rule engine: compiled rules indexed by event type, run over OTLP log batches in place.

``RuleEngine.from_files([...])`` loads and compiles (errors raise :class:`RulesError` with every
problem located); ``engine.evaluate(batch)`` returns one :class:`Detection` per (record, matching
rule) and ``engine.evaluate_and_append(batch)`` also adds them to the batch, grouped under a copy
of each trigger's Resource marked ``otelguard.stream=detection`` with scope
``otelguard.processors``. Detection records of earlier passes are never re-evaluated.

Cost per record: one EventView, one ``evt.type`` lookup, then the type's generated matcher
(:mod:`~otelguard.processors.detection.matcher`) over its guard groups (see
:mod:`~otelguard.processors.detection.prefilter`): one read and one set/prefix test per group of
rules sharing a guard field, and full conditions only where a guard passes. With the stable +
incubating rules a record reads 3-24 of its ~40 attributes (7 for an open), each by remembered
position (see :class:`~otelguard.processors.detection.fields.EventView`), or, for event names
whose records need their bytes anyway (exec, connect, DNS), from the flat record view walked
natively once per record (:mod:`~otelguard.processors.detection.fields.flat`);
docs/benchmarks.md has the figures. Building a detection record (~30 attributes) is ~30 µs, paid only on a match.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

import otelguard
from otelguard import semconv as S
from otelguard import telemetry
from otelguard.processors.detection.compiler import Compiler
from otelguard.processors.detection.fields import AttrLayouts, EventView, FlatRecords, event_type
from otelguard.processors.detection.fields.flat import NATIVE as FLAT_NATIVE
from otelguard.processors.detection.loader import load_rules, load_rules_text
from otelguard.processors.detection.matcher import Matcher, generate
from otelguard.processors.detection.prefilter import Member, TypePlan, plan
from otelguard.processors.detection.ruleset import (
    Diagnostic, Priority, Rule, RuleSelection, RuleSet, RulesError,
)
from otelguard.processors.detection.state import SOCKET_KEYS, DetectionState
from otelguard.otlp.messages import attrs_dict, set_attr, set_attrs

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
DEFAULT_RULE_FILES = (RULES_DIR / "falco_rules.yaml", RULES_DIR / "otelguard_rules.yaml")


@dataclass(frozen=True)
class Detection:
    rule: Rule
    record: LogRecord  # the detection LogRecord
    resource: Resource  # the trigger's Resource (not a copy)
    trigger: LogRecord


class RuleEngine:
    """Evaluates a :class:`RuleSet` (only its loaded rules) over log batches."""

    def __init__(self, ruleset: RuleSet, *, state: Optional[DetectionState] = None,
                 min_priority: Priority = Priority.DEBUG,
                 disabled_rules: Iterable[str] = (),
                 selection: Optional[RuleSelection] = None, policy_revision: str = "",
                 flat_view: bool = True) -> None:
        """``disabled_rules``: shorthand for ``selection.disabled_rules``. A selection entry
        that selects no rule raises :class:`RulesError` (a misspelled name is never silently
        ignored). ``policy_revision``: the policy tree the rules came from (docs/policy.md),
        stamped on each detection. ``flat_view=False``: read every record through upb (the
        reference the flat record view is tested against)."""
        ruleset.raise_if_errors()
        self.ruleset = ruleset
        self.policy_revision = policy_revision
        self.state = state if state is not None else DetectionState()
        sel = selection or RuleSelection()
        if disabled_rules:
            sel = replace(sel, disabled_rules=tuple(disabled_rules) + sel.disabled_rules)
        selected, unmatched = sel.apply(ruleset.compiled or ruleset.rules)
        if unmatched:
            raise RulesError([Diagnostic("error", "processors[].config", None, "", u)
                              for u in unmatched])
        self.rules = [r for r in selected if r.priority <= min_priority]
        self.state.images = frozenset().union(*(r.ancestor_images for r in self.rules))
        self._any: tuple[tuple[Rule, Callable[[EventView], bool]], ...] = tuple(
            (r, r.pred) for r in self.rules if r.event_types is None)
        types = {t for r in self.rules if r.event_types for t in r.event_types}
        # evt.type -> (rule, predicate specialised for that type), in rule order
        self._index: dict[Optional[str], tuple[tuple[Rule, Callable[[EventView], bool]], ...]] = {
            t: tuple((r, r.preds.get(t, r.pred)) for r in self.rules
                     if r.event_types is None or t in r.event_types)
            for t in types
        }
        # evt.type -> the same rules, grouped behind their guards (see prefilter)
        getters = Compiler({})
        self._plans: dict[Optional[str], TypePlan] = {
            t: plan([(i, r, pred, r.guards[t] if t in r.guards else r.guards.get(None, ()))
                     for i, (r, pred) in enumerate(rules)], getters)
            for t, rules in self._index.items()
        }
        self._any_plan = plan([(i, r, pred, r.guards.get(None, ()))
                               for i, (r, pred) in enumerate(self._any)], getters)
        # evt.type (None: types no rule names) -> the plan as one generated function
        # (matcher.py), built on the first record of the type (see _matcher)
        self._matchers: dict[Optional[str], Matcher] = {}
        self._num = 0
        self._layouts = AttrLayouts()
        # the flat record view: each record's wanted attributes read natively from its bytes
        self.flat: Optional[FlatRecords] = FlatRecords() if flat_view and FLAT_NATIVE else None
        self._evidence: dict[int, Any] = {}  # id(rule) -> its evidence keys' native picker
        self._scope_version = otelguard.__version__
        self.errors = 0

    @classmethod
    def from_files(cls, paths: Sequence[Union[str, Path]] = DEFAULT_RULE_FILES,
                   **kwargs: Any) -> "RuleEngine":
        return cls(load_rules(paths), **kwargs)

    @classmethod
    def from_text(cls, *texts: tuple[str, str], **kwargs: Any) -> "RuleEngine":
        return cls(load_rules_text(texts), **kwargs)

    def rules_for(self, evt_type: Optional[str]) -> tuple[Rule, ...]:
        return tuple(r for r, _p in self._index.get(evt_type, self._any))

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, batch: ExportLogsServiceRequest) -> list[Detection]:
        out: list[Detection] = []
        state = self.state
        for rl in batch.resource_logs:
            res = attrs_dict(rl.resource.attributes)
            if res.get(S.STREAM) == S.STREAM_DETECTION:
                continue
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    if rec.event_name == S.EV_DETECTION:
                        continue
                    self._num += 1
                    ev = EventView(rec, res, self._num, state, self._layouts, self.flat)
                    for rule in self.match(ev):
                        out.append(self._detection(rule, ev, rl))
        return out

    def match(self, ev: EventView) -> list[Rule]:
        """Feed one record to the state, return the rules it satisfies, in rule order (never
        raises). Rules behind a guard that fails are skipped: the guard is implied by them."""
        self.state.observe(ev)
        t = event_type(ev)
        m = self._matchers.get(t)
        hits = (m if m is not None else self._matcher(t))(ev)
        if not hits:
            return []
        if len(hits) > 1:
            hits.sort(key=lambda h: h[0])
        return [rule for _order, rule in hits]

    def warm(self) -> "RuleEngine":
        """Generate every type's matcher now (~0.3 s for the stable + incubating rules), so no
        record pays it; the stage does this when it loads rules (off the batch path, see
        processor.py). Engines built for one-off checks (proofs, tests) skip it."""
        for t in [*self._plans, None]:
            self._matcher(t)
        return self

    def _matcher(self, evt_type: Optional[str]) -> Matcher:
        """The generated matcher of ``evt_type``'s plan (the any-type plan for a type no rule
        names), generated on first use if :meth:`warm` did not (1-60 ms, execve the largest).
        A plan whose source cannot be generated runs through :meth:`_match_plan`."""
        key = evt_type if evt_type in self._plans else None
        m = self._matchers.get(key)
        if m is None:
            plan_ = self._plans[key] if key is not None else self._any_plan
            fn = generate(key, plan_, self._rule_error)
            m = self._matchers[key] = fn if fn is not None else self._plan_matcher(plan_)
        return m

    def _plan_matcher(self, plan_: TypePlan) -> Matcher:
        return lambda ev: self._match_plan(plan_, ev)

    def _match_plan(self, plan_: TypePlan, ev: EventView) -> list[tuple[int, Rule]]:
        """A plan run through its closures (what the generated matchers inline)."""
        hits: list[tuple[int, Rule]] = []
        if plan_.always:
            self._run(plan_.always, ev, hits)
        for group in plan_.groups:
            passed = False
            try:  # GuardGroup.passes, inlined (the hottest loop of the stage)
                for get, test in group.tests:
                    v = get(ev)
                    if v is not None and test(v):
                        passed = True
                        break
            except Exception:  # let the member rules meet (and count) the error themselves
                passed = True
            if passed:
                self._run(group.members, ev, hits)
        return hits

    def match_unguarded(self, ev: EventView) -> list[Rule]:
        """:meth:`match` without guards: every rule indexed for the type, in order. The
        reference the guarded path is tested against; not for production use (slower)."""
        self.state.observe(ev)
        return [rule for rule, pred in self._index.get(event_type(ev), self._any) if pred(ev)]

    def _run(self, members: tuple[Member, ...], ev: EventView, hits: list[tuple[int, Rule]]
             ) -> None:
        for order, rule, pred in members:
            try:
                if pred(ev):
                    hits.append((order, rule))
            except Exception:  # a rule bug must never stop the batch
                self._rule_error()

    def _rule_error(self) -> None:
        self.errors += 1
        telemetry.dropped.labels(stage="detection", reason="rule_error").inc()

    def view(self, record: LogRecord, resource_attrs: dict[str, Any]) -> EventView:
        """An EventView numbered by this engine (for callers driving :meth:`match`)."""
        self._num += 1
        return EventView(record, resource_attrs, self._num, self.state, self._layouts,
                         self.flat)

    def evaluate_and_append(self, batch: ExportLogsServiceRequest) -> list[Detection]:
        detections = self.evaluate(batch)
        if not detections:
            return detections
        groups: dict[int, tuple[Resource, list[LogRecord]]] = {}
        for d in detections:
            key = id(d.resource)
            if key not in groups:
                groups[key] = (d.resource, [])
            groups[key][1].append(d.record)
        for resource, records in groups.values():
            rl = batch.resource_logs.add()
            rl.resource.CopyFrom(resource)
            set_attr(rl.resource.attributes, S.STREAM, S.STREAM_DETECTION, overwrite=True)
            rl.schema_url = S.SEMCONV_SCHEMA_URL
            sl = rl.scope_logs.add()
            sl.scope.name = S.SCOPE_PROCESSORS
            sl.scope.version = self._scope_version
            sl.log_records.extend(records)
        return detections

    def _copy_evidence(self, rule: Rule, ev: EventView, rec: LogRecord) -> set[str]:
        """Append the trigger's attributes whose key is one of the rule's evidence keys to
        ``rec``, in the trigger's order; returns their keys. With the flat record view they are
        cut from the trigger's wire bytes natively and merged in one parse (~40 upb wrappers
        fewer per detection); otherwise, or on bytes the walk refuses, copied one by one."""
        keys = rule.evidence_keys
        if self.flat is not None and keys:
            picker = self._evidence.get(id(rule))
            if picker is None:
                picker = self._evidence[id(rule)] = self.flat.picker(keys)
            try:
                chunk, found = picker.select(ev.wire())
            except ValueError:
                pass
            else:
                if chunk:
                    rec.MergeFromString(chunk)
                return set(found)
        present = set()
        for kv in ev.record.attributes:
            if kv.key in keys:
                rec.attributes.add().CopyFrom(kv)
                present.add(kv.key)
        return present

    def _detection(self, rule: Rule, ev: EventView, rl: ResourceLogs) -> Detection:
        trig = ev.record
        rec = LogRecord()
        rec.time_unix_nano = trig.time_unix_nano
        rec.observed_time_unix_nano = time.time_ns()
        rec.severity_number = SeverityNumber.ValueType(rule.priority.otel)
        rec.severity_text = rule.priority.name
        rec.event_name = S.EV_DETECTION
        rec.trace_id = trig.trace_id
        rec.span_id = trig.span_id
        try:
            body = rule.output.render(ev)
            output_fields: Optional[dict[str, Any]] = rule.output.values(ev)
        except Exception:
            body, output_fields = rule.name, None
        rec.body.string_value = body
        trigger_uid = ev.attr(S.LOG_RECORD_UID)
        uid_seed = f"{rule.uuid}/{trigger_uid}" if trigger_uid else f"{rule.uuid}/{self._num}"
        attrs: dict[str, Any] = {
            S.SECURITY_RULE_NAME: rule.name,
            S.SECURITY_RULE_UUID: rule.uuid,
            S.SECURITY_RULE_CATEGORY: rule.category,
            S.SECURITY_RULE_DESCRIPTION: rule.desc,
            S.SECURITY_RULE_RULESET_NAME: rule.ruleset,
            S.SECURITY_RULE_VERSION: rule.version,
            S.POLICY_REVISION: self.policy_revision or None,
            S.SECURITY_RULE_REFERENCE: rule.mitre.technique_url() or None,
            S.SECURITY_RULE_PRIORITY: rule.priority.name,
            S.SECURITY_RULE_TAGS: list(rule.tags),
            S.SECURITY_RULE_OUTPUT_FIELDS: output_fields or None,
            S.THREAT_TECHNIQUE_ID: list(rule.mitre.technique_ids) or None,
            S.THREAT_TACTIC_NAME: list(rule.mitre.tactic_names) or None,
            S.TRIGGER_RECORD_UID: trigger_uid,
            S.TRIGGER_EVENT_NAME: trig.event_name,
            S.LOG_RECORD_UID: str(uuid.uuid5(uuid.NAMESPACE_OID, uid_seed)),
        }
        set_attrs(rec.attributes, attrs)
        keys = rule.evidence_keys
        present = self._copy_evidence(rule, ev, rec)
        # a dup record names no addresses: those of the socket it dup'ed (what the rule saw as
        # fd.sip etc.), so the detection cites its peer (response's block_peer acts on it)
        peer = {k: self.state.socket_attr(ev, k) for k in SOCKET_KEYS
                if k in keys and k not in present}
        if peer:
            set_attrs(rec.attributes, peer)
        res = ev.res
        workload = ""
        for k in (S.K8S_DEPLOYMENT_NAME, S.K8S_STATEFULSET_NAME, S.K8S_DAEMONSET_NAME,
                  S.K8S_CRONJOB_NAME, S.K8S_JOB_NAME):
            v = res.get(k)
            if isinstance(v, str) and v:
                workload = v
                break
        ns = res.get(S.K8S_NAMESPACE_NAME)
        telemetry.detections.labels(
            rule=rule.name, priority=rule.priority.name, tactic=rule.mitre.primary_tactic,
            k8s_namespace_name=ns if isinstance(ns, str) else "", workload=workload,
        ).inc()
        return Detection(rule, rec, rl.resource, trig)
