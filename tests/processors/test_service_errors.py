"""Bad input, backpressure and next-hop outages, over real gRPC and HTTP against the real service."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import socket
import threading
import time
from typing import Any, Callable, Optional

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from otelguard import semconv, telemetry
from otelguard.otlp import jsoncodec
from otelguard.processors import metrics
from otelguard.processors.config import ServiceSection
from otelguard.processors.noise import Config as NoiseConfig
from otelguard.processors.noise import NoiseControl
from otelguard.otlp.messages import count_records
from otelguard.processors.stage import Batch
from otelguard.transport.otlp_grpc import OtlpGrpcTransport

from . import samples
from .service_fixtures import post as _post
from .service_fixtures import running_service, wait_for

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _grpc_call(endpoint: str, body: bytes, method: str = LOGS,
               timeout: float = 10.0) -> tuple[grpc.StatusCode, bytes, Any]:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            resp, c = call.with_call(body, timeout=timeout)
            return grpc.StatusCode.OK, resp, c.trailing_metadata()
        except grpc.RpcError as exc:
            return exc.code(), exc.details().encode(), exc.trailing_metadata()


def _proto(port: int, body: bytes, **extra: str) -> tuple[int, bytes, dict[str, str]]:
    return _post(port, "/v1/logs", body, {"Content-Type": "application/x-protobuf", **extra})


def _requests(outcome: str, protocol: str) -> float:
    return metrics.requests.labels("logs", protocol, outcome)._value.get()  # type: ignore[attr-defined,no-any-return]


def _bad_utf8() -> bytes:
    req = samples.logs(n_events=1)
    req.resource_logs[0].scope_logs[0].log_records[0].body.string_value = "zz\u00e9zz"
    data = req.SerializeToString()
    return data.replace("zz\u00e9zz".encode(), b"zz\xff\xfezz")


def _retry_delay(trailing: Any) -> Optional[float]:
    for key, value in trailing or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def test_grpc_bad_input_statuses_and_counts() -> None:
    small = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                           max_request_bytes=4096)
    with running_service(service=small) as run:
        ep = run.grpc_endpoint
        before = {o: _requests(o, "grpc") for o in ("malformed", "invalid_utf8", "too_large", "ok")}
        code, details, _ = _grpc_call(ep, b"\xff\xff\xff\x00garbage")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        code, details, _ = _grpc_call(ep, _bad_utf8())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and b"UTF-8" in details
        big = samples.logs(n_events=200).SerializeToString()
        assert len(big) > 4096
        code, _, trailing = _grpc_call(ep, big)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _retry_delay(trailing) is None  # too big: do not resend as is
        code, resp, _ = _grpc_call(ep, b"")  # empty request: success, nothing forwarded
        assert code == grpc.StatusCode.OK and resp == b""
        no_resource = ExportLogsServiceRequest()
        no_resource.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
        code, _, _ = _grpc_call(ep, no_resource.SerializeToString())
        assert code == grpc.StatusCode.OK
        assert run.sink.log_record_count() == 1
        assert _requests("malformed", "grpc") == before["malformed"] + 1
        assert _requests("invalid_utf8", "grpc") == before["invalid_utf8"] + 1
        assert _requests("too_large", "grpc") == before["too_large"] + 1
        assert _requests("ok", "grpc") == before["ok"] + 2
        # the server is still serving
        code, _, _ = _grpc_call(ep, samples.logs(2).SerializeToString())
        assert code == grpc.StatusCode.OK and run.sink.log_record_count() == 3


def test_http_bad_input_statuses() -> None:
    small = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                           max_request_bytes=4096)
    with running_service(service=small) as run:
        port = run.service.http_port
        assert port
        status, body, _ = _proto(port, b"\xff\xff\xff\x00garbage")
        assert status == 400
        assert status_pb2.Status.FromString(body).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert _proto(port, _bad_utf8())[0] == 400
        status, body, _ = _post(port, "/v1/logs", b"{not json", {"Content-Type": "application/json"})
        assert status == 400 and "message" in json.loads(body)
        status, _, _ = _post(port, "/v1/logs", b"\xff\xfe{}", {"Content-Type": "application/json"})
        assert status == 400
        assert _post(port, "/v1/logs", b"x", {"Content-Type": "text/plain"})[0] == 415
        assert _proto(port, b"x", **{"Content-Encoding": "br"})[0] == 415
        big = samples.logs(n_events=200).SerializeToString()
        assert _proto(port, big)[0] == 413
        bomb = gzip.compress(b"\x00" * 1_000_000)
        assert len(bomb) < 4096
        assert _proto(port, bomb, **{"Content-Encoding": "gzip"})[0] == 413
        assert _proto(port, b"\x1f\x8b\x08garbage", **{"Content-Encoding": "gzip"})[0] == 400
        assert _proto(port, b"")[0] == 200
        ok = samples.logs(3)
        status, body, _ = _proto(port, gzip.compress(ok.SerializeToString()),
                                 **{"Content-Encoding": "gzip"})
        assert status == 200 and ExportLogsServiceResponse.FromString(body) == \
            ExportLogsServiceResponse()
        status, body, headers = _post(port, "/v1/logs", jsoncodec.encode(ok).encode(),
                                      {"Content-Type": "application/json"})
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert run.sink.log_record_count() == 6
        assert _post(port, "/v1/metrics", b"", {"Content-Type": "application/x-protobuf"})[0] \
            == 404


def test_partial_success_when_a_stage_drops_records() -> None:
    noise = NoiseControl(NoiseConfig(rate_per_second=0.001, burst=1,
                                     key_fields=(semconv.TRIGGER_RECORD_UID,)))
    with running_service([("noise_control", noise)]) as run:
        req = samples.logs(n_events=2, n_detections=5)  # 5 distinct keys, 1 token
        before = telemetry.dropped.labels("noise_control", "rate_limited")._value.get()  # type: ignore[attr-defined]
        code, resp, _ = _grpc_call(run.grpc_endpoint, req.SerializeToString())
        assert code == grpc.StatusCode.OK
        partial = ExportLogsServiceResponse.FromString(resp).partial_success
        assert partial.rejected_log_records == 4 and "dropped by the pipeline" in \
            partial.error_message
        assert telemetry.dropped.labels("noise_control", "rate_limited")._value.get() == \
            before + 4  # type: ignore[attr-defined]
        assert run.sink.log_record_count() == 3
        status, body, _ = _post(run.service.http_port or 0, "/v1/logs",
                                jsoncodec.encode(samples.logs(0, 2, rule="other")).encode(),
                                {"Content-Type": "application/json"})
        assert status == 200
        assert json.loads(body)["partialSuccess"]["rejectedLogRecords"] in ("1", 1)


class _SlowStage:
    """Holds each batch for a while, as a stage doing real work on a huge batch would."""

    type_name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        time.sleep(self.seconds)
        return batch

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("limit", ["requests", "bytes"])
def test_inflight_limit_answers_resource_exhausted_and_429(limit: str) -> None:
    # Next hop: a real service whose pipeline takes 1.5 s per batch, so requests stay in flight.
    body = samples.logs(2).SerializeToString()
    with running_service([("slow", _SlowStage(1.5))]) as hop:
        limits = {"max_inflight_requests": 1} if limit == "requests" else \
            {"max_inflight_bytes": len(body) + 10}
        limited = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                                 **limits)  # type: ignore[arg-type]
        target = OtlpGrpcTransport(hop.grpc_endpoint, timeout_s=10)
        with running_service(exporters=[("otlp#0", target)], service=limited) as run:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                first = pool.submit(_grpc_call, run.grpc_endpoint, body)
                wait_for(lambda: run.service._admission.requests == 1, what="one in flight")
                code, _, trailing = _grpc_call(run.grpc_endpoint, body)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert _retry_delay(trailing) is not None  # retryable: RetryInfo present
                status, _, headers = _proto(run.service.http_port or 0, body)
                assert status == 429 and int(headers["retry-after"]) >= 1
                assert first.result(20)[0] == grpc.StatusCode.OK
            assert run.service._admission.requests == 0 and run.service._admission.bytes == 0
        wait_for(lambda: hop.sink.log_record_count() == 2, what="the admitted request")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _retry_until_ok(send: Callable[[], Any], ok: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = send()
        if ok(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_next_hop_down_then_back_forwards_exactly_once() -> None:
    hop_port = _free_port()
    target = OtlpGrpcTransport(f"127.0.0.1:{hop_port}", timeout_s=2)
    with running_service(exporters=[("otlp#0", target)]) as run:
        grpc_batch = samples.logs(5)
        http_batch = samples.logs(7)
        before = metrics.forward_retries.labels("otlp#0")._value.get()  # type: ignore[attr-defined]
        code, _, trailing = _grpc_call(run.grpc_endpoint, grpc_batch.SerializeToString())
        assert code == grpc.StatusCode.UNAVAILABLE
        assert _retry_delay(trailing) is not None
        assert metrics.forward_retries.labels("otlp#0")._value.get() > before  # type: ignore[attr-defined]
        status, _, headers = _proto(run.service.http_port or 0, http_batch.SerializeToString())
        assert status == 503 and int(headers["retry-after"]) >= 1
        status, body, headers = _post(run.service.http_port or 0, "/v1/logs",
                                      jsoncodec.encode(http_batch).encode(),
                                      {"Content-Type": "application/json"})
        assert status == 503 and "retry-after" in headers
        error = json.loads(body)
        assert error["code"] == grpc.StatusCode.UNAVAILABLE.value[0] and error["details"]
        # The next hop comes up on the port the service forwards to.
        with running_service(grpc_port=hop_port) as hop:
            code = _retry_until_ok(
                lambda: _grpc_call(run.grpc_endpoint, grpc_batch.SerializeToString())[0],
                lambda c: c == grpc.StatusCode.OK, timeout=15)
            assert code == grpc.StatusCode.OK
            status = _retry_until_ok(
                lambda: _proto(run.service.http_port or 0, http_batch.SerializeToString())[0],
                lambda s: s == 200, timeout=15)
            assert status == 200
            time.sleep(0.3)
            sizes = sorted(count_records(r) for r in hop.sink.logs)
            assert sizes == [5, 7]  # each accepted batch exactly once, nothing from the outage


def test_service_survives_concurrent_garbage_and_good_requests() -> None:
    with running_service() as run:
        good = samples.logs(4).SerializeToString()
        stop = threading.Event()

        def garbage() -> int:
            n = 0
            while not stop.is_set() and n < 100:
                _grpc_call(run.grpc_endpoint, bytes([n % 256]) * (n + 1))
                n += 1
            return n

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            noise = pool.submit(garbage)
            for _ in range(20):
                assert _grpc_call(run.grpc_endpoint, good)[0] == grpc.StatusCode.OK
            stop.set()
            assert noise.result(30) > 0
        assert run.sink.log_record_count() == 80


@pytest.mark.parametrize("method", [LOGS, TRACES])
def test_grpc_truncated_message_is_invalid_argument(method: str) -> None:
    body = (samples.logs(3) if method == LOGS else samples.traces(3)).SerializeToString()
    with running_service() as run:
        code, _, _ = _grpc_call(run.grpc_endpoint, body[: len(body) // 2], method)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
