"""The enricher against a real kube-apiserver + etcd (tests/support/kube.py).

There is no controller-manager or kubelet: the test writes what they would (Deployment ->
ReplicaSet -> Pod ownerReferences, the pod's status with containerIDs and podIP, Services,
EndpointSlices), and the container IDs belong to real kubepods-shaped cgroups with a real process
in them, read back from /proc/<pid>/cgroup as the agent reads them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from otelguard import semconv
from otelguard.processors.k8s import K8sEnricher
from otelguard.processors.k8s.processor import DROP_STAGE
from otelguard.processors.k8s.source import ApiServerSource, Kind
from otelguard.otlp.messages import attrs_dict

from tests.ebpf.containers import container, new_container_id
from tests.processors.k8s import objects as o
from tests.processors.k8s.netcut import TcpRelay
from tests.support.kube import KubeCluster
from tests.support.kube_world import (
    apis, create_running_pod, eventually, make_namespace, make_world, next_ip, unless_exists,
)
from tests.support.metrics import sample

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

RBAC_YAML = Path(__file__).resolve().parents[3] / "deploy" / "rbac" / "k8s-enricher.yaml"


def _pod_not_found() -> float:
    return sample("otelguard_dropped_total", stage=DROP_STAGE, reason="pod_not_found")


def _resource(batch: Any) -> dict[str, Any]:
    assert len(batch.resource_logs) == 1
    return attrs_dict(batch.resource_logs[0].resource.attributes)


def _agent_resource(pid: int) -> dict[str, Any]:
    """What the agent puts on the Resource of a process, read from /proc/<pid>/cgroup."""
    from otelguard.ebpf.cgroup import parse_container, proc_cgroup_path

    path = proc_cgroup_path(pid)
    assert path is not None
    ident = parse_container(path)
    out: dict[str, Any] = {semconv.CONTAINER_ID: ident.container_id}
    if ident.pod_uid:
        out[semconv.K8S_POD_UID] = ident.pod_uid
    return out


def test_enriches_a_real_cgroup_containers_records(
    admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    cid = new_container_id()
    w = make_world(admin, cid)
    with container(pod_uid=w.uid, container_id=cid) as c:
        proc = c.popen(["/bin/sleep", "30"])
        try:
            resource = _agent_resource(proc.pid)
        finally:
            proc.kill()
            proc.wait()
    assert resource[semconv.CONTAINER_ID] == cid and resource[semconv.K8S_POD_UID] == w.uid

    e = enricher_factory()
    batch = e.process(o.logs((resource, [
        {semconv.PROCESS_PID: 42},
        {semconv.NETWORK_PEER_ADDRESS: w.service_ip, semconv.NETWORK_PEER_PORT: 80},
        {semconv.NETWORK_PEER_ADDRESS: w.ip},
        {semconv.NETWORK_PEER_ADDRESS: w.db_ip},
        {semconv.NETWORK_PEER_ADDRESS: "8.8.8.8"},
    ])))
    a = _resource(batch)
    assert a[semconv.K8S_NAMESPACE_NAME] == w.ns
    assert a[semconv.K8S_POD_NAME] == w.pod
    assert a[semconv.K8S_POD_UID] == w.uid
    assert a[semconv.K8S_CONTAINER_NAME] == "main"
    assert a[semconv.K8S_NODE_NAME] == "node-a"
    assert a[semconv.K8S_DEPLOYMENT_NAME] == "web"
    assert a[semconv.K8S_REPLICASET_NAME] == "web-5d4f"
    assert a[semconv.CONTAINER_IMAGE_NAME] == "registry.local:5000/shop/web"
    assert a[semconv.CONTAINER_IMAGE_TAGS] == ["2.1"]
    assert a[semconv.SERVICE_NAME] == "storefront"
    assert a[semconv.K8S_POD_LABEL_PREFIX + "app"] == "web"
    assert semconv.K8S_POD_LABEL_PREFIX + "tier" not in a
    assert a[semconv.K8S_POD_ANNOTATION_PREFIX + "otelguard.io/profile"] == "strict"
    assert a[semconv.K8S_NAMESPACE_LABEL_PREFIX + "team"] == "payments"
    assert a[semconv.K8S_POD_ADDED_CAPABILITIES] == ["CAP_NET_RAW"]
    assert a[semconv.K8S_POD_PRIVILEGED] is False
    assert a[semconv.K8S_POD_SERVICE_ACCOUNT] == "web-sa"

    recs = [attrs_dict(r.attributes) for r in batch.resource_logs[0].scope_logs[0].log_records]
    assert recs[1][semconv.PEER_K8S_SERVICE_NAME] == "web-svc"  # ClusterIP
    assert recs[1][semconv.PEER_K8S_NAMESPACE_NAME] == w.ns
    assert recs[2][semconv.PEER_K8S_POD_NAME] == w.pod  # endpoint = the pod
    assert recs[2][semconv.PEER_K8S_SERVICE_NAME] == "web-svc"
    assert recs[2][semconv.PEER_K8S_WORKLOAD_NAME] == "web"
    assert recs[3][semconv.PEER_K8S_POD_NAME] == "db-0"
    assert recs[3][semconv.PEER_K8S_WORKLOAD_KIND] == "StatefulSet"
    assert semconv.PEER_K8S_SERVICE_NAME not in recs[3]
    assert not any(k.startswith("otelguard.peer.") for k in recs[4])


def test_minimal_rbac_suffices(
    kube: KubeCluster, admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    from kubernetes import client, config, utils
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(admin)
    with unless_exists():  # the session's API server: another module may have made it
        core.create_namespace({"metadata": {"name": "otelguard"}})
    try:
        utils.create_from_yaml(admin, str(RBAC_YAML))
    except utils.FailToCreateError as exc:  # each object is created unless it exists
        if any(e.status != 409 for e in exc.api_exceptions):
            raise
    # The role grants only get/list/watch.
    role = yaml.safe_load_all(RBAC_YAML.read_text())
    verbs = {v for doc in role if doc["kind"] == "ClusterRole" for r in doc["rules"]
             for v in r["verbs"]}
    assert verbs == {"get", "list", "watch"}

    token = core.create_namespaced_service_account_token(
        "otelguard-k8s-enricher", "otelguard", {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = kube.kubeconfig_for_token(token, "enricher")

    cid = new_container_id()
    w = make_world(admin, cid)
    e = enricher_factory(kubeconfig)
    a = _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid}, [{}]))))
    assert a[semconv.K8S_DEPLOYMENT_NAME] == "web" and a[semconv.K8S_POD_UID] == w.uid
    source = e.source
    assert isinstance(source, ApiServerSource)
    assert {k: s.errors for k, s in source.stats.items()} == {k: 0 for k in source.stats}

    # ... and nothing more: no secrets, no writes.
    restricted = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    for call in (lambda: restricted.list_secret_for_all_namespaces(),
                 lambda: restricted.list_config_map_for_all_namespaces(),
                 lambda: restricted.create_namespaced_pod(w.ns, o.pod(w.ns, "evil")),
                 lambda: restricted.delete_namespaced_pod(w.pod, w.ns)):
        with pytest.raises(ApiException) as denied:
            call()
        assert denied.value.status == 403


def test_node_mode_watches_only_its_node(
    admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    ns = make_namespace(admin)
    here, there = new_container_id(), new_container_id()
    create_running_pod(admin, ns, o.pod(ns, "here", node="node-b"), next_ip(), {"main": here})
    create_running_pod(admin, ns, o.pod(ns, "there", node="node-c"), next_ip(), {"main": there})
    e = enricher_factory(mode="node", node_name="node-b", hold_seconds=0)
    assert e.cache.knows_container(here)
    assert not e.cache.knows_container(there)
    assert all(p.node_name == "node-b" for p in e.cache.pods.values())


def test_record_before_its_pod_is_held_then_enriched(
    admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    e = enricher_factory(hold_seconds=15)
    cid = new_container_id()
    t0 = time.monotonic()
    out = e.process(o.logs(({semconv.CONTAINER_ID: cid}, [{semconv.PROCESS_PID: 7}])))
    assert len(out.resource_logs) == 0 and e.held_count == 1
    w = make_world(admin, cid)  # the kubelet reports the container after it started
    released = eventually(lambda: e.drain(final=False), 10, "held batch released")
    waited = time.monotonic() - t0
    a = attrs_dict(released[0].resource_logs[0].resource.attributes)
    assert a[semconv.K8S_POD_UID] == w.uid and a[semconv.K8S_DEPLOYMENT_NAME] == "web"
    assert waited < 15  # released by the pod's arrival, not by expiry
    assert e.held_count == 0


def test_deleted_pod_resolves_for_the_grace_period(
    admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    cid = new_container_id()
    w = make_world(admin, cid)
    e = enricher_factory(deleted_grace_seconds=3, hold_seconds=0)
    assert e.cache.knows_container(cid)
    core = apis(admin)[0]
    core.delete_namespaced_pod(w.pod, w.ns, grace_period_seconds=0)  # no kubelet to confirm
    deleted_at = time.monotonic()
    eventually(lambda: e.cache.sizes()["pods_deleted"] >= 1, 10, "delete event")
    assert _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid}, [{}]))))[
        semconv.K8S_POD_NAME] == w.pod
    before = _pod_not_found()
    time.sleep(max(0.0, deleted_at + 4.5 - time.monotonic()))
    assert semconv.K8S_POD_NAME not in _resource(
        e.process(o.logs(({semconv.CONTAINER_ID: cid}, [{}, {}]))))
    after = _pod_not_found()
    assert after == before + 2


def test_watch_cut_keeps_cache_and_catches_up(
    kube: KubeCluster, admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    relay = TcpRelay(kube.port)
    try:
        kubeconfig = kube.kubeconfig_for_token(kube.admin_token, "relayed",
                                               server=f"https://127.0.0.1:{relay.port}")
        cid1, cid2 = new_container_id(), new_container_id()
        w = make_world(admin, cid1)
        e = enricher_factory(kubeconfig, hold_seconds=0)
        assert e.cache.knows_container(cid1)
        relay.cut()
        # Created while the enricher cannot see the API server.
        uid2 = create_running_pod(admin, w.ns, o.pod(w.ns, "late"), next_ip(), {"main": cid2})
        time.sleep(1.5)
        assert not e.cache.knows_container(cid2)
        a = _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid1}, [{}]))))
        assert a[semconv.K8S_POD_NAME] == w.pod  # the cache survived the cut
        relay.restore()
        eventually(lambda: e.cache.knows_container(cid2), 20, "pod created during the cut")
        a = _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid2}, [{}]))))
        assert a[semconv.K8S_POD_UID] == uid2
        source = e.source
        assert isinstance(source, ApiServerSource)
        assert source.stats[Kind.POD].watches >= 2  # it re-watched
    finally:
        relay.close()


def test_apiserver_restart_keeps_cache_and_catches_up(
    kube: KubeCluster, admin: Any, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    """Runs last in this module: it restarts the session's API server."""
    cid1, cid3 = new_container_id(), new_container_id()
    w = make_world(admin, cid1)
    e = enricher_factory(hold_seconds=0)
    kube.stop_apiserver()
    try:
        time.sleep(1.0)
        a = _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid1}, [{}]))))
        assert a[semconv.K8S_DEPLOYMENT_NAME] == "web"  # answered from the cache while down
    finally:
        kube.start_apiserver()
    uid3 = create_running_pod(admin, w.ns, o.pod(w.ns, "after-restart"), next_ip(),
                              {"main": cid3})
    eventually(lambda: e.cache.knows_container(cid3), 30, "pod created after the restart")
    assert _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid3}, [{}]))))[
        semconv.K8S_POD_UID] == uid3
    assert e.cache.knows_container(cid1)
    source = e.source
    assert isinstance(source, ApiServerSource)
    assert source.stats[Kind.POD].errors >= 1


def test_410_gone_relists_without_losing_the_cache(
    tmp_path: Path, enricher_factory: Callable[..., K8sEnricher]
) -> None:
    """A second control plane without the watch cache, so a watch from a compacted revision gets
    410 Gone from etcd itself; the enricher must relist and keep serving meanwhile."""
    import subprocess

    from kubernetes import config

    from tests.support.kube import start_cluster

    cluster = start_cluster(tmp_path / "kube410", extra_args=["--watch-cache=false"])
    relay = TcpRelay(cluster.port)
    try:
        admin2 = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        kubeconfig = cluster.kubeconfig_for_token(cluster.admin_token, "relayed",
                                                  server=f"https://127.0.0.1:{relay.port}")
        cid1, cid2 = new_container_id(), new_container_id()
        w = make_world(admin2, cid1)
        e = enricher_factory(kubeconfig, hold_seconds=0)
        relay.cut()
        uid2 = create_running_pod(admin2, w.ns, o.pod(w.ns, "during-cut"), next_ip(),
                                  {"main": cid2})
        core = apis(admin2)[0]
        core.delete_namespaced_pod("db-0", w.ns, grace_period_seconds=0)
        status = subprocess.run(
            ["etcdctl", "--endpoints", cluster.etcd_url, "endpoint", "status", "-w", "json"],
            check=True, capture_output=True, text=True, timeout=30).stdout
        revision = yaml.safe_load(status)[0]["Status"]["header"]["revision"]
        subprocess.run(["etcdctl", "--endpoints", cluster.etcd_url, "compact", str(revision)],
                       check=True, capture_output=True, timeout=30)
        assert _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid1}, [{}]))))[
            semconv.K8S_POD_NAME] == w.pod
        relay.restore()
        source = e.source
        assert isinstance(source, ApiServerSource)
        eventually(lambda: e.cache.knows_container(cid2), 20, "pod created before compaction")
        assert source.stats[Kind.POD].expired >= 1 and source.stats[Kind.POD].lists >= 2
        assert _resource(e.process(o.logs(({semconv.CONTAINER_ID: cid2}, [{}]))))[
            semconv.K8S_POD_UID] == uid2
        # The relist noticed db-0 is gone: deleted, but resolvable for the grace period.
        db = [p for p in e.cache.pods.values() if p.name == "db-0"]
        assert len(db) == 1 and db[0].deleted_at is not None
        assert e.cache.knows_container(cid1)
    finally:
        relay.close()
        cluster.stop()  # the enricher is shut down by its fixture
