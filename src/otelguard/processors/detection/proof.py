"""Proof that a loaded rule fires and stays quiet: case files of hand-built OTLP records.

A case file (YAML list, one entry per rule of a ruleset; tests/processors/detection/cases/)
gives each rule that loads a ``match`` record that must fire it and a ``near_miss`` (merged
over ``match``; ``null`` deletes a key) that must not; ``before`` records are fed to the same
engine first (sequence rules); ``override`` is rules text loaded after the ruleset, as a user's
local rules file (for a rule whose default list or macro is a placeholder); a rule this sensor
cannot run is listed with ``cannot_run:`` and (part of) the reason. A record spec is
``{event, attrs, resource, time_ns}``; the default resource is a Kubernetes container,
``resource: host`` a host process, a mapping is merged over the container.

:func:`prove` runs a case file against the rules it is about and says, per rule, whether it
is proven; the rule-case tests and docs/falco-rules-coverage.md (coverage.py) both use it, so
"loaded" there means "shown to fire and to stay quiet". Cost: one engine per case (~1 ms).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.loader import load_rules, load_rules_text
from otelguard.processors.detection.ruleset import RuleSelection, RuleSet

CONTAINER_RESOURCE: dict[str, Any] = {
    S.CONTAINER_ID: "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa99887766554433221100",
    S.K8S_POD_UID: "0b7a6c1e-1f2d-4c3b-9a8e-7d6c5b4a3f21",
    S.K8S_NAMESPACE_NAME: "shop",
    S.K8S_POD_NAME: "web-7c9d8f-abcde",
    S.K8S_DEPLOYMENT_NAME: "web",
    S.CONTAINER_IMAGE_NAME: "docker.io/library/nginx:1.27",
    S.HOST_NAME: "node-1",
}
HOST_RESOURCE: dict[str, Any] = {S.HOST_NAME: "node-1", S.HOST_PROCESS: True}
BASE_TIME = 1_760_000_000_000_000_000
PROVEN_STATES = frozenset({"loaded", "disabled"})  # compiled: a case must show them fire


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def resource_of(spec: dict[str, Any]) -> dict[str, Any]:
    res = spec.get("resource", "container")
    if res == "host":
        return dict(HOST_RESOURCE)
    if res == "container":
        return dict(CONTAINER_RESOURCE)
    return merge(CONTAINER_RESOURCE, res)


def batch_of(*specs: dict[str, Any]) -> ExportLogsServiceRequest:
    """One ResourceLogs per spec (records of equal resources still get their own)."""
    req = ExportLogsServiceRequest()
    for i, spec in enumerate(specs):
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {k: v for k, v in resource_of(spec).items()})
        sl = rl.scope_logs.add()
        sl.scope.name = S.SCOPE_AGENT
        rec = sl.log_records.add()
        fill(rec, spec, i)
    return req


def fill(rec: LogRecord, spec: dict[str, Any], i: int = 0) -> None:
    rec.event_name = spec["event"]
    rec.time_unix_nano = int(spec.get("time_ns", BASE_TIME + i))
    rec.severity_number = 9  # type: ignore[assignment]  # protobuf enum field takes an int
    rec.trace_id = bytes.fromhex(spec.get("trace_id", "11" * 16))
    rec.span_id = bytes.fromhex(spec.get("span_id", "22" * 8))
    attrs = dict(spec.get("attrs", {}))
    attrs.setdefault(S.LOG_RECORD_UID, f"uid-{i}-{spec['event']}")
    set_attrs(rec.attributes, attrs)


def load_cases(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: a case file is a list of cases")
    return data


def near_miss_of(case: dict[str, Any]) -> Optional[dict[str, Any]]:
    nm = case.get("near_miss")
    return None if nm is None else merge(case["match"], nm)


@dataclass(frozen=True)
class Proof:
    """One rule of a ruleset and what its case showed."""

    rule: str
    state: str  # the rule's load state (loaded, disabled, cannot-run, ...)
    fires: Optional[bool]  # on its match record (None: no case)
    quiet: Optional[bool]  # on its near miss (None: no near miss)
    problem: str = ""  # why it is not proven ("" when proven or cannot-run as stated)

    @property
    def proven(self) -> bool:
        return not self.problem and self.state in PROVEN_STATES


class Prover:
    """Runs the cases of one ruleset: ``paths`` (loaded in order), whose rules from the files
    in ``own`` (default: the last path) the cases are about."""

    def __init__(self, paths: Sequence[Union[str, Path]], own: Sequence[Union[str, Path]] = ()):
        self.paths = [Path(p) for p in paths]
        self.own = {str(Path(p)) for p in (own or self.paths[-1:])}
        self.ruleset = load_rules(self.paths)
        self._with_override: dict[str, RuleSet] = {}

    def statuses(self) -> dict[str, str]:
        return {s.name: s.state for s in self.ruleset.statuses if s.file in self.own}

    def fired(self, case: dict[str, Any], spec: dict[str, Any], before: list[dict[str, Any]]
              ) -> list[str]:
        rs = self._ruleset_for(case)
        engine = RuleEngine(rs, selection=RuleSelection(enabled_rules=(case["rule"],)))
        for b in before:
            engine.evaluate(batch_of(b))
        return [d.rule.name for d in engine.evaluate(batch_of(spec))]

    def _ruleset_for(self, case: dict[str, Any]) -> RuleSet:
        override = case.get("override")
        if not override:
            return self.ruleset
        rs = self._with_override.get(override)
        if rs is None:
            texts = [(str(p), p.read_text()) for p in self.paths]
            rs = self._with_override[override] = load_rules_text(
                texts + [("override.yaml", override)])
        return rs

    def prove(self, cases: list[dict[str, Any]]) -> list[Proof]:
        """One :class:`Proof` per rule of the own files, and one per case naming no such rule."""
        states = self.statuses()
        by_rule = {c["rule"]: c for c in cases}
        out = []
        for name, state in states.items():
            out.append(self._prove_one(name, state, by_rule.get(name)))
        for name in by_rule.keys() - states.keys():
            out.append(Proof(name, "absent", None, None, "the case names no rule of the ruleset"))
        return out

    def _prove_one(self, name: str, state: str, case: Optional[dict[str, Any]]) -> Proof:
        if case is None:
            return Proof(name, state, None, None, f"{state} rule without a case")
        if state == "cannot-run":
            reason = next(s.reason for s in self.ruleset.statuses if s.name == name)
            want = str(case.get("cannot_run", ""))
            ok = bool(want) and want in reason
            return Proof(name, state, None, None,
                         "" if ok else f"cannot run ({reason}); the case says {want!r}")
        if state not in PROVEN_STATES:
            return Proof(name, state, None, None, f"state {state}")
        if "cannot_run" in case:
            return Proof(name, state, None, None, "the case says cannot run, but the rule loads")
        fires = name in self.fired(case, case["match"], case.get("before", []))
        near = near_miss_of(case)
        if near is None and "near_miss_before" not in case:
            return Proof(name, state, fires, None, "no near miss")
        before = case.get("near_miss_before", case.get("before", []))
        quiet = name not in self.fired(case, near or case["match"], before)
        problem = "" if fires and quiet else \
            "does not fire on its match" if not fires else "fires on its near miss"
        return Proof(name, state, fires, quiet, problem)
