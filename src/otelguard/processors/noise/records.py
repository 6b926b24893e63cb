"""The records noise control writes itself: throttle start/stop and key space exhaustion.

All are detection records (``event_name`` ``otelguard.security.detection``) under a copy of a
detection Resource, so they take the detections' route (Collector, Loki, alerts). Each says in
``otelguard.detection.count`` how many received detections it stands for: 0 on a start record
(the detection that started the throttle is counted by the stop record), the exact number
suppressed on a stop record, 1 on an exhaustion record (it stands for itself).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber

from otelguard import semconv, telemetry
from otelguard.otlp.messages import PyValue, attrs_dict, set_attr, set_attrs

KEY_SPACE_EXHAUSTED = "Noise control key space exhausted"
_EXHAUSTED_PRIORITY = "ERROR"
_EXHAUSTED_SEVERITY = 17  # OTel ERROR, as detection maps Falco's ERROR


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def mark_passed(rec: LogRecord, seen_ns: int) -> None:
    """A detection that passes on its own stands for itself."""
    seen = iso(seen_ns)
    set_attrs(rec.attributes, {
        semconv.DETECTION_COUNT: 1, semconv.DETECTION_FIRST_SEEN: seen,
        semconv.DETECTION_LAST_SEEN: seen,
    })


class Released:
    """One record the stage wrote, with the Resource and scope it goes out under; ``rid`` names
    it in the journal until it is settled (forwarded or counted)."""

    __slots__ = ("resource", "scope", "record", "rid")

    def __init__(self, resource: ResourceLogs, scope: ScopeLogs, record: LogRecord,
                 rid: int = 0) -> None:
        self.resource = resource
        self.scope = scope
        self.record = record
        self.rid = rid

    @property
    def count(self) -> int:
        value = attrs_dict(self.record.attributes).get(semconv.DETECTION_COUNT)
        return value if isinstance(value, int) else 0


def shell(rl: ResourceLogs, sl: ScopeLogs) -> tuple[ResourceLogs, ScopeLogs]:
    """Copies of a Resource and scope without their records."""
    resource, scope = ResourceLogs(), ScopeLogs()
    resource.resource.CopyFrom(rl.resource)
    resource.schema_url = rl.schema_url
    scope.scope.CopyFrom(sl.scope)
    scope.schema_url = sl.schema_url
    return resource, scope


def throttle_record(evidence: LogRecord, state: str, key: str, count: int, first_ns: int,
                    last_ns: int) -> LogRecord:
    """A copy of ``evidence`` (a throttled detection) marked as the throttle's start or stop,
    with a uid of its own (a record re-emitted from the journal keeps it: duplicates are
    recognisable by ``log.record.uid``)."""
    rec = LogRecord()
    rec.CopyFrom(evidence)
    rec.observed_time_unix_nano = time.time_ns()
    set_attrs(rec.attributes, {
        semconv.LOG_RECORD_UID: str(uuid.uuid4()),
        semconv.DETECTION_COUNT: count,
        semconv.DETECTION_FIRST_SEEN: iso(first_ns),
        semconv.DETECTION_LAST_SEEN: iso(last_ns),
        semconv.NOISE_THROTTLE: state,
        semconv.NOISE_KEY: key,
    }, overwrite=True)
    return rec


def exhausted_record(rl: ResourceLogs, sl: ScopeLogs, key: str, max_keys: int,
                     evicted: int) -> Released:
    """The key space is full: ``key`` (from ``rl``'s workload) closed the oldest key early."""
    resource, scope = shell(rl, sl)
    set_attr(resource.resource.attributes, semconv.STREAM, semconv.STREAM_DETECTION,
             overwrite=True)
    now_ns = time.time_ns()
    rec = LogRecord(time_unix_nano=now_ns, observed_time_unix_nano=now_ns,
                    severity_number=SeverityNumber.ValueType(_EXHAUSTED_SEVERITY),
                    severity_text=_EXHAUSTED_PRIORITY, event_name=semconv.EV_DETECTION)
    rec.body.string_value = (
        f"{KEY_SPACE_EXHAUSTED}: {max_keys} keys held, the oldest closed early to admit "
        f"{key} ({evicted} closed early so far); repeats of closed keys pass again")
    attrs: dict[str, PyValue] = {
        semconv.SECURITY_RULE_NAME: KEY_SPACE_EXHAUSTED,
        semconv.SECURITY_RULE_PRIORITY: _EXHAUSTED_PRIORITY,
        semconv.DETECTION_COUNT: 1,
        semconv.DETECTION_FIRST_SEEN: iso(now_ns),
        semconv.DETECTION_LAST_SEEN: iso(now_ns),
        semconv.NOISE_KEY: key,
        semconv.LOG_RECORD_UID: str(uuid.uuid4()),
    }
    set_attrs(rec.attributes, attrs)
    res = attrs_dict(rl.resource.attributes)
    namespace = res.get(semconv.K8S_NAMESPACE_NAME)
    telemetry.detections.labels(
        rule=KEY_SPACE_EXHAUSTED, priority=_EXHAUSTED_PRIORITY, tactic="",
        k8s_namespace_name=namespace if isinstance(namespace, str) else "", workload="",
    ).inc()
    return Released(resource, scope, rec)
