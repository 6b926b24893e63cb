"""Bad input, backpressure and next-hop outages, over real gRPC and HTTP against the real service."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
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

from otelguard import semconv
from otelguard.otlp import jsoncodec
from otelguard.processors.config import ServiceSection
from otelguard.otlp.messages import count_records
from otelguard.processors.stage import Batch
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT
from otelguard.transport.security import INSECURE_SERVER

from . import samples
from tests.support.endpoints import LOGS, TRACES, free_port, grpc_call, post, post_proto
from tests.support.metrics import sample
from tests.support.polling import wait_for, wait_until

from .service_fixtures import running_service

def _requests(outcome: str, protocol: str) -> float:
    return sample("otelguard_processor_requests_total", signal="logs", protocol=protocol,
                  outcome=outcome)


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
                           max_request_bytes=4096, tls=INSECURE_SERVER)
    with running_service(service=small) as run:
        ep = run.grpc_endpoint
        before = {o: _requests(o, "grpc") for o in ("malformed", "invalid_utf8", "too_large", "ok")}
        code, details, _ = grpc_call(ep, b"\xff\xff\xff\x00garbage")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        code, details, _ = grpc_call(ep, _bad_utf8())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and b"UTF-8" in details
        big = samples.logs(n_events=200).SerializeToString()
        assert len(big) > 4096
        code, _, trailing = grpc_call(ep, big)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _retry_delay(trailing) is None  # too big: do not resend as is
        code, resp, _ = grpc_call(ep, b"")  # empty request: success, nothing forwarded
        assert code == grpc.StatusCode.OK and resp == b""
        no_resource = ExportLogsServiceRequest()
        no_resource.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
        code, _, _ = grpc_call(ep, no_resource.SerializeToString())
        assert code == grpc.StatusCode.OK
        assert run.sink.log_record_count() == 1
        assert _requests("malformed", "grpc") == before["malformed"] + 1
        assert _requests("invalid_utf8", "grpc") == before["invalid_utf8"] + 1
        assert _requests("too_large", "grpc") == before["too_large"] + 1
        assert _requests("ok", "grpc") == before["ok"] + 2
        # the server is still serving
        code, _, _ = grpc_call(ep, samples.logs(2).SerializeToString())
        assert code == grpc.StatusCode.OK and run.sink.log_record_count() == 3


def _rate_limited() -> float:
    return sample("otelguard_dropped_total", stage="noise_control", reason="rate_limited")


def _retries() -> float:
    return sample("otelguard_processor_forward_retries_total", exporter="otlp#0")


def test_http_bad_input_statuses() -> None:
    small = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                           max_request_bytes=4096, tls=INSECURE_SERVER)
    with running_service(service=small) as run:
        port = run.service.http_port
        assert port
        status, body, _ = post_proto(port, b"\xff\xff\xff\x00garbage")
        assert status == 400
        assert status_pb2.Status.FromString(body).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert post_proto(port, _bad_utf8())[0] == 400
        status, body, _ = post(port, "/v1/logs", b"{not json", {"Content-Type": "application/json"})
        assert status == 400 and "message" in json.loads(body)
        status, _, _ = post(port, "/v1/logs", b"\xff\xfe{}", {"Content-Type": "application/json"})
        assert status == 400
        assert post(port, "/v1/logs", b"x", {"Content-Type": "text/plain"})[0] == 415
        assert post_proto(port, b"x", **{"Content-Encoding": "br"})[0] == 415
        big = samples.logs(n_events=200).SerializeToString()
        assert post_proto(port, big)[0] == 413
        bomb = gzip.compress(b"\x00" * 1_000_000)
        assert len(bomb) < 4096
        assert post_proto(port, bomb, **{"Content-Encoding": "gzip"})[0] == 413
        assert post_proto(port, b"\x1f\x8b\x08garbage", **{"Content-Encoding": "gzip"})[0] == 400
        assert post_proto(port, b"")[0] == 200
        ok = samples.logs(3)
        status, body, _ = post_proto(port, gzip.compress(ok.SerializeToString()),
                                 **{"Content-Encoding": "gzip"})
        assert status == 200 and ExportLogsServiceResponse.FromString(body) == \
            ExportLogsServiceResponse()
        status, body, headers = post(port, "/v1/logs", jsoncodec.encode(ok).encode(),
                                      {"Content-Type": "application/json"})
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert run.sink.log_record_count() == 6
        assert post(port, "/v1/metrics", b"", {"Content-Type": "application/x-protobuf"})[0] \
            == 404


def test_http_json_with_fields_unknown_to_us_is_accepted() -> None:
    """OTLP/JSON receivers ignore unknown fields: a newer sender's request is a 200, not a 400."""
    sent = samples.logs(3)
    doc = json.loads(jsoncodec.encode(sent))
    doc["futureTopLevel"] = {"x": 1}
    doc["resourceLogs"][0]["futureResourceField"] = [1, 2]
    doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["futureRecordField"] = "new"
    with running_service() as run:
        port = run.service.http_port
        assert port
        status, body, _ = post(port, "/v1/logs", json.dumps(doc).encode(),
                                {"Content-Type": "application/json"})
        assert (status, json.loads(body)) == (200, {})
        assert run.sink.logs == [sent]


class _DetectionDropper:
    """Drops every detection for good and reports it (pipeline.ReportsDrops); noise_control no
    longer drops anything, so the partial-success path is exercised with this stage."""

    type_name = "detection_dropper"

    def __init__(self) -> None:
        self.dropped_records = 0

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        assert isinstance(batch, ExportLogsServiceRequest)
        for sl in (sl for rl in batch.resource_logs for sl in rl.scope_logs):
            keep = [r for r in sl.log_records if r.event_name != semconv.EV_DETECTION]
            self.dropped_records += len(sl.log_records) - len(keep)
            del sl.log_records[:]
            sl.log_records.extend(keep)
        return batch

    def shutdown(self) -> None:
        pass


def test_partial_success_when_a_stage_drops_records() -> None:
    with running_service([("drop", _DetectionDropper())]) as run:
        req = samples.logs(n_events=2, n_detections=4)
        code, resp, _ = grpc_call(run.grpc_endpoint, req.SerializeToString())
        assert code == grpc.StatusCode.OK
        partial = ExportLogsServiceResponse.FromString(resp).partial_success
        assert partial.rejected_log_records == 4 and "dropped by the pipeline" in \
            partial.error_message
        assert run.sink.log_record_count() == 2
        status, body, _ = post(run.service.http_port or 0, "/v1/logs",
                                jsoncodec.encode(samples.logs(0, 1, rule="other")).encode(),
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
                                 **limits, tls=INSECURE_SERVER)  # type: ignore[arg-type]
        target = OtlpGrpcTransport(hop.grpc_endpoint, timeout_s=10, tls=INSECURE_CLIENT)
        with running_service(exporters=[("otlp#0", target)], service=limited) as run:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                first = pool.submit(grpc_call, run.grpc_endpoint, body)
                wait_for(lambda: run.service._admission.requests == 1, what="one in flight")
                code, _, trailing = grpc_call(run.grpc_endpoint, body)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert _retry_delay(trailing) is not None  # retryable: RetryInfo present
                status, _, headers = post_proto(run.service.http_port or 0, body)
                assert status == 429 and int(headers["retry-after"]) >= 1
                assert first.result(20)[0] == grpc.StatusCode.OK
            assert run.service._admission.requests == 0 and run.service._admission.bytes == 0
        wait_for(lambda: hop.sink.log_record_count() == 2, what="the admitted request")


def _retry_until_ok(send: Callable[[], Any], ok: Callable[[Any], bool], timeout: float) -> Any:
    """``send()`` again until ``ok`` accepts its result or ``timeout`` passes; the last result."""
    results: list[Any] = []
    wait_until(lambda: ok(results.append(send()) or results[-1]), timeout)
    return results[-1]


def test_next_hop_down_then_back_forwards_exactly_once() -> None:
    hop_port = free_port()
    target = OtlpGrpcTransport(f"127.0.0.1:{hop_port}", timeout_s=2, tls=INSECURE_CLIENT)
    with running_service(exporters=[("otlp#0", target)]) as run:
        grpc_batch = samples.logs(5)
        http_batch = samples.logs(7)
        before = _retries()
        code, _, trailing = grpc_call(run.grpc_endpoint, grpc_batch.SerializeToString())
        assert code == grpc.StatusCode.UNAVAILABLE
        assert _retry_delay(trailing) is not None
        assert _retries() > before
        status, _, headers = post_proto(run.service.http_port or 0, http_batch.SerializeToString())
        assert status == 503 and int(headers["retry-after"]) >= 1
        status, body, headers = post(run.service.http_port or 0, "/v1/logs",
                                      jsoncodec.encode(http_batch).encode(),
                                      {"Content-Type": "application/json"})
        assert status == 503 and "retry-after" in headers
        error = json.loads(body)
        assert error["code"] == grpc.StatusCode.UNAVAILABLE.value[0] and error["details"]
        # The next hop comes up on the port the service forwards to.
        with running_service(grpc_port=hop_port) as hop:
            code = _retry_until_ok(
                lambda: grpc_call(run.grpc_endpoint, grpc_batch.SerializeToString())[0],
                lambda c: c == grpc.StatusCode.OK, timeout=15)
            assert code == grpc.StatusCode.OK
            status = _retry_until_ok(
                lambda: post_proto(run.service.http_port or 0, http_batch.SerializeToString())[0],
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
                grpc_call(run.grpc_endpoint, bytes([n % 256]) * (n + 1))
                n += 1
            return n

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            noise = pool.submit(garbage)
            for _ in range(20):
                assert grpc_call(run.grpc_endpoint, good)[0] == grpc.StatusCode.OK
            stop.set()
            assert noise.result(30) > 0
        assert run.sink.log_record_count() == 80


@pytest.mark.parametrize("method", [LOGS, TRACES])
def test_grpc_truncated_message_is_invalid_argument(method: str) -> None:
    body = (samples.logs(3) if method == LOGS else samples.traces(3)).SerializeToString()
    with running_service() as run:
        code, _, _ = grpc_call(run.grpc_endpoint, body[: len(body) // 2], method)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
