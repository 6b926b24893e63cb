"""Interop: the official OTel Python SDK's OTLP gRPC and HTTP exporters send to the real service."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otelguard import semconv
from otelguard.processors.noise import Config as NoiseConfig
from otelguard.processors.noise import NoiseControl
from otelguard.otlp.messages import attrs_dict, iter_log_records, iter_spans

from tests.support.polling import wait_for

from .service_fixtures import Running, running_service

RESOURCE = Resource.create({
    semconv.SERVICE_NAME: "cart", semconv.CONTAINER_ID: "d" * 64,
    semconv.K8S_NAMESPACE_NAME: "shop", semconv.K8S_DEPLOYMENT_NAME: "cart",
})


def _emit_detections(exporter: LogRecordExporter, n: int, events: int) -> None:
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=512))
    logger = provider.get_logger(semconv.SCOPE_PROCESSORS)
    for i in range(events):
        logger.emit(body=f"exec #{i}", event_name=semconv.EV_PROCESS_EXEC,
                    attributes={semconv.PROCESS_PID: i})
    for i in range(n):
        logger.emit(body="shell in container", event_name=semconv.EV_DETECTION, attributes={
            semconv.SECURITY_RULE_NAME: "Terminal shell in container",
            semconv.PROCESS_EXECUTABLE_PATH: "/bin/bash", semconv.TRIGGER_RECORD_UID: f"u{i}"})
    assert provider.force_flush(10_000)
    provider.shutdown()


def _check_logs(run: Running, detections: int, events: int) -> None:
    # noise_control lets the first detection through at once; the repeats are throttled: a
    # start record, and a stop record counting them that the flush timer releases when the
    # window closes.
    wait_for(lambda: run.sink.log_record_count() == events + 3, what="events + 3 detections")
    records = [(attrs_dict(rl.resource.attributes), rec)
               for req in run.sink.logs for rl, _, rec in iter_log_records(req)]
    assert all(res[semconv.CONTAINER_ID] == "d" * 64 for res, _ in records)
    found = [attrs_dict(rec.attributes) for _, rec in records
             if rec.event_name == semconv.EV_DETECTION]
    assert sorted(a[semconv.DETECTION_COUNT] for a in found) == [0, 1, detections - 1]
    stop = next(a for a in found if a.get(semconv.NOISE_THROTTLE) == semconv.NOISE_THROTTLE_STOP)
    assert stop[semconv.DETECTION_COUNT] == detections - 1
    assert stop[semconv.TRIGGER_RECORD_UID] == f"u{detections - 1}"  # the last repeat
    assert stop[semconv.DETECTION_FIRST_SEEN] <= stop[semconv.DETECTION_LAST_SEEN]
    assert sum(1 for _, r in records if r.event_name == semconv.EV_PROCESS_EXEC) == events


def _noise() -> list[tuple[str, NoiseControl]]:
    return [("noise_control", NoiseControl(NoiseConfig(window_seconds=0.5, burst=1)))]


def test_sdk_grpc_logs_arrive_with_pipeline_applied() -> None:
    with running_service(_noise()) as run:
        exporter = GrpcLogExporter(endpoint=run.grpc_endpoint, insecure=True, timeout=10)
        _emit_detections(exporter, n=7, events=5)
        _check_logs(run, detections=7, events=5)


def test_sdk_grpc_gzip_logs_arrive() -> None:
    with running_service(_noise()) as run:
        exporter = GrpcLogExporter(endpoint=run.grpc_endpoint, insecure=True, timeout=10,
                                   compression=grpc.Compression.Gzip)
        _emit_detections(exporter, n=4, events=3)
        _check_logs(run, detections=4, events=3)


@pytest.mark.parametrize("compression", [HttpCompression.NoCompression, HttpCompression.Gzip])
def test_sdk_http_logs_arrive_with_pipeline_applied(compression: HttpCompression) -> None:
    with running_service(_noise()) as run:
        exporter = HttpLogExporter(endpoint=f"{run.http_url}/v1/logs", timeout=10,
                                   compression=compression)
        _emit_detections(exporter, n=6, events=4)
        _check_logs(run, detections=6, events=4)


def _emit_spans(exporter: SpanExporter, n: int) -> None:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer(semconv.SCOPE_AGENT)
    for i in range(n):
        with tracer.start_as_current_span(f"exec sh #{i}") as span:
            span.set_attribute(semconv.PROCESS_PID, i)
    assert provider.force_flush(10_000)
    provider.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_spans_arrive(protocol: str) -> None:
    with running_service(_noise()) as run:
        exporter: SpanExporter
        if protocol == "grpc":
            exporter = GrpcSpanExporter(endpoint=run.grpc_endpoint, insecure=True, timeout=10)
        else:
            exporter = HttpSpanExporter(endpoint=f"{run.http_url}/v1/traces", timeout=10)
        _emit_spans(exporter, 9)
        wait_for(lambda: run.sink.span_count() == 9, what="9 spans")
        spans = [s for req in run.sink.traces for _, s in iter_spans(req)]
        assert sorted(attrs_dict(s.attributes)[semconv.PROCESS_PID] for s in spans) == list(range(9))
        assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
