"""Detections become spans in the trigger's trace (detection/spans.py), through the real service:
a Falco stable rule fires on an exec received over OTLP/gRPC and the next hop gets, besides the
detection record, a traces request with a ``detection <rule>`` span under the trigger's span."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.processors.detection.spans import detection_spans
from otelguard.otlp.messages import attrs_dict, iter_log_records, iter_spans, set_attrs
from otelguard.processors.default_pipeline import default_specs

from tests.support.endpoints import grpc_call
from tests.support.polling import wait_for

from ..service_fixtures import running_service
from .casefile import batch_of, load_cases

RULE = "Terminal shell in container"


def test_service_forwards_a_span_per_detection_in_the_trigger_trace() -> None:
    case = next(c for c in load_cases("stable_rules.yaml") if c["rule"] == RULE)
    batch = batch_of({**case["match"], "trace_id": "ab" * 16, "span_id": "cd" * 8})
    with running_service(specs=default_specs(None)) as run:
        code, _, _ = grpc_call(run.grpc_endpoint, batch.SerializeToString())
        assert code == grpc.StatusCode.OK
        wait_for(lambda: bool(run.sink.traces), what="the detection span")
        (det,) = [rec for req in run.sink.logs for _, _, rec in iter_log_records(req)
                  if rec.event_name == S.EV_DETECTION]
        spans = [(rs, sp) for req in run.sink.traces for rs, sp in iter_spans(req)]
    assert len(spans) == 1
    rs, span = spans[0]
    assert span.name == f"detection {RULE}"
    assert span.trace_id == bytes.fromhex("ab" * 16) and span.parent_span_id == bytes.fromhex("cd" * 8)
    assert len(span.span_id) == 8 and span.span_id != span.parent_span_id
    assert span.start_time_unix_nano == span.end_time_unix_nano == det.time_unix_nano
    attrs = attrs_dict(span.attributes)
    assert attrs == attrs_dict(det.attributes) and attrs[S.SECURITY_RULE_NAME] == RULE
    assert attrs_dict(rs.resource.attributes)[S.STREAM] == S.STREAM_DETECTION


def test_only_detection_records_with_trace_context_become_spans() -> None:
    req = ExportLogsServiceRequest()
    events = req.resource_logs.add()                     # a raw event stream: never a span
    set_attrs(events.resource.attributes, {S.STREAM: S.STREAM_EVENT})
    ev = events.scope_logs.add().log_records.add()
    ev.event_name, ev.trace_id, ev.span_id = S.EV_DETECTION, b"\x01" * 16, b"\x02" * 8
    dets = req.resource_logs.add()
    set_attrs(dets.resource.attributes, {S.STREAM: S.STREAM_DETECTION})
    sl = dets.scope_logs.add()
    no_ctx = sl.log_records.add()
    no_ctx.event_name = S.EV_DETECTION                   # no trace id: nothing to attach to
    ok = sl.log_records.add()
    ok.event_name, ok.trace_id, ok.span_id = S.EV_DETECTION, b"\x03" * 16, b"\x04" * 8
    set_attrs(ok.attributes, {S.LOG_RECORD_UID: "u-1"})
    again = detection_spans(req)
    out = detection_spans(req)
    assert out is not None and again == out              # deterministic span ids: retries dedupe
    (only,) = [sp for _, sp in iter_spans(out)]
    assert only.trace_id == b"\x03" * 16 and only.name == "detection"
    assert detection_spans(ExportLogsServiceRequest()) is None
