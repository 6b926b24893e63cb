"""Fuzzing the request path: random bytes and mutated valid requests over gRPC and HTTP get only
the documented statuses, and the server keeps serving."""

from __future__ import annotations

import http.client
from typing import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelguard.otlp import jsoncodec

from tests.support.metrics import total
from . import samples
from tests.support.endpoints import grpc_code

from .service_fixtures import Running, running_service

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GRPC_OK = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
HTTP_OK = {200, 400, 413, 415}
VALID = samples.logs(n_events=3, n_detections=2).SerializeToString()
VALID_JSON = jsoncodec.encode(samples.logs(n_events=2)).encode()


@pytest.fixture(scope="module")
def run() -> Iterator[Running]:
    with running_service() as r:
        yield r


@st.composite
def mutated(draw: st.DrawFn, base: bytes = VALID) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 32))]
    return bytes(data)


bodies = st.one_of(st.binary(max_size=2048), mutated())


def _grpc(run: Running, method: str, body: bytes) -> grpc.StatusCode:
    return grpc_code(run.grpc_endpoint, body, method)


def _http(run: Running, path: str, body: bytes, ctype: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", run.service.http_port or 0, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, method=st.sampled_from([LOGS, TRACES]))
def test_grpc_fuzz(run: Running, body: bytes, method: str) -> None:
    assert _grpc(run, method, body) in GRPC_OK


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(bodies, mutated(VALID_JSON)), path=st.sampled_from(["/v1/logs", "/v1/traces"]),
       ctype=st.sampled_from(["application/x-protobuf", "application/json", "text/plain"]))
def test_http_fuzz(run: Running, body: bytes, path: str, ctype: str) -> None:
    assert _http(run, path, body, ctype) in HTTP_OK


def test_still_serving_after_fuzz(run: Running) -> None:
    before = run.sink.log_record_count()
    assert _grpc(run, LOGS, VALID) == grpc.StatusCode.OK
    assert _http(run, "/v1/logs", VALID_JSON, "application/json") == 200
    assert run.sink.log_record_count() == before + 5 + 2
    # no request hit an unexpected exception
    assert total("otelguard_processor_requests_total", outcome="internal") == 0
