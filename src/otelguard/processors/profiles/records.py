"""The detection records the ``profiles`` stage writes: deviations from approved profiles, and
reports about profiles themselves (tampered, partial).

Same shape as rule detections (docs/architecture.md#detection-records): ``event_name``
``otelguard.security.detection`` under a copy of the trigger's Resource marked
``otelguard.stream=detection``, scope ``otelguard.processors``, ``security_rule.*`` with ruleset
``otelguard_profiles``, MITRE technique and tactic, the trigger's uid and event name, the
trigger's evidence attributes, and the profile's own (``otelguard.anomaly.*``,
``otelguard.profile.*``). ``log.record.uid`` derives from the rule, the trigger's uid and the
value, so a retried request makes the same record (noise control then counts it once).
Building one costs ~30 µs, paid only on a deviation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber

from otelguard import semconv as S
from otelguard import telemetry
from otelguard.otlp.messages import set_attrs
from otelguard.processors.profiles.document import iso
from otelguard.processors.profiles.observe import (
    CAPABILITY, DNS, EGRESS, FILE_READ, FILE_WRITE, LISTEN, PROCESS, UNTRUSTED_EXEC,
)

RULESET = "otelguard_profiles"
TAMPERED = "Behaviour profile tampered"
PARTIAL = "Behaviour profile partial"
_SEVERITY = {"CRITICAL": 21, "ERROR": 17, "WARNING": 13, "NOTICE": 10}


@dataclass(frozen=True)
class Rule:
    name: str
    priority: str
    category: str
    tactic: str
    technique: str
    description: str

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{RULESET}/{self.name}"))

    @property
    def tags(self) -> list[str]:
        return ["profile", self.category, f"mitre_{self.tactic}", self.technique]


RULES = {
    PROCESS: Rule("Unexpected process launched", "ERROR", "process", "execution", "T1059",
                  "A process (executable, parent, argv shape) the workload's approved profile "
                  "does not list."),
    UNTRUSTED_EXEC: Rule("Unexpected process launched", "CRITICAL", "process",
                         "defense_evasion", "T1620",
                         "An executable from the container's writable layer, a memfd or a "
                         "deleted file: never part of a learned profile."),
    EGRESS: Rule("Unexpected outbound connection", "WARNING", "network",
                 "command_and_control", "T1071",
                 "A connection to a peer and port the workload's approved profile does not "
                 "list."),
    DNS: Rule("Unexpected DNS query", "WARNING", "network", "command_and_control",
              "T1071.004", "A DNS name the workload's approved profile does not list."),
    FILE_WRITE: Rule("Unexpected file write", "WARNING", "filesystem", "persistence", "T1565",
                     "A path written that the workload's approved profile does not list."),
    FILE_READ: Rule("Unexpected sensitive file read", "ERROR", "filesystem",
                    "credential_access", "T1552.001",
                    "A sensitive file (credentials, keys, the service-account token) the "
                    "workload's approved profile does not list."),
    LISTEN: Rule("Unexpected listening port", "WARNING", "network", "command_and_control",
                 "T1571", "A listening port the workload's approved profile does not list."),
    CAPABILITY: Rule("Unexpected capability used", "ERROR", "process", "privilege_escalation",
                     "T1068", "A capability check the workload's approved profile does not "
                     "list."),
}
_TAMPERED_RULE = Rule(TAMPERED, "CRITICAL", "process", "defense_evasion", "T1562.001",
                      "An approved profile whose spec no longer matches the content hash its "
                      "approval recorded: it is not enforced until approved again.")
_PARTIAL_RULE = Rule(PARTIAL, "WARNING", "process", "defense_evasion", "T1562.001",
                     "A profile reached its entry bounds while learning (a flood, or a "
                     "workload larger than the bounds): entries past them were not learned.")
# Attributes of the trigger copied into a deviation as evidence
EVIDENCE_KEYS = frozenset({
    S.PROCESS_PID, S.PROCESS_EXECUTABLE_PATH, S.PROCESS_COMMAND_LINE,
    S.PROCESS_PARENT_EXECUTABLE_PATH, S.PROCESS_PARENT_COMMAND_LINE, S.PROCESS_USER_ID,
    S.FILE_PATH, S.FILE_TARGET_PATH, S.FILE_OPEN_FLAGS, S.NETWORK_PEER_ADDRESS,
    S.NETWORK_PEER_PORT, S.NETWORK_TRANSPORT, S.NETWORK_LOCAL_PORT, S.DNS_QUESTION_NAME,
    S.CAPABILITY, S.PEER_K8S_NAMESPACE_NAME, S.PEER_K8S_WORKLOAD_NAME, S.PEER_K8S_SERVICE_NAME,
    S.PROCESS_EXE_UPPER_LAYER, S.PROCESS_EXE_FROM_MEMFD, S.PROCESS_EXE_DELETED,
})


@dataclass(frozen=True)
class ProfileFacts:
    """What a record says about the profile it was checked against."""

    workload: str
    state: str
    revision: int
    content_hash: str
    learning_ended: Optional[float]
    observations: int
    approved_by: str


def _base(rule: Rule, now_ns: int, body: str) -> LogRecord:
    rec = LogRecord(time_unix_nano=now_ns, observed_time_unix_nano=time.time_ns(),
                    severity_number=SeverityNumber.ValueType(_SEVERITY[rule.priority]),
                    severity_text=rule.priority, event_name=S.EV_DETECTION)
    rec.body.string_value = body
    return rec


def _rule_attrs(rule: Rule, facts: ProfileFacts) -> dict[str, Any]:
    return {
        S.SECURITY_RULE_NAME: rule.name, S.SECURITY_RULE_UUID: rule.uuid,
        S.SECURITY_RULE_CATEGORY: rule.category, S.SECURITY_RULE_DESCRIPTION: rule.description,
        S.SECURITY_RULE_RULESET_NAME: RULESET, S.SECURITY_RULE_VERSION: facts.content_hash[7:19],
        S.SECURITY_RULE_REFERENCE: "https://attack.mitre.org/techniques/"
        + rule.technique.replace(".", "/") + "/",
        S.SECURITY_RULE_PRIORITY: rule.priority, S.SECURITY_RULE_TAGS: rule.tags,
        S.THREAT_TECHNIQUE_ID: [rule.technique], S.THREAT_TACTIC_NAME: [rule.tactic],
        S.PROFILE_WORKLOAD: facts.workload, S.PROFILE_STATE: facts.state,
        S.PROFILE_REVISION: facts.revision, S.PROFILE_CONTENT_HASH: facts.content_hash,
        S.PROFILE_LEARNING_ENDED: iso(facts.learning_ended) if facts.learning_ended else None,
        S.PROFILE_OBSERVATIONS: facts.observations,
        S.PROFILE_APPROVED_BY: facts.approved_by or None,
    }


def _count(rule: Rule, namespace: str) -> None:
    telemetry.detections.labels(rule=rule.name, priority=rule.priority, tactic=rule.tactic,
                                k8s_namespace_name=namespace, workload="").inc()


def deviation(kind: str, value: str, trigger: LogRecord, trigger_uid: str, facts: ProfileFacts,
              nearest: list[str], entries: int, namespace: str) -> LogRecord:
    """The detection for one observation an enforcing profile does not allow."""
    rule = RULES[kind]
    rec = _base(rule, trigger.time_unix_nano or time.time_ns(),
                f"{rule.name}: {kind} {value} is not in the approved profile of "
                f"{facts.workload} (revision {facts.revision})")
    rec.trace_id, rec.span_id = trigger.trace_id, trigger.span_id
    attrs = _rule_attrs(rule, facts)
    seed = f"{rule.uuid}/{trigger_uid}/{kind}/{value}" if trigger_uid else None
    attrs.update({
        S.ANOMALY_KIND: kind, S.ANOMALY_VALUE: value, S.ANOMALY_NEAREST: nearest or None,
        S.PROFILE_ENTRIES: entries, S.TRIGGER_RECORD_UID: trigger_uid or None,
        S.TRIGGER_EVENT_NAME: trigger.event_name,
        S.LOG_RECORD_UID: str(uuid.uuid5(uuid.NAMESPACE_OID, seed) if seed else uuid.uuid4()),
    })
    set_attrs(rec.attributes, attrs)
    for kv in trigger.attributes:
        if kv.key in EVIDENCE_KEYS:
            rec.attributes.add().CopyFrom(kv)
    _count(rule, namespace)
    return rec


def about_profile(tampered: bool, facts: ProfileFacts, detail: str, namespace: str,
                  now_ns: Optional[int] = None) -> LogRecord:
    """A report about a profile itself: tampered (not enforced) or partial (bounds reached)."""
    rule = _TAMPERED_RULE if tampered else _PARTIAL_RULE
    rec = _base(rule, now_ns or time.time_ns(), f"{rule.name}: {facts.workload}: {detail}")
    attrs: dict[str, Any] = _rule_attrs(rule, facts)
    attrs[S.LOG_RECORD_UID] = str(uuid.uuid4())
    set_attrs(rec.attributes, attrs)
    _count(rule, namespace)
    return rec
