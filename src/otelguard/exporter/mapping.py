"""The event -> OTLP mapping, shared by both encoders (protobuf objects and wire bytes).

One Resource per container (``container.id`` + ``k8s.pod.uid``) and one per host for host
processes, scope ``otelguard.ebpf``, one INFO LogRecord per event whose attributes are the event's
attrs plus the record basics every record promises (pid, syscall name and return value) when the
sensor left them out. The schema: docs/architecture.md#attribute-schema.
"""

from __future__ import annotations

from typing import Iterator

import otelguard
from otelguard import semconv
from otelguard.ebpf.events import UNRESOLVED_POD_UID, AttrValue, Event
from otelguard.exporter.settings import NodeIdentity
from otelguard.exporter.spans import ResourceKey

SCOPE_NAME = semconv.SCOPE_AGENT
SCOPE_VERSION = otelguard.__version__
SEVERITY_INFO = 9
SEVERITY_TEXT_INFO = "INFO"
HOST_RESOURCE: ResourceKey = ("", "")


def resource_key(ev: Event) -> ResourceKey:
    return (ev.container_id, ev.pod_uid)


def resource_attrs(key: ResourceKey, node: NodeIdentity) -> list[tuple[str, AttrValue]]:
    """Resource attributes in a stable order (golden files compare them)."""
    container_id, pod_uid = key
    unresolved = pod_uid == UNRESOLVED_POD_UID
    out: list[tuple[str, AttrValue]] = []
    if container_id:
        out.append((semconv.CONTAINER_ID, container_id))
    if pod_uid and not unresolved:
        out.append((semconv.K8S_POD_UID, pod_uid))
    out += [
        (semconv.K8S_NODE_NAME, node.node_name),
        (semconv.HOST_NAME, node.host_name),
    ]
    if node.host_id:
        out.append((semconv.HOST_ID, node.host_id))
    out += [(semconv.OS_TYPE, "linux"), (semconv.STREAM, semconv.STREAM_EVENT)]
    if unresolved:
        # neither a container's nor the host's: rules see container.id "unknown", never "host"
        out += [(semconv.CONTAINER_UNRESOLVED, True),
                (semconv.SERVICE_NAME, semconv.SERVICE_NAME_UNRESOLVED)]
    elif not container_id and not pod_uid:
        # One fixed service.name for every host process: Loki indexes service.name, and a
        # name per unit or binary would be a stream per process kind (docs/architecture.md#streams).
        out += [(semconv.HOST_PROCESS, True), (semconv.SERVICE_NAME, semconv.SERVICE_NAME_HOST)]
    if node.extra:  # OTEL_RESOURCE_ATTRIBUTES: never over an attribute set above
        present = {k for k, _ in out}
        out += [(k, v) for k, v in node.extra if k not in present]
    return out


def record_attrs(ev: Event) -> Iterator[tuple[str, AttrValue]]:
    """The record's attributes: Event.attrs as given, then the basics it lacks."""
    attrs = ev.attrs
    yield from attrs.items()
    if semconv.PROCESS_PID not in attrs:
        yield semconv.PROCESS_PID, ev.pid
    if ev.syscall and semconv.SYSCALL_NAME not in attrs:
        yield semconv.SYSCALL_NAME, ev.syscall
    if semconv.SYSCALL_RET not in attrs:
        yield semconv.SYSCALL_RET, ev.ret


def record_body(ev: Event) -> str:
    return ev.body or f"{ev.name} pid {ev.pid}"
