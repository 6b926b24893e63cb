"""OTLP batches for the processor tests: built from semconv keys, shaped like the agent's output."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard import semconv
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import PyValue, set_attrs

TESTDATA = Path(__file__).parent / "testdata"
CONTAINER = "c" * 64
T0 = 1_763_900_000_000_000_000


def golden_logs() -> ExportLogsServiceRequest:
    """The shared golden batch: raw events and detections from two containers."""
    return jsoncodec.decode_logs((TESTDATA / "golden_logs.json").read_bytes())


def golden_traces() -> ExportTraceServiceRequest:
    return jsoncodec.decode_traces((TESTDATA / "golden_traces.json").read_bytes())


def logs(
    n_events: int = 3,
    n_detections: int = 0,
    resource: Optional[dict[str, PyValue]] = None,
    rule: str = "Terminal shell in container",
    detection_attrs: Optional[dict[str, PyValue]] = None,
    t0: int = T0,
) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, resource or {
        semconv.CONTAINER_ID: CONTAINER, semconv.K8S_NAMESPACE_NAME: "shop",
        semconv.K8S_DEPLOYMENT_NAME: "cart", semconv.HOST_NAME: "node-1",
    })
    sl = rl.scope_logs.add()
    sl.scope.name = semconv.SCOPE_AGENT
    for i in range(n_events):
        rec = sl.log_records.add()
        rec.event_name = semconv.EV_PROCESS_EXEC
        rec.time_unix_nano = t0 + i
        rec.severity_number = 9
        rec.body.string_value = f"exec /bin/sh #{i}"
        set_attrs(rec.attributes, {
            semconv.PROCESS_PID: 1000 + i, semconv.PROCESS_EXECUTABLE_PATH: "/bin/sh",
            semconv.PROCESS_COMMAND_LINE: "sh -c id", semconv.LOG_RECORD_UID: f"ev-{i}",
        })
    for i in range(n_detections):
        rec = sl.log_records.add()
        rec.event_name = semconv.EV_DETECTION
        rec.time_unix_nano = t0 + 1000 + i
        rec.severity_number = 13
        rec.body.string_value = f"{rule} (#{i})"
        set_attrs(rec.attributes, {
            semconv.SECURITY_RULE_NAME: rule, semconv.PROCESS_EXECUTABLE_PATH: "/bin/sh",
            semconv.PROCESS_COMMAND_LINE: "sh -i", semconv.TRIGGER_RECORD_UID: f"ev-{i}",
            **(detection_attrs or {}),
        })
    return req


def traces(n_spans: int = 2) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    set_attrs(rs.resource.attributes, {semconv.CONTAINER_ID: CONTAINER,
                                       semconv.SERVICE_NAME: "cart"})
    ss = rs.scope_spans.add()
    ss.scope.name = semconv.SCOPE_AGENT
    for i in range(n_spans):
        span = ss.spans.add()
        span.trace_id = bytes([1] * 16)
        span.span_id = bytes([i + 1] * 8)
        span.name = "exec sh"
        span.start_time_unix_nano = T0 + i
        span.end_time_unix_nano = T0 + i + 10
        set_attrs(span.attributes, {semconv.PROCESS_PID: 1000 + i})
    return req


def write_goldens() -> None:
    """Regenerate the golden files (review the diff): python -m tests.processors.samples"""
    batch = logs(n_events=4, n_detections=3)
    other = logs(n_events=2, n_detections=2, resource={
        semconv.HOST_NAME: "node-1", semconv.HOST_PROCESS: True}, rule="Read sensitive file")
    batch.resource_logs.extend(other.resource_logs)
    (TESTDATA / "golden_logs.json").write_text(jsoncodec.encode(batch) + "\n")
    (TESTDATA / "golden_traces.json").write_text(jsoncodec.encode(traces(3)) + "\n")


if __name__ == "__main__":
    write_goldens()
