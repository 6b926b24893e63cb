"""Replay a capture through a policy tree's rules, offline (``otelguard policy test``).

A capture is what ``--output jsonl:PATH`` writes: one OTLP/JSON export request per line
(docs/architecture.md#outputs). Log requests go through the falco_rules engine built from the
tree (rules + applied exceptions), in file order, with one detection state as the live stage
keeps, then, when the tree has profiles, through a profiles stage enforcing them with the
tree's profile exceptions (its deviations are detections too); detection records already in the capture (it was written after a pipeline) are skipped
by the engine, so only the tree's own detections are reported. Span lines are skipped. A
detection names its rule, priority and the trigger record's ``log.record.uid``, which the
capture keeps, so an expectation file can pin exactly which record must fire.

Expectation file (docs/policy.md#replay-tests)::

    detections:
      - rule: Read sensitive file untrusted
        record: 0f4c...          # optional: the trigger record's uid
        priority: WARNING        # optional

Every expected entry must match a distinct detection; detections left over are unexpected.
Cost: the engine's per record (~tens of µs) plus JSON decoding (~30 µs per record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO, Union

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.config import from_mapping, read_yaml_file
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.policy.tree import PolicyTree
from otelguard.processors.profiles import Config as ProfilesConfig
from otelguard.processors.profiles import ProfilesStage


class ReplayError(Exception):
    """The capture cannot be read (named with file:line)."""


@dataclass(frozen=True)
class Found:
    rule: str
    priority: str
    record: str  # the trigger's log.record.uid ("" when the capture had none)


@dataclass
class Replayed:
    records: int = 0
    detections: list[Found] = field(default_factory=list)


@dataclass(frozen=True)
class Expected:
    rule: str
    record: str = ""  # the trigger record's uid; empty: any record
    priority: str = ""  # empty: any priority

    def matches(self, d: Found) -> bool:
        return d.rule == self.rule and (not self.record or d.record == self.record) and (
            not self.priority or d.priority.upper() == self.priority.upper())

    def __str__(self) -> str:
        return " ".join([self.priority.upper() or "*", self.rule,
                         f"record={self.record or '*'}"])


@dataclass(frozen=True)
class Expectation:
    detections: tuple[Expected, ...] = ()


def load_expected(path: Union[str, Path]) -> list[Expected]:
    """Raises otelguard.config.ConfigError with file:line."""
    return list(from_mapping(Expectation, read_yaml_file(path), source=str(path)).detections)


def replay(tree: PolicyTree, capture: Union[str, Path]) -> Replayed:
    engine = RuleEngine(tree.ruleset)
    out = Replayed()
    try:
        fh = open(capture, encoding="utf-8")
    except OSError as exc:
        raise ReplayError(f"{capture}: cannot read capture: {exc.strerror or exc}") from exc
    profiles = _profiles_stage(tree)
    try:
        with fh:
            _replay_lines(fh, str(capture), engine, profiles, out)
    finally:
        if profiles is not None:
            profiles.shutdown()
    return out


def _profiles_stage(tree: PolicyTree) -> Optional[ProfilesStage]:
    """The profiles stage enforcing the tree's profiles and profile exceptions (learning, in
    memory only, for the workloads it has none of: nothing written, nothing reported)."""
    if not tree.profiles:
        return None
    stage = ProfilesStage(ProfilesConfig(policy_dir=str(tree.root),
                                         save_interval_seconds=86_400.0))
    stage.start()
    return stage


def _replay_lines(fh: TextIO, capture: str, engine: RuleEngine,
                  profiles: Optional[ProfilesStage], out: Replayed) -> None:
    for n, line in enumerate(fh, 1):
        if not line.strip():
            continue
        batch = _logs(line, f"{capture}:{n}")
        if batch is None:
            continue
        out.records += sum(len(sl.log_records) for rl in batch.resource_logs
                           for sl in rl.scope_logs
                           if attrs_dict(rl.resource.attributes).get(S.STREAM)
                           != S.STREAM_DETECTION)
        for d in engine.evaluate(batch):
            uid = attrs_dict(d.record.attributes).get(S.TRIGGER_RECORD_UID)
            out.detections.append(Found(d.rule.name, d.rule.priority.name,
                                        str(uid) if uid else ""))
        if profiles is not None:
            before = len(batch.resource_logs)
            profiles.process(batch)
            for rl in batch.resource_logs[before:]:  # the deviations it appended
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        a = attrs_dict(rec.attributes)
                        out.detections.append(Found(
                            str(a.get(S.SECURITY_RULE_NAME)), rec.severity_text,
                            str(a.get(S.TRIGGER_RECORD_UID) or "")))


def _logs(line: str, where: str) -> Optional[ExportLogsServiceRequest]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ReplayError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ReplayError(f"{where}: not an OTLP/JSON export request")
    if "resourceSpans" in obj:
        return None
    if "resourceLogs" not in obj:
        raise ReplayError(f"{where}: not an OTLP/JSON logs request (no resourceLogs)")
    try:
        batch = jsoncodec.from_dict(obj, ExportLogsServiceRequest())
    except jsoncodec.OtlpJsonError as exc:
        raise ReplayError(f"{where}: bad OTLP/JSON: {exc}") from exc
    assert isinstance(batch, ExportLogsServiceRequest)
    return batch


def compare(expected: list[Expected], found: list[Found]) -> tuple[list[Expected], list[Found]]:
    """(expected entries no detection matched, detections no entry matched); specific entries
    (with a record) are matched first so a wildcard never takes their detection."""
    left = list(found)
    missing: list[Expected] = []
    for e in sorted(expected, key=lambda e: (not e.record, not e.priority)):
        hit = next((i for i, d in enumerate(left) if e.matches(d)), None)
        if hit is None:
            missing.append(e)
        else:
            left.pop(hit)
    return missing, left
