"""End-to-end fixtures: the real Collector, Loki, Jaeger and Prometheus from tests/support/stack.py,
and one attack scenario sent through pipeline (b)'s Collector for every test that queries backends."""

from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from tests.e2e.scenario import Scenario
from tests.support.stack import Collector, Prometheus, backends_collector, jaeger, loki, prometheus  # noqa: F401


def send(collector: Collector, scenario: Scenario) -> None:
    """OTLP/gRPC into the Collector, as the processor service sends (logs, then spans)."""
    with grpc.insecure_channel(collector.otlp_grpc) as channel:
        LogsServiceStub(channel).Export(scenario.logs(), timeout=10)  # type: ignore[no-untyped-call]
        TraceServiceStub(channel).Export(scenario.traces(), timeout=10)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def sent(backends_collector: Collector, prometheus: Prometheus) -> Iterator[Scenario]:  # noqa: F811
    """The scenario, sent once per session; Prometheus scrapes this Collector."""
    prometheus.add_targets("otelcol-exporter", [backends_collector.prometheus_exporter])
    prometheus.add_targets("otelcol", [backends_collector.telemetry])
    scenario = Scenario()
    send(backends_collector, scenario)
    yield scenario
