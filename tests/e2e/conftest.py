"""End-to-end fixtures: the real Collector, Loki, Jaeger and Prometheus from tests/support/stack.py,
and one attack scenario sent through pipeline (b)'s Collector for every test that queries backends."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.scenario import Scenario, send
from tests.support.stack import Collector, Prometheus, backends_collector, jaeger, loki, prometheus  # noqa: F401


@pytest.fixture(scope="session")
def sent(backends_collector: Collector, prometheus: Prometheus) -> Iterator[Scenario]:  # noqa: F811
    """The scenario, sent once per session; Prometheus scrapes this Collector."""
    prometheus.add_targets("otelcol-exporter", [backends_collector.prometheus_exporter])
    prometheus.add_targets("otelcol", [backends_collector.telemetry])
    scenario = Scenario()
    send(backends_collector, scenario)
    yield scenario
