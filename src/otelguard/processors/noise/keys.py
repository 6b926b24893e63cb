"""What makes two detections "the same" for noise control, and which ones are never throttled."""

from __future__ import annotations

from typing import Hashable, Optional

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv
from otelguard.otlp.messages import PyValue

# Workload identity, most specific controller first (resource attributes set by k8s enrichment).
_WORKLOAD_KEYS = (
    semconv.K8S_DEPLOYMENT_NAME, semconv.K8S_STATEFULSET_NAME, semconv.K8S_DAEMONSET_NAME,
    semconv.K8S_CRONJOB_NAME, semconv.K8S_JOB_NAME, semconv.K8S_REPLICASET_NAME,
    semconv.K8S_POD_NAME,
)

# OTel severity FATAL (21..24): Falco's CRITICAL, ALERT and EMERGENCY (docs/architecture.md).
_SEVERITY_CRITICAL = 21
_CRITICAL_PRIORITIES = frozenset({"CRITICAL", "ALERT", "EMERGENCY"})

# (rule name, workload, the key fields' values in config order)
Key = tuple[str, str, tuple[Hashable, ...]]  # (rule, workload, the distinct values)


def workload_of(resource_attrs: dict[str, PyValue]) -> str:
    """Workload identity: namespace/controller name, else the container, else the host."""
    namespace = resource_attrs.get(semconv.K8S_NAMESPACE_NAME) or ""
    for key in _WORKLOAD_KEYS:
        value = resource_attrs.get(key)
        if value:
            return f"{namespace!s}/{value!s}"
    for key in (semconv.CONTAINER_ID, semconv.HOST_NAME):
        value = resource_attrs.get(key)
        if value:
            return f"{key}={value!s}"
    return ""


def _hashable(value: PyValue) -> Hashable:
    """A hashable stand-in for an attribute value (lists and maps as tuples): key material only."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def key_of(attrs: dict[str, PyValue], workload: str, fields: tuple[str, ...]) -> Key:
    rule = attrs.get(semconv.SECURITY_RULE_NAME)
    return (rule if isinstance(rule, str) else "", workload,
            tuple(_hashable(attrs.get(f)) for f in fields))


def describe(key: Key, fields: tuple[str, ...]) -> str:
    """The key as written on throttle records: ``rule | workload | field=value, ...``."""
    rule, workload, values = key
    shown = ", ".join(f"{f}={v!s}" for f, v in zip(fields, values) if v is not None)
    return f"{rule} | {workload} | {shown}"


def is_critical(rec: LogRecord, priority: Optional[PyValue]) -> bool:
    """CRITICAL or higher, by severity number or by the Falco priority word (either suffices)."""
    if int(rec.severity_number) >= _SEVERITY_CRITICAL:
        return True
    return isinstance(priority, str) and priority.upper() in _CRITICAL_PRIORITIES
