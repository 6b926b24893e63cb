"""Pipeline (a) end to end with the real processor service:
agent events -> Collector (backends + gateway) -> `otelguard processor` (Falco rules) ->
Collector -> Loki, Prometheus. Nothing here is hand-made but the agent's events: the detection
is the processor's, from the stable Falco ruleset."""

from __future__ import annotations

from typing import Iterator

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from otelguard import semconv as sc
from tests.e2e.scenario import Scenario
from tests.support.polling import wait_until
from tests.support.certs import GatewayTls
from tests.support.stack import (
    BACKENDS_CONFIG, GATEWAY_CONFIG, Collector, Jaeger, Loki, ProcessorService, Prometheus, backends_env,
)

pytestmark = pytest.mark.e2e

NETCAT_RULE = "Netcat Remote Code Execution in Container"   # Falco stable ruleset


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, loki: Loki, jaeger: Jaeger,
            prometheus: Prometheus) -> Iterator[tuple[Collector, ProcessorService]]:
    tmp = tmp_path_factory.mktemp("gateway")
    tls = GatewayTls.create(tmp / "pki")
    col = Collector(tmp / "otelcol", [BACKENDS_CONFIG, GATEWAY_CONFIG], backends_env(loki, jaeger),
                    tls=tls)
    proc = ProcessorService(tmp / "processor", export=col.otlp_grpc, listen_tls=tls.processor_args(),
                            export_tls=tls.processor_export_args())
    col.env["OTELGUARD_PROCESSOR_ENDPOINT"] = proc.endpoint
    proc.start()
    try:
        col.start()
        prometheus.add_targets("otelguard", [proc.metrics])
        prometheus.add_targets("otelcol-exporter", [col.prometheus_exporter])
        yield col, proc
    finally:
        col.stop()
        proc.stop()
        prometheus.remove_targets("otelguard", [proc.metrics])
        prometheus.remove_targets("otelcol-exporter", [col.prometheus_exporter])


@pytest.fixture(scope="module")
def agent_events(gateway: tuple[Collector, ProcessorService]) -> Scenario:
    """Only the agent's raw events and process spans (no detections): the processor must find
    the netcat one."""
    col, _ = gateway
    scenario = Scenario()
    events = ExportLogsServiceRequest(resource_logs=[scenario.logs().resource_logs[0]])
    assert col.tls is not None
    ch, metadata = col.tls.agent_channel(col.agents_grpc)  # TLS and an agent's token
    with ch:
        LogsServiceStub(ch).Export(events, timeout=10, metadata=metadata)  # type: ignore[no-untyped-call]
        TraceServiceStub(ch).Export(scenario.traces(), timeout=10, metadata=metadata)  # type: ignore[no-untyped-call]
    return scenario


def test_processor_detection_reaches_loki(loki: Loki, agent_events: Scenario) -> None:
    q = (f'{{k8s_namespace_name="{agent_events.namespace}"}} | event_name="{sc.EV_DETECTION}"'
         f' | security_rule_name="{NETCAT_RULE}"')
    def found() -> list[dict[str, str]]:
        return [s["stream"] for s in loki.query_range(q)["result"] for _ in s["values"]]
    assert wait_until(lambda: len(found()) == 1, 45), loki.query_range(q)
    (labels,) = found()
    assert labels["otelguard_stream"] == sc.STREAM_DETECTION
    assert labels["trace_id"] == agent_events.trace_id_hex        # same trace as the trigger
    assert labels[sc.PROCESS_EXECUTABLE_NAME.replace(".", "_")] == "nc"
    # the raw events went through too
    ev = f'{{k8s_namespace_name="{agent_events.namespace}", otelguard_stream="event"}}'
    assert wait_until(lambda: sum(len(s["values"]) for s in loki.query_range(ev)["result"]) == 3, 30)


def test_processor_and_collector_counts_agree(prometheus: Prometheus, agent_events: Scenario) -> None:
    """otelguard_detections_total (processor) == otelguard_collector_detections_total (Collector):
    nothing lost between them."""
    ns = agent_events.namespace
    proc_q = f'sum(otelguard_detections_total{{rule="{NETCAT_RULE}", k8s_namespace_name="{ns}"}})'
    col_q = f'sum(otelguard_collector_detections_total{{security_rule_name="{NETCAT_RULE}", k8s_namespace_name="{ns}"}})'

    def value(q: str) -> float:
        r = prometheus.query(q)
        return float(r[0]["value"][1]) if r else 0.0
    assert wait_until(lambda: value(proc_q) == 1.0 and value(col_q) == 1.0, 60), \
        (value(proc_q), value(col_q), prometheus.active_targets())


def test_process_spans_reach_jaeger_through_the_processor(jaeger: Jaeger, agent_events: Scenario) -> None:
    def names() -> set[str]:
        return {sp["name"] for rs in jaeger.trace(agent_events.trace_id_hex)
                for ss in rs.get("scopeSpans", []) for sp in ss.get("spans", [])}
    # the processor adds the detection's own span to the trigger's trace (detection/spans.py)
    want = {"exec bash", "exec curl", "exec nc", "connect", f"detection {NETCAT_RULE}"}
    assert wait_until(lambda: names() == want, 30), names()
