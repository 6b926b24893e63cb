"""What an analyser sees and what it says (docs/risk.md#the-model).

An :class:`Observation` is one raw event record reduced to what analysers read: the workload
(profiles' key, docs/profiles.md#workloads), the instance (pod uid, else container id, else host
name), the container id (to reach its root filesystem), the record's identity and time, and
its attributes as a plain mapping. The ``risk`` stage builds one per record whose event name
some analyser asked for, so analysers never touch protobufs.

A :class:`Finding` is one verdict about one subject of one workload, with the evidence that
made it: the ``log.record.uid`` of the records (bounded) and the first and last time seen.
``state`` is the verdict word (``executed``, ``loaded``, ``installed-only`` for packages;
``unused``, ``used`` for grants; ...), ``severity`` a word of :data:`SEVERITIES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from otelguard.otlp.messages import PyValue

SEVERITIES = ("critical", "high", "medium", "low", "none", "unknown")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # sort key: critical first
# OTel severity numbers of the records a finding becomes (docs/risk.md#records)
SEVERITY_NUMBER = {"critical": 21, "high": 17, "medium": 13, "low": 10, "none": 9,
                   "unknown": 9}


@dataclass(frozen=True)
class Observation:
    """One raw record as analysers see it (built by the ``risk`` stage, read-only)."""

    workload: str  # e.g. k8s/shop/Deployment/cart/web, host/node-1/unit/nginx.service
    instance: str  # pod uid, else container id, else host name
    container_id: str  # "" for a host process
    host: str  # host.name of the Resource
    event_name: str  # otelguard.process.exec, otelguard.file.open, ...
    time_unix_nano: int
    uid: str  # log.record.uid ("" when the sender set none)
    attributes: Mapping[str, Any]  # the record's attributes (key -> Python value)
    resource: Mapping[str, Any] = field(default_factory=dict)  # the Resource's attributes
    trace_id: str = ""  # the record's trace id (hex: its process tree), "" when none

    def get(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)


@dataclass(frozen=True)
class Finding:
    """One verdict about one subject of one workload."""

    analyser: str  # the analyser's name: packages, grants, reach
    kind: str  # package, vulnerability, capability, token, edge, ...
    subject: str  # unique within (workload, analyser, kind): "deb:libc6", "CVE-...|deb:libc6"
    state: str  # the verdict word (docs/risk.md)
    severity: str = "none"  # a word of SEVERITIES
    summary: str = ""  # one sentence a person reads (the record's body)
    first_seen_ns: int = 0  # 0: never seen (e.g. installed-only)
    last_seen_ns: int = 0
    evidence: tuple[str, ...] = ()  # log.record.uid of the records behind the verdict
    attributes: tuple[tuple[str, PyValue], ...] = ()  # more record attributes (semconv keys)
    suggestion: Optional[str] = None  # a change that would remove the risk (grants' diff)
    record: bool = True  # False: gauges and snapshot only, never a record (a used grant)

    def key(self) -> tuple[str, str, str]:
        return (self.analyser, self.kind, self.subject)

    def fingerprint(self) -> tuple[str, str]:
        """What makes a finding worth a new record: its state or severity changed (a later
        use of a package already in use updates the gauges and the snapshot, not the stream)."""
        return (self.state, self.severity)
