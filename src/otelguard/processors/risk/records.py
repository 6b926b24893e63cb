"""Findings as OTLP log records and as snapshot JSON (docs/architecture.md#risk-records).

A record: ``event_name`` ``otelguard.risk.finding``, severity from the finding's severity word
(critical 21, high 17, medium 13, low 10, else INFO 9), body = the finding's summary, under a
copy of the workload's latest Resource marked ``otelguard.stream=risk``."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, SeverityNumber
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

import otelguard
from otelguard import semconv as S
from otelguard.otlp.messages import set_attr
from otelguard.risk.model import SEVERITY_NUMBER, Finding


def iso(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z") if ns else ""


def record(finding: Finding, workload: str, now_ns: int) -> LogRecord:
    rec = LogRecord(time_unix_nano=now_ns, observed_time_unix_nano=now_ns,
                    event_name=S.EV_RISK_FINDING,
                    severity_number=SeverityNumber.ValueType(
                        SEVERITY_NUMBER.get(finding.severity, 9)))
    rec.severity_text = finding.severity.upper()
    rec.body.string_value = finding.summary
    kvs = rec.attributes
    set_attr(kvs, S.LOG_RECORD_UID, str(uuid.uuid4()))
    set_attr(kvs, S.RISK_ANALYSER, finding.analyser)
    set_attr(kvs, S.RISK_KIND, finding.kind)
    set_attr(kvs, S.RISK_SUBJECT, finding.subject)
    set_attr(kvs, S.RISK_STATE, finding.state)
    set_attr(kvs, S.RISK_SEVERITY, finding.severity)
    set_attr(kvs, S.RISK_WORKLOAD, workload)
    if finding.first_seen_ns:
        set_attr(kvs, S.RISK_FIRST_SEEN, iso(finding.first_seen_ns))
        set_attr(kvs, S.RISK_LAST_SEEN, iso(finding.last_seen_ns))
    if finding.evidence:
        set_attr(kvs, S.RISK_EVIDENCE, list(finding.evidence))
    for key, value in finding.attributes:
        set_attr(kvs, key, value)
    return rec


def resource_logs(resource: Resource, records: list[LogRecord]) -> ResourceLogs:
    rl = ResourceLogs(schema_url=S.SEMCONV_SCHEMA_URL)
    rl.resource.CopyFrom(resource)
    set_attr(rl.resource.attributes, S.STREAM, S.STREAM_RISK, overwrite=True)
    sl = rl.scope_logs.add()
    sl.scope.name = S.SCOPE_PROCESSORS
    sl.scope.version = otelguard.__version__
    sl.log_records.extend(records)
    return rl


def to_json(finding: Finding) -> dict[str, Any]:
    """One finding in a snapshot file (what ``otelguard risk show`` reads back)."""
    return {"analyser": finding.analyser, "kind": finding.kind, "subject": finding.subject,
            "state": finding.state, "severity": finding.severity, "summary": finding.summary,
            "first_seen": iso(finding.first_seen_ns), "last_seen": iso(finding.last_seen_ns),
            "evidence": list(finding.evidence),
            "attributes": {k: v for k, v in finding.attributes},
            **({"suggestion": finding.suggestion} if finding.suggestion else {})}
