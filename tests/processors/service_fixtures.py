"""Running real ProcessorService instances on free loopback ports, for the service tests."""

from __future__ import annotations

import contextlib
import http.client
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import grpc

from otelguard.processors.config import ForwardSection, ProcessorSpec, ServiceSection
from otelguard.processors.forward import ExportTarget, Forwarder
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver import ProcessorService, ServiceThread
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Stage
from otelguard.transport.memory import InMemoryTransport

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
FAST_FORWARD = ForwardSection(timeout_seconds=1.0, max_attempts=3, initial_backoff_seconds=0.02,
                              max_backoff_seconds=0.1, down_seconds=0.5)


@dataclass
class Running:
    thread: ServiceThread
    service: ProcessorService
    sink: InMemoryTransport

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.service.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"


@contextlib.contextmanager
def running_service(
    stages: Sequence[tuple[str, Stage]] = (),
    specs: Sequence[ProcessorSpec] = (),
    exporters: Optional[Sequence[tuple[str, ExportTarget]]] = None,
    service: Optional[ServiceSection] = None,
    forward: ForwardSection = FAST_FORWARD,
    grpc_port: int = 0,
) -> Iterator[Running]:
    """A service on 127.0.0.1 (free ports unless given) forwarding to an InMemoryTransport."""
    sink = InMemoryTransport()
    pipeline = Pipeline(list(stages)) if stages else Pipeline.from_specs(specs)
    cfg = service or ServiceSection(listen=f"127.0.0.1:{grpc_port}", listen_http="127.0.0.1:0",
                                    metrics=None, flush_interval_seconds=0.2)
    hops = list(exporters) if exporters is not None else [("memory#0", sink)]
    svc = ProcessorService(pipeline, Forwarder(hops, forward), cfg, Settings(grace_seconds=1.0))
    thread = ServiceThread(svc).start()
    try:
        yield Running(thread, svc, sink)
    finally:
        thread.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def post(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 20.0,
         ) -> tuple[int, bytes, dict[str, str]]:
    """One OTLP/HTTP POST: status, body and (lower-cased) headers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def grpc_code(endpoint: str, body: bytes, method: str = LOGS_METHOD) -> grpc.StatusCode:
    """The status of one raw-bytes Export call (the client may send up to 64 MiB)."""
    with grpc.insecure_channel(endpoint, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=20)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
