"""Verified senders: the pod's own attributes replace the sender's claims, and a claim of a pod
on another node becomes a detection.

The receiver (processors/receiver/identity.py) marks each Resource ``otelguard.sender.verified``
from its node-token MAC and strips any such mark a sender set itself, so ``sender_node`` can
trust it. For a verified Resource whose pod the cache resolves, every ``k8s.*``,
``container.*`` (except the ``container.id`` lookup key) and ``otelguard.k8s.*`` attribute the
sender set is removed and the resolved set written instead (``service.name`` stays additive: an
SDK may set its own). Unverified Resources keep the "never overwrite" rule.

A verified Resource that names a pod by ``container.id`` or ``k8s.pod.uid`` which the API server
places on another node than the signing node cannot come from an honest agent: a pod never moves
between nodes, and an agent only sees its own node's cgroups. The Resource is kept (with the
pod's real attributes) and one detection is added per such Resource and request: rule
``Record claims a pod on another node``, priority CRITICAL (a node's credential is being used to
speak for another node's workloads; CRITICAL is never throttled, so each instance reaches the
backends), MITRE defense evasion, T1656 (Impersonation). Cost: one scan of the Resource's
attributes per verified Resource, nothing for unverified ones.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Optional

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from otelguard import semconv
from otelguard import telemetry
from otelguard.otlp.messages import set_attr, set_attrs

RULE = "Record claims a pod on another node"
RULESET = "otelguard_identity"
PRIORITY = "CRITICAL"
_SEVERITY = 21  # OTel FATAL, as detection maps Falco's CRITICAL
TACTIC = "defense_evasion"
TECHNIQUE = "T1656"
TAGS = ("k8s", "mitre_defense_evasion", TECHNIQUE)
_UUID = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{RULESET}/{RULE}"))
_DESCRIPTION = ("A Resource signed by one node's token names a pod (by container.id or "
                "k8s.pod.uid) that the API server schedules on another node: the node's agent "
                "or token is used to impersonate another node's workloads.")
_OWNED_PREFIXES = ("k8s.", "container.", "otelguard.k8s.")
_LOOKUP_KEYS = frozenset({semconv.CONTAINER_ID})


def sender_node(attrs: Any) -> Optional[str]:
    """The verified sending node of a Resource's attributes, else None."""
    node = ""
    verified = False
    for kv in attrs:
        if kv.key == semconv.SENDER_VERIFIED:
            verified = kv.value.bool_value
        elif kv.key == semconv.SENDER_NODE:
            node = kv.value.string_value
    return node if verified and node else None


def drop_claims(attrs: Any) -> None:
    """Remove the sender's ``k8s.*``/``container.*``/``otelguard.k8s.*`` claims (not the
    ``container.id`` lookup key): the resolved pod's attributes are written after."""
    for i in reversed(range(len(attrs))):
        key = attrs[i].key
        if key.startswith(_OWNED_PREFIXES) and key not in _LOOKUP_KEYS:
            del attrs[i]


def mismatch_detection(item: ResourceLogs | ResourceSpans, sender: str,
                       pod_node: str, via: str) -> ResourceLogs:
    """The detection for ``item`` (already enriched with its pod's real attributes) as a
    ResourceLogs of its own, marked ``otelguard.stream=detection`` like rule detections."""
    rl = ResourceLogs(schema_url=semconv.SEMCONV_SCHEMA_URL)
    rl.resource.CopyFrom(item.resource)
    set_attr(rl.resource.attributes, semconv.STREAM, semconv.STREAM_DETECTION, overwrite=True)
    sl = rl.scope_logs.add()
    sl.scope.name = semconv.SCOPE_PROCESSORS
    trigger = _first_record(item)
    now_ns = time.time_ns()
    rec = LogRecord(time_unix_nano=now_ns, observed_time_unix_nano=now_ns,
                    severity_number=SeverityNumber.ValueType(_SEVERITY),
                    severity_text=PRIORITY, event_name=semconv.EV_DETECTION)
    res = {kv.key: kv.value.string_value for kv in item.resource.attributes}
    pod = f"{res.get(semconv.K8S_NAMESPACE_NAME, '')}/{res.get(semconv.K8S_POD_NAME, '')}"
    rec.body.string_value = (f"{RULE}: node {sender} sent records of pod {pod} (by {via}), "
                             f"which runs on node {pod_node}")
    if trigger is not None:
        rec.trace_id = trigger.trace_id
        rec.span_id = trigger.span_id
    attrs: dict[str, Any] = {
        semconv.SECURITY_RULE_NAME: RULE,
        semconv.SECURITY_RULE_UUID: _UUID,
        semconv.SECURITY_RULE_CATEGORY: "k8s",
        semconv.SECURITY_RULE_DESCRIPTION: _DESCRIPTION,
        semconv.SECURITY_RULE_RULESET_NAME: RULESET,
        semconv.SECURITY_RULE_REFERENCE: "https://attack.mitre.org/techniques/T1656/",
        semconv.SECURITY_RULE_PRIORITY: PRIORITY,
        semconv.SECURITY_RULE_TAGS: list(TAGS),
        semconv.THREAT_TECHNIQUE_ID: [TECHNIQUE],
        semconv.THREAT_TACTIC_NAME: [TACTIC],
        semconv.SENDER_NODE: sender,
    }
    uid = ""
    if trigger is not None:
        attrs[semconv.TRIGGER_EVENT_NAME] = getattr(trigger, "event_name", "") or None
        uid = next((kv.value.string_value for kv in trigger.attributes
                    if kv.key == semconv.LOG_RECORD_UID), "")
        attrs[semconv.TRIGGER_RECORD_UID] = uid or None
    # Deterministic when the trigger has a uid (a retried request makes the same detection,
    # recognisable downstream and by noise control), as rule detections are.
    attrs[semconv.LOG_RECORD_UID] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{_UUID}/{sender}/{uid}")
                                        if uid else uuid.uuid4())
    set_attrs(rec.attributes, {k: v for k, v in attrs.items() if v is not None})
    sl.log_records.append(rec)
    namespace = res.get(semconv.K8S_NAMESPACE_NAME, "")
    telemetry.detections.labels(rule=RULE, priority=PRIORITY, tactic=TACTIC,
                                k8s_namespace_name=namespace, workload="").inc()
    return rl


def _first_record(item: ResourceLogs | ResourceSpans) -> Any:
    if isinstance(item, ResourceLogs):
        for sl in item.scope_logs:
            for rec in sl.log_records:
                return rec
        return None
    for ss in item.scope_spans:
        for span in ss.spans:
            return span
    return None
