"""The whole path on this machine: a real process in a real kubepods cgroup makes syscalls, the eBPF
Sensor captures them, the exporter's OtlpBuilder makes OTLP with one Resource per container, and
the k8s_attributes stage, watching a real kube-apiserver, names the pod, namespace and workload --
and the Service the process tried to reach.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from otelguard import semconv
from otelguard.processors.k8s import K8sEnricher
from otelguard.otlp.messages import attrs_dict

from tests.ebpf.containers import container, new_container_id
from tests.support.prerequisites import require_root
from tests.support.kube_world import make_world

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]


@pytest.fixture(scope="module")
def sensor() -> Iterator[Any]:
    require_root()
    from otelguard.ebpf.sensor import Sensor
    from otelguard.ebpf.settings import SensorConfig

    s = Sensor(SensorConfig())
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_syscalls_of_a_pod_container_come_out_enriched(
    sensor: Any, admin: Any, enricher_factory: Callable[..., K8sEnricher],
) -> None:
    from otelguard.exporter.builder import OtlpBuilder
    from otelguard.exporter.settings import NodeIdentity

    from tests.ebpf.capture import collect, exited, flush, in_container

    cid = new_container_id()
    w = make_world(admin, cid)
    e = enricher_factory()
    flush(sensor)
    with container(pod_uid=w.uid, container_id=cid) as c:
        # exec, open and a connect to the Service's ClusterIP (no kube-proxy here: it fails,
        # which the sensor records all the same).
        script = (f"import socket; open('/etc/hostname').read(); s = socket.socket(); "
                  f"s.settimeout(1); s.connect_ex(('{w.service_ip}', 80))")
        proc = c.popen(["/usr/bin/python3", "-c", script])
        proc.wait(timeout=30)
        events = collect(sensor, in_container(cid), until=exited(proc.pid), timeout_s=20)
    assert events, "the sensor saw nothing from the container"
    names = {ev.name for ev in events}
    assert semconv.EV_PROCESS_EXEC in names and semconv.EV_NETWORK_CONNECT in names, names

    builder = OtlpBuilder(NodeIdentity("node-a", "host-a", "0" * 32))
    batch = e.process(builder.logs(events))
    ours = [rl for rl in batch.resource_logs
            if attrs_dict(rl.resource.attributes).get(semconv.CONTAINER_ID) == cid]
    assert len(ours) == 1
    a = attrs_dict(ours[0].resource.attributes)
    assert a[semconv.K8S_POD_UID] == w.uid
    assert a[semconv.K8S_POD_NAME] == w.pod
    assert a[semconv.K8S_NAMESPACE_NAME] == w.ns
    assert a[semconv.K8S_DEPLOYMENT_NAME] == "web"
    assert a[semconv.K8S_CONTAINER_NAME] == "main"
    assert a[semconv.SERVICE_NAME] == "storefront"
    connects = [attrs_dict(r.attributes) for sl in ours[0].scope_logs for r in sl.log_records
                if r.event_name == semconv.EV_NETWORK_CONNECT]
    assert connects and connects[0][semconv.NETWORK_PEER_ADDRESS] == w.service_ip
    assert connects[0][semconv.PEER_K8S_SERVICE_NAME] == "web-svc"

    # The process span ended at exit: its Resource is enriched the same way.
    traces = builder.traces()
    assert traces is not None
    out = e.process(traces)
    span_resources = [attrs_dict(rs.resource.attributes) for rs in out.resource_spans]
    ours_spans = [ra for ra in span_resources if ra.get(semconv.CONTAINER_ID) == cid]
    assert ours_spans and all(ra[semconv.K8S_POD_NAME] == w.pod for ra in ours_spans)
