"""Deployments with a revision history, their ReplicaSets, pods and nodes on the real API server,
written as the Deployment controller and the kubelet would (no controllers run there).

    r = rollout(admin, ns, "web", ["web:1", "web:2", "web:3"], replicas=3, ready=3)
    r.revisions[2]        # the ReplicaSet of revision 2 (as API JSON)
    r.pods                # the current ReplicaSet's pod names, the first ``ready`` of them Ready
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tests.processors.k8s import objects as o

REVISION = "deployment.kubernetes.io/revision"


def _json(resp: Any) -> Any:
    return json.loads(resp.data)


@dataclass
class Rollout:
    ns: str
    name: str
    uid: str
    revisions: dict[int, dict[str, Any]] = field(default_factory=dict)
    pods: list[str] = field(default_factory=list)


def template(app: str, image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "main", "image": image}]}}


def make_node(admin: Any, name: str) -> dict[str, Any]:
    from kubernetes import client

    core = client.CoreV1Api(admin)
    node: dict[str, Any] = _json(core.create_node({"metadata": {"name": name}},
                                                  _preload_content=False))
    return node


def add_pod(admin: Any, ns: str, name: str, owner_ref: dict[str, Any] | None,
            labels: dict[str, str], ready: bool, node: str = "node-a") -> str:
    """A pod as the ReplicaSet controller makes it, its status patched as the kubelet would."""
    from kubernetes import client

    core = client.CoreV1Api(admin)
    created = _json(core.create_namespaced_pod(
        ns, o.pod(ns, name, labels=labels, owner_ref=owner_ref, node=node),
        _preload_content=False))
    status = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    core.patch_namespaced_pod_status(name, ns, {"status": status})
    return str(created["metadata"]["uid"])


def rollout(admin: Any, ns: str, name: str, images: list[str], replicas: int = 1,
            ready: int = 1, node: str = "node-a") -> Rollout:
    """Deployment ``name`` at revision len(images) (its template the last image), one
    ReplicaSet per image (revision i+1), ``replicas`` pods of the current one."""
    from kubernetes import client

    apps = client.AppsV1Api(admin)
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                        "annotations": {REVISION: str(len(images))}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": template(name, images[-1])}}
    created = _json(apps.create_namespaced_deployment(ns, dep, _preload_content=False))
    r = Rollout(ns, name, created["metadata"]["uid"])
    for i, image in enumerate(images, 1):
        h = hashlib.sha256(image.encode()).hexdigest()[:10]
        tpl = template(name, image)
        tpl["metadata"]["labels"]["pod-template-hash"] = h
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{name}-{h}", "namespace": ns,
                           "labels": {"app": name, "pod-template-hash": h},
                           "annotations": {REVISION: str(i)},
                           "ownerReferences": [o.owner("Deployment", name, r.uid)]},
              "spec": {"replicas": replicas if i == len(images) else 0,
                       "selector": {"matchLabels": {"app": name, "pod-template-hash": h}},
                       "template": tpl}}
        r.revisions[i] = _json(apps.create_namespaced_replica_set(ns, rs, _preload_content=False))
    current = r.revisions[len(images)]
    labels = current["spec"]["template"]["metadata"]["labels"]
    for j in range(replicas):
        pod = f"{current['metadata']['name']}-{j}"
        add_pod(admin, ns, pod, o.owner("ReplicaSet", current["metadata"]["name"],
                                        current["metadata"]["uid"]), dict(labels), j < ready, node)
        r.pods.append(pod)
    return r
