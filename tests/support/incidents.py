"""Agent-shaped raw records and falco_rules-shaped detections for the incidents tests, built
from semconv (docs/architecture.md#record-attributes, #detection-records)."""

from __future__ import annotations

import hashlib
import itertools
import time
from typing import Any, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs

from otelguard import semconv as S
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records, set_attrs

T0_NS = int(time.time()) * 10**9  # now: Loki keeps and finds recent records only
_seq = itertools.count(1)


def pod(name: str = "web-6d4b9c7f5-x2x9q", ns: str = "shop", cid: str = "c1",
        deployment: Optional[str] = "web", node: str = "node-1") -> dict[str, PyValue]:
    res: dict[str, PyValue] = {
        S.CONTAINER_ID: (cid * 64)[:64], S.K8S_POD_UID: f"uid-{name}", S.K8S_NAMESPACE_NAME: ns,
        S.K8S_POD_NAME: name, S.K8S_CONTAINER_NAME: "web", S.CONTAINER_IMAGE_NAME:
        "registry:5000/shop/web", S.HOST_NAME: node, S.K8S_NODE_NAME: node,
        S.STREAM: S.STREAM_EVENT}
    if deployment:
        res[S.K8S_DEPLOYMENT_NAME] = deployment
    return res


def trace(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def event(name: str, pid: int, trace_id: bytes, ppid: int = 1, t: int = 0,
          attrs: Optional[dict[str, PyValue]] = None) -> LogRecord:
    rec = LogRecord(event_name=name, time_unix_nano=T0_NS + t, trace_id=trace_id,
                    span_id=trace_id[:8])
    rec.severity_number = 9  # type: ignore[assignment]  # protobuf enum field takes an int
    base: dict[str, PyValue] = {S.PROCESS_PID: pid, S.PROCESS_PARENT_PID: ppid,
                                S.LOG_RECORD_UID: f"ev-{next(_seq)}"}
    set_attrs(rec.attributes, {**base, **(attrs or {})})
    return rec


def detection(trigger: LogRecord, rule: str, severity: int, tactic: str, technique: str,
              attrs: Optional[dict[str, PyValue]] = None) -> LogRecord:
    """As falco_rules writes one: the trigger's time and ids, evidence copied."""
    t = attrs_dict(trigger.attributes)
    rec = LogRecord(event_name=S.EV_DETECTION, time_unix_nano=trigger.time_unix_nano,
                    trace_id=trigger.trace_id, span_id=trigger.span_id)
    rec.severity_number = severity  # type: ignore[assignment]  # protobuf enum field takes an int
    rec.severity_text = {21: "CRITICAL", 17: "ERROR", 13: "WARNING", 10: "NOTICE"}[severity]
    rec.body.string_value = f"{rule} by {t.get(S.PROCESS_EXECUTABLE_PATH)!s}"
    set_attrs(rec.attributes, {
        S.SECURITY_RULE_NAME: rule, S.SECURITY_RULE_RULESET_NAME: "falco_rules",
        S.SECURITY_RULE_PRIORITY: rec.severity_text, S.THREAT_TACTIC_NAME: [tactic],
        S.THREAT_TECHNIQUE_ID: [technique], S.TRIGGER_RECORD_UID: t[S.LOG_RECORD_UID],
        S.TRIGGER_EVENT_NAME: trigger.event_name, S.LOG_RECORD_UID: f"det-{next(_seq)}",
        S.PROCESS_PID: t[S.PROCESS_PID], **(attrs or {})})
    return rec


def batch(resource: dict[str, PyValue], events: list[LogRecord],
          detections: list[LogRecord] = ()) -> ExportLogsServiceRequest:  # type: ignore[assignment]  # an empty tuple is a fine default sequence
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, resource)
    rl.scope_logs.add().log_records.extend(events)
    if detections:
        drl = req.resource_logs.add()
        drl.resource.CopyFrom(rl.resource)
        set_attrs(drl.resource.attributes, {S.STREAM: S.STREAM_DETECTION}, overwrite=True)
        drl.scope_logs.add().log_records.extend(detections)
    return req


def incidents(batches: list[Any]) -> list[tuple[dict[str, PyValue], dict[str, PyValue], LogRecord]]:
    """(resource attrs, record attrs, record) of every incident record in ``batches``."""
    out = []
    for b in batches:
        for rl, _, rec in iter_log_records(b):
            if rec.event_name == S.EV_INCIDENT:
                out.append((attrs_dict(rl.resource.attributes), attrs_dict(rec.attributes), rec))
    return out


def latest(batches: list[Any]) -> dict[str, tuple[dict[str, PyValue], LogRecord]]:
    """The highest version of each incident id."""
    best: dict[str, tuple[dict[str, PyValue], LogRecord]] = {}
    for _, attrs, rec in incidents(batches):
        iid = str(attrs[S.INCIDENT_ID])
        if iid not in best or int(best[iid][0][S.INCIDENT_VERSION]) < int(attrs[S.INCIDENT_VERSION]):  # type: ignore[arg-type]  # an int attribute
            best[iid] = (attrs, rec)
    return best


def resource_of(rl: ResourceLogs) -> dict[str, PyValue]:
    return attrs_dict(rl.resource.attributes)


def attack(ns: str, close: bool = False) -> list[Any]:
    """A shell reads /etc/shadow, then nc connects out (one process tree, trace ``trace(ns)``),
    through the real noise_control and incidents stages: what a processor would send on,
    the incident's version included (shut down at the end: the pending version leaves). With
    ``close`` the incident is also closed (idle for its 0.2 s window): a last, closed version."""
    from otelguard.processors import registry
    from otelguard.processors.incidents import Config
    from otelguard.processors.pipeline import Pipeline

    incidents = registry.create("incidents", Config(idle_seconds=0.2) if close else None)
    pipeline = Pipeline([("noise_control", registry.create("noise_control")),
                         ("incidents", incidents)])
    pipeline.start()
    res, tr = pod(name="web-7d9f-abcde", ns=ns), trace(ns)
    cat = event(S.EV_FILE_OPEN, 201, tr, ppid=200, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/bin/cat", S.PROCESS_COMMAND_LINE: "cat /etc/shadow",
        S.FILE_PATH: "/etc/shadow", S.FILE_OPEN_FLAGS: "O_RDONLY"})
    nc = event(S.EV_NETWORK_CONNECT, 202, tr, ppid=200, t=10**9, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc", S.NETWORK_PEER_ADDRESS: "203.0.113.9",
        S.NETWORK_PEER_PORT: 4444})
    out = [pipeline.process(batch(res, [cat], [detection(
        cat, "Read sensitive file untrusted", 13, "credential_access", "T1555")])).batch,
           pipeline.process(batch(res, [nc], [detection(
               nc, "Outbound connection to C2", 17, "command_and_control", "T1071")])).batch]
    if close:
        out += pipeline.flush()  # version 1, open
        time.sleep(0.3)
        out += pipeline.flush()  # idle past the window: version 2, closed
    return out + pipeline.shutdown()
