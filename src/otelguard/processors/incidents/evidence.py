"""The evidence model: what an incident knows, each fact tied to the record it came from.

A :class:`Step` is one distinct detection (rule + subject: process, file, peer, DNS name,
profile value) with the ``log.record.uid`` of the first detection record that said it (its
evidence id ``E<n>`` in the story), the trigger's ``log.record.uid`` and trace/span ids, and the
facts the story may name: taken from the detection record and, when it rode in the same batch,
from its trigger raw record (command lines, parent, ancestors; already redacted by the sensor).
Repeats of the same step (and noise control's throttle-stop records, which carry exact counts)
fold into ``count``. :class:`Place` is where it happened, from the detection's Resource.

A :class:`RiskCitation` is a risk finding record (the ``risk`` stage's) that bears on the
incident (``R<n>`` in the story; risks.py says when one bears).

Everything here is plain data so the journal can write it as JSON and the narrator can send it
as facts (docs/incidents.md#the-evidence-model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from otelguard import semconv as S

# record attribute -> Step.facts name (only these are ever told)
FACT_KEYS = {
    S.PROCESS_PID: "pid", S.PROCESS_PARENT_PID: "ppid",
    S.PROCESS_EXECUTABLE_PATH: "exe", S.PROCESS_EXECUTABLE_NAME: "exe_name",
    S.PROCESS_COMMAND_LINE: "cmdline", S.PROCESS_PARENT_EXECUTABLE_PATH: "parent_exe",
    S.PROCESS_PARENT_COMMAND_LINE: "parent_cmdline", S.PROCESS_USER_NAME: "user",
    S.PROCESS_USER_ID: "uid", S.FILE_PATH: "file", S.FILE_TARGET_PATH: "target_path",
    S.FILE_OPEN_FLAGS: "flags", S.NETWORK_PEER_ADDRESS: "peer", S.NETWORK_PEER_PORT: "port",
    S.NETWORK_TRANSPORT: "transport", S.DNS_QUESTION_NAME: "dns",
    S.PEER_K8S_POD_NAME: "peer_pod", S.PEER_K8S_NAMESPACE_NAME: "peer_namespace",
    S.PEER_K8S_WORKLOAD_NAME: "peer_workload", S.PEER_K8S_SERVICE_NAME: "peer_service",
    S.PTRACE_REQUEST: "ptrace", S.TARGET_PID: "target_pid", S.MEMFD_NAME: "memfd",
    S.CAPABILITY: "capability", S.PROCESS_EXE_FROM_MEMFD: "exe_from_memfd",
    S.PROCESS_EXE_UPPER_LAYER: "exe_upper_layer", S.PROCESS_EXE_DELETED: "exe_deleted",
    S.DUP_OLD_FD_TYPE: "dup_type", S.PROCESS_LINUX_CGROUP: "cgroup",
    S.PROCESS_ANCESTOR_PIDS: "ancestor_pids",
}
# Resource attribute -> Place field
PLACE_KEYS = {
    S.K8S_POD_NAME: "pod", S.K8S_NAMESPACE_NAME: "namespace", S.K8S_POD_UID: "pod_uid",
    S.CONTAINER_ID: "container_id", S.K8S_CONTAINER_NAME: "container",
    S.CONTAINER_IMAGE_NAME: "image", S.K8S_NODE_NAME: "node", S.HOST_NAME: "host",
    S.K8S_POD_SERVICE_ACCOUNT: "service_account", S.K8S_POD_PRIVILEGED: "privileged",
    S.K8S_POD_HOST_PID: "host_pid", S.K8S_POD_HOST_NETWORK: "host_network",
    S.K8S_POD_ADDED_CAPABILITIES: "added_capabilities",
}
WORKLOAD_KINDS = (
    ("Deployment", S.K8S_DEPLOYMENT_NAME), ("StatefulSet", S.K8S_STATEFULSET_NAME),
    ("DaemonSet", S.K8S_DAEMONSET_NAME), ("CronJob", S.K8S_CRONJOB_NAME),
    ("Job", S.K8S_JOB_NAME), ("ReplicaSet", S.K8S_REPLICASET_NAME),
)
_FOLD_FACTS = ("exe", "file", "target_path", "peer", "port", "dns", "ptrace", "target_pid",
               "memfd", "capability")


@dataclass
class Place:
    """Where the incident happens (the first detection's Resource)."""

    pod: str = ""
    namespace: str = ""
    pod_uid: str = ""
    container_id: str = ""
    container: str = ""
    image: str = ""
    workload_kind: str = ""
    workload_name: str = ""
    node: str = ""
    host: str = ""
    service_account: str = ""
    privileged: bool = False
    host_pid: bool = False
    host_network: bool = False
    added_capabilities: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, resource: dict[str, Any]) -> Place:
        p = cls(**{name: resource[key] for key, name in PLACE_KEYS.items()
                   if resource.get(key) not in (None, "")})
        for kind, key in WORKLOAD_KINDS:
            if resource.get(key):
                p.workload_kind, p.workload_name = kind, str(resource[key])
                break
        return p

    @property
    def in_kubernetes(self) -> bool:
        return bool(self.pod_uid or self.pod or self.container_id)


@dataclass
class Step:
    """One distinct detection of the incident, with its evidence (see module doc)."""

    eid: int  # E<eid> in the story
    uid: str  # log.record.uid of the first detection record of this step
    rule: str
    ruleset: str
    priority: str
    severity: int  # OTel severity_number
    time_ns: int
    last_ns: int
    trigger_uid: str = ""
    trigger_event: str = ""
    trace_id: str = ""  # hex
    span_id: str = ""  # hex
    count: int = 1  # detections folded into this step
    tactics: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    anomaly_kind: str = ""
    anomaly_value: str = ""
    profile: str = ""  # the behaviour profile's workload key, for profile deviations
    facts: dict[str, Any] = field(default_factory=dict)

    def fold_key(self) -> tuple[Any, ...]:
        return (self.rule, self.anomaly_value) + tuple(
            str(self.facts.get(k, "")) for k in _FOLD_FACTS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        return cls(**d)


def step_of(detection: dict[str, Any], trigger: Optional[dict[str, Any]], eid: int,
            time_ns: int, trace_id: str, span_id: str, severity: int,
            severity_text: str) -> Step:
    """A step from a detection record's attributes and, when known, its trigger's."""
    facts: dict[str, Any] = {}
    for source in (trigger or {}, detection):  # the detection's copy wins where both have it
        for key, name in FACT_KEYS.items():
            value = source.get(key)
            if value not in (None, "", []):
                facts[name] = value
    def text(key: str) -> str:
        value = detection.get(key)
        return str(value) if value not in (None, "") else ""

    def strings(key: str) -> list[str]:
        value = detection.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    return Step(
        eid=eid, uid=text(S.LOG_RECORD_UID), rule=text(S.SECURITY_RULE_NAME) or "unnamed rule",
        ruleset=text(S.SECURITY_RULE_RULESET_NAME),
        priority=(text(S.SECURITY_RULE_PRIORITY) or severity_text or "WARNING").upper(),
        severity=severity, time_ns=time_ns, last_ns=time_ns,
        trigger_uid=text(S.TRIGGER_RECORD_UID), trigger_event=text(S.TRIGGER_EVENT_NAME),
        trace_id=trace_id, span_id=span_id, tactics=strings(S.THREAT_TACTIC_NAME),
        techniques=strings(S.THREAT_TECHNIQUE_ID), tags=strings(S.SECURITY_RULE_TAGS),
        anomaly_kind=text(S.ANOMALY_KIND), anomaly_value=text(S.ANOMALY_VALUE),
        profile=text(S.PROFILE_WORKLOAD), facts=facts,
    )


@dataclass
class RiskCitation:
    """One risk fact as an incident tells it (plain data: journaled with the incident)."""

    rid: int  # R<rid> in the story
    uid: str  # log.record.uid of the risk record
    kind: str  # vulnerability | capability | token | edge
    subject: str
    state: str
    severity: str
    summary: str  # the risk record's body
    how: str  # executed | loaded | exercised | granted | connected (what ties it to the steps)
    steps: list[int] = field(default_factory=list)  # eids of the steps it bears on
    facts: dict[str, Any] = field(default_factory=dict)  # vulnerability id, package, target...

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RiskCitation:
        return cls(**d)
