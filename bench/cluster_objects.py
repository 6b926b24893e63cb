"""A populated cluster for the enrichment benchmarks: Deployments, ReplicaSets, running pods,
Services and EndpointSlices written into a real kube-apiserver, as controllers and kubelets would.

There is no controller-manager or kubelet behind ``tests/support/kube.py``, so this module plays
their part: per *app* (a group of 10 pods) it creates, for 4 apps in 5, a Deployment and a
ReplicaSet owned by it (the pods owned by the ReplicaSet), and for the 5th bare pods; every pod
has two containers (``main`` and an Envoy ``sidecar`` adding ``NET_ADMIN``), five labels, one
annotation, a node and a service account, and its status is patched to Running with a pod IP and
one containerd ``containerID`` per container (the key the enrichers associate on). Each app gets
a ClusterIP Service and an EndpointSlice listing its pods. Pods spread over 20 namespaces, each
labelled ``team``.

Cost: ~2.4 API calls per pod (create + status patch, plus the per-app objects). Apps are created
in a bounded thread pool, with response bodies left unparsed except where a uid or ClusterIP is
needed; on 2 loaded cores that is roughly 150-400 pods/s.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

NAMESPACES = 20
PODS_PER_APP = 10
BARE_EVERY = 5  # every 5th app has bare pods (no owner)
NODE = "bench-node-1"
CONTAINERS = ("main", "sidecar")
SIDECAR_IMAGE = "envoyproxy/envoy:v1.30.1"


@dataclass(frozen=True)
class Container:
    """One container the record stream can name: its Resource keys and what it should get."""

    container_id: str  # 64 hex, without the runtime prefix (as the agent reports it)
    pod_uid: str
    pod_name: str
    namespace: str


@dataclass
class Population:
    """What :func:`populate` created so far (appended to by later calls)."""

    pods: int = 0
    containers: list[Container] = field(default_factory=list)
    pod_ips: list[str] = field(default_factory=list)
    service_ips: list[str] = field(default_factory=list)
    api_calls: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def namespace_of(app: int) -> str:
    return f"bench-{app % NAMESPACES}"


def pod_ip(i: int) -> str:
    return f"10.{244 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def template_hash(text: str, length: int) -> str:
    """A name suffix in the alphabet the Deployment controller uses for pod-template-hash
    (the Collector derives the Deployment name from the ReplicaSet name by stripping it)."""
    digest = int(hashlib.sha1(text.encode()).hexdigest(), 16)
    return "".join(_HASH_ALPHABET[(digest >> (5 * k)) % len(_HASH_ALPHABET)]
                   for k in range(length))


_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def container_id(i: int, name: str) -> str:
    return hashlib.sha256(f"bench-pod-{i}/{name}".encode()).hexdigest()


def api_client(kubeconfig: Path) -> Any:
    from kubernetes import config as kube_config

    new_client: Any = kube_config.new_client_from_config  # untyped in the client package
    return new_client(config_file=str(kubeconfig))


def create_namespaces(api: Any) -> None:
    """The namespaces and their ``default`` ServiceAccount (no controller creates it here;
    pod admission refuses a pod whose ServiceAccount is missing)."""
    from kubernetes import client

    core: Any = client.CoreV1Api(api)  # Any: bodies are plain dicts, not the client's models
    for n in range(NAMESPACES):
        ns = f"bench-{n}"
        core.create_namespace({"metadata": {"name": ns, "labels": {"team": f"team-{n % 4}"}}},
                              _preload_content=False)
        core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}},
                                               _preload_content=False)


def _template(app: str, image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": image}]}}


def _owner(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}


def _uid(resp: Any) -> str:
    return str(json.loads(resp.data)["metadata"]["uid"])


def _create_app(api: Any, app: int, first_pod: int, out: Population) -> None:
    from kubernetes import client

    # Any: bodies are plain dicts and responses raw (_preload_content=False), not the models
    core: Any = client.CoreV1Api(api)
    apps: Any = client.AppsV1Api(api)
    disc: Any = client.DiscoveryV1Api(api)
    ns = namespace_of(app)
    name = f"app-{app}"
    image = f"registry.local/shop/{name}:1.{app % 7}"
    calls = 0
    owner_ref: Optional[dict[str, Any]] = None
    pod_hash = template_hash(name, 9)
    rs_name = f"{name}-{pod_hash}"
    if app % BARE_EVERY != BARE_EVERY - 1:
        spec = {"replicas": PODS_PER_APP, "selector": {"matchLabels": {"app": name}},
                "template": _template(name, image)}
        dep = apps.create_namespaced_deployment(ns, {
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}}, "spec": spec},
            _preload_content=False)
        rs = apps.create_namespaced_replica_set(ns, {
            "metadata": {"name": rs_name, "namespace": ns, "labels": {"app": name},
                         "ownerReferences": [_owner("Deployment", name, _uid(dep))]},
            "spec": spec}, _preload_content=False)
        owner_ref = _owner("ReplicaSet", rs_name, _uid(rs))
        calls += 2
    made: list[Container] = []
    ips: list[str] = []
    for k in range(PODS_PER_APP):
        i = first_pod + k
        pod_name = f"{rs_name}-{template_hash(str(i), 5)}"
        meta: dict[str, Any] = {
            "name": pod_name, "namespace": ns,
            "labels": {"app": name, "app.kubernetes.io/name": name, "team": "shop",
                       "version": f"1.{app % 7}", "pod-template-hash": pod_hash},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-23T10:00:00Z"}}
        if owner_ref is not None:
            meta["ownerReferences"] = [owner_ref]
        pod = core.create_namespaced_pod(ns, {"metadata": meta, "spec": {
            "nodeName": NODE, "serviceAccountName": "default",
            "containers": [{"name": "main", "image": image},
                           {"name": "sidecar", "image": SIDECAR_IMAGE, "securityContext": {
                               "capabilities": {"add": ["NET_ADMIN"]}}}]}},
            _preload_content=False)
        uid = _uid(pod)
        ip = pod_ip(i)
        core.patch_namespaced_pod_status(pod_name, ns, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "containerStatuses": [
                {"name": c, "containerID": f"containerd://{container_id(i, c)}", "ready": True,
                 "restartCount": 0, "image": image if c == "main" else SIDECAR_IMAGE,
                 "imageID": "", "state": {"running": {"startedAt": "2026-11-23T10:00:00Z"}}}
                for c in CONTAINERS]}}, _preload_content=False)
        calls += 2
        made.extend(Container(container_id(i, c), uid, pod_name, ns) for c in CONTAINERS)
        ips.append(ip)
    svc = core.create_namespaced_service(ns, {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}},
        _preload_content=False)
    cluster_ip = str(json.loads(svc.data)["spec"]["clusterIP"])
    disc.create_namespaced_endpoint_slice(ns, {
        "metadata": {"name": f"{name}-1", "namespace": ns,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in ips],
        "ports": [{"port": 80, "protocol": "TCP", "name": ""}]}, _preload_content=False)
    calls += 2
    with out._lock:
        out.pods += PODS_PER_APP
        out.containers.extend(made)
        out.pod_ips.extend(ips)
        out.service_ips.append(cluster_ip)
        out.api_calls += calls


def populate(api: Any, out: Population, n_pods: int, threads: int = 8,
             deadline_s: float = 300.0) -> bool:
    """Create ``n_pods`` more pods (rounded up to whole apps) after the ``out.pods`` existing
    ones. Returns False when ``deadline_s`` passed first (what was created stays in ``out``);
    an API error propagates."""
    t0 = time.monotonic()
    first_app = out.pods // PODS_PER_APP
    n_apps = -(-n_pods // PODS_PER_APP)
    stop = threading.Event()

    def one(app: int) -> None:
        if stop.is_set() or time.monotonic() - t0 > deadline_s:
            stop.set()
            return
        _create_app(api, app, app * PODS_PER_APP, out)

    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="bench-kube") as pool:
        for fut in [pool.submit(one, a) for a in range(first_app, first_app + n_apps)]:
            fut.result()
    out.seconds += time.monotonic() - t0
    return not stop.is_set()
