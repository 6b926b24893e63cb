"""A small Kubernetes world on a real kube-apiserver, for the enricher, attack and e2e tests.

There is no controller-manager or kubelet: the helpers write what they would (Deployment ->
ReplicaSet -> Pod ownerReferences, the pod's status with containerIDs and podIP, Services,
EndpointSlices). The ``kube`` and ``admin`` fixtures start one control plane per session
(tests/support/kube.py); a conftest or test module that needs them imports them from here.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from otelguard.processors.k8s import Config, K8sEnricher
from otelguard.processors.k8s.source import ApiServerSource
from tests.ebpf.containers import new_container_id
from tests.processors.k8s import objects as o
from tests.support.kube import KubeCluster, start_cluster
from tests.support.polling import wait_for
from tests.support.prerequisites import require_kube_apiserver

IMAGE = "registry.local:5000/shop/web:2.1"
_ips = itertools.count(1)


def next_ip() -> str:
    n = next(_ips)
    return f"10.244.{n // 250}.{n % 250 + 1}"


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` every 0.1 s until it returns something truthy, and return that."""
    got: list[Any] = []
    wait_for(lambda: got.append(check()) or got[-1], timeout, what or str(check), interval=0.1)
    return got[-1]


@dataclass
class World:
    ns: str
    pod: str
    uid: str
    cid: str
    ip: str
    service_ip: str
    db_ip: str


def apis(admin: Any) -> tuple[Any, Any, Any, Any]:
    from kubernetes import client

    return (client.CoreV1Api(admin), client.AppsV1Api(admin), client.DiscoveryV1Api(admin),
            client.BatchV1Api(admin))


def create_running_pod(admin: Any, ns: str, body: dict[str, Any], ip: str,
                       ids: dict[str, str]) -> str:
    """Create the pod, then patch its status as the kubelet would; returns the pod's uid."""
    core = apis(admin)[0]
    created = core.create_namespaced_pod(ns, body)
    status = o.running(body, ip, ids)["status"]
    core.patch_namespaced_pod_status(body["metadata"]["name"], ns, {"status": status})
    return str(created.metadata.uid)


@contextlib.contextmanager
def unless_exists() -> Iterator[None]:
    """Create-if-absent: the API's 409 (AlreadyExists) counts as done, for module fixtures that
    share a namespace or cluster-wide objects with an earlier module."""
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        if exc.status != 409:
            raise


def make_namespace(admin: Any, labels: Optional[dict[str, str]] = None) -> str:
    core = apis(admin)[0]
    ns = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(o.namespace(ns, labels or {"team": "payments"}))
    for sa in ("default", "web-sa"):
        core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
    return ns


def make_world(admin: Any, cid: str) -> World:
    """Namespace; Deployment web -> ReplicaSet -> running pod (container ``cid``); StatefulSet pod
    db; Service web-svc (ClusterIP) with an EndpointSlice listing the web pod."""
    core, apps, disc, _ = apis(admin)
    ns = make_namespace(admin)
    dep = apps.create_namespaced_deployment(ns, o.deployment(ns, "web", "web", IMAGE))
    apps.create_namespaced_replica_set(ns, o.replicaset(
        ns, "web-5d4f", "web", IMAGE, o.owner("Deployment", "web", dep.metadata.uid)))
    rs = apps.read_namespaced_replica_set("web-5d4f", ns)
    ip = next_ip()
    body = o.pod(ns, "web-5d4f-x",
                 labels={"app": "web", "app.kubernetes.io/name": "storefront", "tier": "front"},
                 annotations={"otelguard.io/profile": "strict"},
                 owner_ref=o.owner("ReplicaSet", "web-5d4f", rs.metadata.uid),
                 containers=[{"name": "main", "image": IMAGE, "securityContext": {
                     "capabilities": {"add": ["NET_RAW"]}}}],
                 service_account="web-sa")
    uid = create_running_pod(admin, ns, body, ip, {"main": cid})
    db_ip = next_ip()
    create_running_pod(admin, ns, o.pod(ns, "db-0", owner_ref=o.owner("StatefulSet", "db",
                                                                      str(uuid.uuid4()))),
                       db_ip, {"main": new_container_id()})
    svc = core.create_namespaced_service(ns, o.service(ns, "web-svc", None, "web"))
    disc.create_namespaced_endpoint_slice(ns, o.endpointslice(ns, "web-svc-1", "web-svc", [ip]))
    return World(ns, "web-5d4f-x", uid, cid, ip, str(svc.spec.cluster_ip), db_ip)


@pytest.fixture
def enricher_factory(kube: KubeCluster) -> Iterator[Callable[..., K8sEnricher]]:
    made: list[K8sEnricher] = []

    def make(kubeconfig: Optional[Path] = None, **cfg: Any) -> K8sEnricher:
        cfg.setdefault("wait_for_sync_seconds", 20)
        cfg.setdefault("pod_annotations", ("otelguard.io/*",))
        cfg.setdefault("max_backoff_seconds", 0.5)
        e = K8sEnricher(Config(kubeconfig=str(kubeconfig or kube.kubeconfig), **cfg))
        e.start()
        made.append(e)
        source = e.source
        assert isinstance(source, ApiServerSource) and source.synced()
        return e

    yield make
    for e in made:
        e.shutdown()



@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A real etcd + kube-apiserver, one per session."""
    require_kube_apiserver()
    cluster = start_cluster(tmp_path_factory.mktemp("kube"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def admin(kube: KubeCluster) -> Any:
    """An ApiClient with the admin token (system:masters)."""
    from kubernetes import config

    return config.new_client_from_config(config_file=str(kube.kubeconfig))
