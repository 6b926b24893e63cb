"""Pipeline (b)'s back half for real: OTLP -> Collector (backends.yaml) -> Loki, Jaeger, Prometheus.

A hand-built story in the otelguard schema (tests/e2e/scenario.py) goes into the Collector over
OTLP/gRPC, as the processor service sends it; then each backend is asked what a user would ask.
"""

from __future__ import annotations

from typing import Any

import pytest

from otelguard import semconv as sc
from tests.e2e.scenario import REVERSE_SHELL_PEER, Scenario
from tests.support.polling import wait_until
from tests.support.stack import Collector, Jaeger, Loki, Prometheus

pytestmark = pytest.mark.e2e

# Loki's label names for our resource attributes (dots -> underscores).
INDEX_LABELS = {"service_name", "k8s_cluster_name", "k8s_namespace_name", "k8s_deployment_name",
                "k8s_statefulset_name", "k8s_daemonset_name", "k8s_cronjob_name", "otelguard_stream"}


def loki_name(key: str) -> str:
    return key.replace(".", "_")


def entries(data: dict[str, Any]) -> list[tuple[dict[str, str], str]]:
    return [(s["stream"], v[1]) for s in data["result"] for v in s["values"]]


def test_loki_finds_the_detection_by_rule_and_namespace(loki: Loki, sent: Scenario) -> None:
    q = (f'{{otelguard_stream="detection", k8s_namespace_name="{sent.namespace}"}}'
         f' | security_rule_name="{sent.rule_reverse_shell}"')
    assert wait_until(lambda: len(entries(loki.query_range(q))) == 1, 30), loki.query_range(q)
    (labels, line), = entries(loki.query_range(q))
    assert line.startswith(sent.rule_reverse_shell)
    # index labels
    assert labels["service_name"] == "web"
    assert labels["k8s_cluster_name"] == sent.cluster
    assert labels["k8s_deployment_name"] == "web"
    # structured metadata: record attributes, non-indexed resource attributes, OTLP fields
    assert labels[loki_name(sc.SECURITY_RULE_CATEGORY)] == "execution"
    assert labels[loki_name(sc.PROCESS_EXECUTABLE_NAME)] == "nc"
    assert labels[loki_name(sc.NETWORK_PEER_ADDRESS)] == REVERSE_SHELL_PEER
    assert labels[loki_name(sc.K8S_POD_NAME)] == sent.pod
    assert labels[loki_name(sc.CONTAINER_ID)] == sent.container_id
    assert labels["trace_id"] == sent.trace_id_hex
    assert labels["event_name"] == sc.EV_DETECTION   # the Loki < 3.8 transform workaround
    assert labels["severity_number"] == "21"


def test_loki_indexes_only_the_label_policy(loki: Loki, sent: Scenario) -> None:
    q = f'{{k8s_namespace_name="{sent.namespace}"}}'
    assert wait_until(lambda: len(entries(loki.query_range(q))) == 5, 30), loki.query_range(q)
    series = loki.series(q)
    assert {s["otelguard_stream"] for s in series} == {"event", "detection"}
    for s in series:
        assert set(s) <= INDEX_LABELS, s
    indexed = set(loki.labels())
    assert {"service_name", "k8s_namespace_name", "otelguard_stream"} <= indexed
    assert not indexed & {"k8s_pod_name", "container_id", "security_rule_name", "k8s_container_name"}


def test_loki_event_name_is_queryable(loki: Loki, sent: Scenario) -> None:
    q = (f'{{otelguard_stream="event", k8s_namespace_name="{sent.namespace}"}}'
         f' | event_name="{sc.EV_PROCESS_EXEC}"')
    assert wait_until(lambda: len(entries(loki.query_range(q))) == 2, 30), loki.query_range(q)


def test_jaeger_returns_the_trace_by_id(jaeger: Jaeger, sent: Scenario) -> None:
    assert wait_until(lambda: len(_spans(jaeger.trace(sent.trace_id_hex))) == 4, 30)
    spans = _spans(jaeger.trace(sent.trace_id_hex))
    assert {s["name"] for s in spans} == {"exec bash", "exec curl", "exec nc", "connect"}
    by_name = {s["name"]: s for s in spans}
    assert by_name["connect"]["parentSpanId"] == by_name["exec nc"]["spanId"]
    assert "web" in jaeger.services()


def _spans(resource_spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [span for rs in resource_spans for ss in rs.get("scopeSpans", []) for span in ss.get("spans", [])]


def test_jaeger_search_by_rule_name(jaeger: Jaeger, sent: Scenario) -> None:
    tags = {sc.SECURITY_RULE_NAME: sent.rule_reverse_shell}
    assert wait_until(lambda: len(jaeger.search("web", tags)) == 1, 30), jaeger.search("web", tags)
    (trace,) = jaeger.search("web", tags)
    assert trace["traceID"] == sent.trace_id_hex
    assert jaeger.search("web", {sc.SECURITY_RULE_NAME: f"no such rule {sent.run}"}) == []


def test_prometheus_scrapes_the_collector(prometheus: Prometheus, sent: Scenario) -> None:
    q = f'otelguard_collector_detections_total{{security_rule_name="{sent.rule_reverse_shell}"}}'
    assert wait_until(lambda: len(prometheus.query(q)) == 1, 45), prometheus.active_targets()
    (sample,) = prometheus.query(q)
    assert sample["metric"]["k8s_namespace_name"] == sent.namespace
    assert sample["metric"]["security_rule_category"] == "execution"
    assert float(sample["value"][1]) == 1.0
    # the Collector's own telemetry is scraped too: its Loki exporter sent our 5 records
    sent_q = 'sum(otelcol_exporter_sent_log_records{exporter=~"otlp_http/loki.*"})'
    assert wait_until(lambda: bool(prometheus.query(sent_q)) and
                      float(prometheus.query(sent_q)[0]["value"][1]) >= 5, 45)


def test_collector_tap_saw_both_streams(backends_collector: Collector, sent: Scenario) -> None:
    def streams() -> set[str]:
        out = set()
        for doc in backends_collector.tap_lines():
            for rl in doc.get("resourceLogs", []):
                attrs = {a["key"]: a["value"].get("stringValue") for a in rl["resource"]["attributes"]}
                if attrs.get(sc.K8S_NAMESPACE_NAME) == sent.namespace:
                    out.add(str(attrs.get(sc.STREAM)))
        return out
    assert wait_until(lambda: streams() == {sc.STREAM_EVENT, sc.STREAM_DETECTION}, 20), streams()
