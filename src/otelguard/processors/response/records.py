"""What a policy matches on and what an action acts on, read from the detection and incident
records of a batch (keys: docs/architecture.md#detection-records, #incident-records).

The target is the Resource's pod, container and workload, the node, and the acting process and
network peer: from the detection's own evidence, else from its trigger record when that is in
the same batch (it usually is: detection appends to the trigger's batch).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict, get_attr
from otelguard.processors.incidents.processor import trigger_records
from otelguard.response.actions.base import Target
from otelguard.response.policy import Facts
from otelguard.response.request import Trigger

_WORKLOADS = ((S.K8S_DEPLOYMENT_NAME, "Deployment"), (S.K8S_STATEFULSET_NAME, "StatefulSet"),
              (S.K8S_DAEMONSET_NAME, "DaemonSet"), (S.K8S_CRONJOB_NAME, "CronJob"),
              (S.K8S_JOB_NAME, "Job"), (S.K8S_REPLICASET_NAME, "ReplicaSet"))


def _strs(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),) if value else ()


def _str(value: Any) -> Optional[str]:
    return str(value) if value not in (None, "") else None


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def target_of(res: Mapping[str, Any], facts: Mapping[str, Any]) -> Target:
    kind = name = None
    for key, k in _WORKLOADS:
        if res.get(key):
            kind, name = k, str(res[key])
            break
    # the pod's node, else the node whose token signed the Resource (the agent that saw it),
    # else the host's name: where node actions run (NodeExecutor takes its own node's requests)
    verified_node = res.get(S.SENDER_NODE) if res.get(S.SENDER_VERIFIED) is True else None
    return Target(
        node=_str(res.get(S.K8S_NODE_NAME) or verified_node or res.get(S.HOST_NAME)),
        namespace=_str(res.get(S.K8S_NAMESPACE_NAME)), pod=_str(res.get(S.K8S_POD_NAME)),
        pod_uid=_str(res.get(S.K8S_POD_UID)), container_id=_str(res.get(S.CONTAINER_ID)),
        workload_kind=kind, workload_name=name, pid=_int(facts.get(S.PROCESS_PID)),
        process_creation_time=_str(facts.get(S.PROCESS_CREATION_TIME)),
        executable=_str(facts.get(S.PROCESS_EXECUTABLE_PATH)),
        peer_address=_str(facts.get(S.NETWORK_PEER_ADDRESS)),
        peer_port=_int(facts.get(S.NETWORK_PEER_PORT)))


def _labels(res: Mapping[str, Any]) -> dict[str, str]:
    n = len(S.K8S_POD_LABEL_PREFIX)
    return {k[n:]: str(v) for k, v in res.items() if k.startswith(S.K8S_POD_LABEL_PREFIX)}


def findings(batch: ExportLogsServiceRequest, detections: bool, incidents: bool
             ) -> Iterator[tuple[Facts, Trigger, Target]]:
    """One (facts, trigger, target) per detection record (throttle records left out: they
    repeat one already seen) and per incident record of the batch."""
    found = []
    wanted: set[str] = set()
    for rl in batch.resource_logs:
        stream = get_attr(rl.resource.attributes, S.STREAM)
        if not ((stream == S.STREAM_DETECTION and detections)
                or (stream == S.STREAM_INCIDENT and incidents)):
            continue
        res = attrs_dict(rl.resource.attributes)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                if rec.event_name not in (S.EV_DETECTION, S.EV_INCIDENT):
                    continue
                attrs = attrs_dict(rec.attributes)
                if attrs.get(S.NOISE_THROTTLE) or attrs.get(S.NOISE_KEY):
                    continue
                trig = attrs.get(S.TRIGGER_RECORD_UID)
                if isinstance(trig, str) and trig and S.PROCESS_PID not in attrs:
                    wanted.add(trig)
                found.append((res, rec, attrs))
    triggers = trigger_records(batch, wanted) if wanted else {}
    for res, rec, attrs in found:
        trace = rec.trace_id.hex() if rec.trace_id else ""
        if rec.event_name == S.EV_INCIDENT:
            iid = str(attrs.get(S.INCIDENT_ID, ""))
            facts = Facts("incident", incident_severity=str(attrs.get(S.INCIDENT_SEVERITY, "")),
                          techniques=_strs(attrs.get(S.INCIDENT_TECHNIQUES)),
                          namespace=str(res.get(S.K8S_NAMESPACE_NAME, "")),
                          pod_labels=_labels(res))
            cited = [e for e in _strs(attrs.get(S.INCIDENT_EVIDENCE)) if len(e) != 32]
            trigger = Trigger("incident", iid, str(attrs.get(S.INCIDENT_TITLE, "")),
                              facts.incident_severity, iid, tuple(cited),
                              (trace,) if trace else ())
            yield facts, trigger, target_of(res, {})
            continue
        rule = str(attrs.get(S.SECURITY_RULE_NAME, ""))
        facts = Facts("detection", rule=rule, tags=_strs(attrs.get(S.SECURITY_RULE_TAGS)),
                      priority=str(attrs.get(S.SECURITY_RULE_PRIORITY, rec.severity_text)),
                      techniques=_strs(attrs.get(S.THREAT_TECHNIQUE_ID)),
                      anomaly_kind=str(attrs.get(S.ANOMALY_KIND, "")),
                      namespace=str(res.get(S.K8S_NAMESPACE_NAME, "")), pod_labels=_labels(res))
        uid = str(attrs.get(S.LOG_RECORD_UID, ""))
        trigger = Trigger("detection", uid, rule, facts.priority, "", (uid,) if uid else (),
                          (trace,) if trace else ())
        evidence = {**triggers.get(str(attrs.get(S.TRIGGER_RECORD_UID, "")), {}), **attrs}
        yield facts, trigger, target_of(res, evidence)
