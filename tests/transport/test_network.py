"""OTLP/gRPC and OTLP/HTTP transports against real receivers on loopback."""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.otlp_http import OtlpHttpTransport, parse_retry_after
from otelguard.transport.security import INSECURE_CLIENT
from tests.exporter.scenario import shell_session
from tests.transport.receivers import GrpcReceiver, HttpReceiver, free_port

NODE = NodeIdentity("n", "h", "i")


def _batch() -> tuple[bytes, ExportLogsServiceRequest]:
    b = OtlpBuilder(NODE, clock=lambda: 1)
    data = b.logs_bytes(shell_session())
    return data, ExportLogsServiceRequest.FromString(data)


@pytest.fixture
def receiver() -> Iterator[GrpcReceiver]:
    r = GrpcReceiver().start()
    yield r
    r.stop()


def test_grpc_sends_bytes_and_messages(receiver: GrpcReceiver) -> None:
    data, msg = _batch()
    t = OtlpGrpcTransport(receiver.endpoint, timeout_s=5, tls=INSECURE_CLIENT)
    assert t.export_logs(data).ok
    assert t.export_logs(msg).ok
    b = OtlpBuilder(NODE, clock=lambda: 1)
    b.logs(shell_session())
    traces = b.shutdown_traces()
    assert t.export_traces(traces).ok
    t.shutdown()
    assert receiver.logs == [msg, msg]
    assert receiver.traces == [traces]


def test_grpc_partial_success_is_reported(receiver: GrpcReceiver) -> None:
    receiver.reject = 3
    result = OtlpGrpcTransport(receiver.endpoint, tls=INSECURE_CLIENT).export_logs(_batch()[0])
    assert result.ok and result.rejected == 3 and result.error == "too old"


@pytest.mark.parametrize("code, retryable", [
    (grpc.StatusCode.UNAVAILABLE, True), (grpc.StatusCode.ABORTED, True),
    (grpc.StatusCode.INVALID_ARGUMENT, False), (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    (grpc.StatusCode.PERMISSION_DENIED, False),
])
def test_grpc_retryable_codes(receiver: GrpcReceiver, code: grpc.StatusCode, retryable: bool) -> None:
    receiver.fail_code = code
    result = OtlpGrpcTransport(receiver.endpoint, tls=INSECURE_CLIENT).export_logs(_batch()[0])
    assert not result.ok and result.retryable is retryable
    assert result.reason == code.name.lower() and code.name in result.error


def test_grpc_resource_exhausted_with_retry_info_is_retryable(receiver: GrpcReceiver) -> None:
    receiver.fail_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    receiver.retry_delay_s = 1.5
    result = OtlpGrpcTransport(receiver.endpoint, tls=INSECURE_CLIENT).export_logs(_batch()[0])
    assert not result.ok and result.retryable and result.retry_after_s == pytest.approx(1.5)


def test_grpc_endpoint_down_is_retryable() -> None:
    result = OtlpGrpcTransport(f"127.0.0.1:{free_port()}", timeout_s=2,
                               tls=INSECURE_CLIENT).export_logs(_batch()[0])
    assert not result.ok and result.retryable and result.reason == "unavailable"


def test_http_posts_protobuf() -> None:
    r = HttpReceiver()
    try:
        data, msg = _batch()
        t = OtlpHttpTransport(r.url + "/", tls=INSECURE_CLIENT)
        assert t.export_logs(data).ok and t.export_logs(msg).ok
        path, ctype, body = r.requests[0]
        assert (path, ctype) == ("/v1/logs", "application/x-protobuf")
        assert ExportLogsServiceRequest.FromString(body) == msg
        r.status, r.retry_after = 503, "7"
        res = t.export_logs(data)
        assert not res.ok and res.retryable and res.retry_after_s == 7.0 and res.reason == "http_503"
        r.status, r.retry_after = 400, None
        res = t.export_logs(data)
        assert not res.ok and not res.retryable and "HTTP 400" in res.error
        t.shutdown()
    finally:
        r.stop()
    down = OtlpHttpTransport(f"http://127.0.0.1:{free_port()}",
                             tls=INSECURE_CLIENT).export_logs(b"")
    assert not down.ok and down.retryable


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("garbage") is None and parse_retry_after("12") == 12.0
