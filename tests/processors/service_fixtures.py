"""Running real ProcessorService instances on free loopback ports, for the service tests."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence


from otelguard.processors.config import ForwardSection, ProcessorSpec, ServiceSection
from otelguard.processors.forward import ExportTarget, Forwarder
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver import ProcessorService, ServiceThread
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Stage
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.security import INSECURE_SERVER

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
                                    metrics=None, flush_interval_seconds=0.2,
                                    tls=INSECURE_SERVER)
    hops = list(exporters) if exporters is not None else [("memory#0", sink)]
    svc = ProcessorService(pipeline, Forwarder(hops, forward), cfg, Settings(grace_seconds=1.0))
    thread = ServiceThread(svc).start()
    try:
        yield Running(thread, svc, sink)
    finally:
        thread.stop()
