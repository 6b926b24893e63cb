"""End-to-end fixtures: the real Collector, Loki, Jaeger and Prometheus from tests/support/stack.py,
and one attack scenario sent through pipeline (b)'s Collector for every test that queries backends;
on the real one-node cluster, one chart install and one attacking workload per session."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.scenario import Scenario, send
from tests.support import cluster_release
from tests.support.node import Node
from tests.support.stack import Collector, Jaeger, Loki, Prometheus


@pytest.fixture(scope="session")
def sent(backends_collector: Collector, prometheus: Prometheus) -> Iterator[Scenario]:
    """The scenario, sent once per session; Prometheus scrapes this Collector."""
    prometheus.add_targets("otelcol-exporter", [backends_collector.prometheus_exporter])
    prometheus.add_targets("otelcol", [backends_collector.telemetry])
    scenario = Scenario()
    send(backends_collector, scenario)
    yield scenario


# --- the real one-node cluster (marker `cluster`): one chart install and one attack per session,
# shared by test_cluster_helm_install.py and test_cluster_response.py


@pytest.fixture(scope="session")
def cluster_backends(node: Node, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[tuple[Loki, Jaeger]]:
    with cluster_release.backends(node, tmp_path_factory.mktemp("cluster-backends")) as found:
        yield found


@pytest.fixture(scope="session")
def release(node: Node, cluster_backends: tuple[Loki, Jaeger],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chart's namespace, installed once (response enabled: cluster_release.py)."""
    loki, jaeger = cluster_backends
    with cluster_release.installed(node, loki, jaeger,
                                   tmp_path_factory.mktemp("helm-release")) as namespace:
        yield namespace


@pytest.fixture(scope="session")
def attack(node: Node, release: str) -> Iterator[dict[str, object]]:
    """The attacking workload's facts, once the chart runs (cluster_release.attacked)."""
    with cluster_release.attacked(node) as facts:
        yield facts
