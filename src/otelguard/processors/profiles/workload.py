"""Which profile a record belongs to (its workload) and which instance of it sent the record.

A workload is what replicas and restarts share (docs/profiles.md#workloads):

- Kubernetes (the k8s enricher ran): namespace, the owning controller at the top of the chain
  the enricher wrote (Deployment, StatefulSet, DaemonSet, CronJob, else Job, else ReplicaSet,
  else the bare pod's name) and the container name: ``k8s/shop/Deployment/cart/web``;
- a container without Kubernetes metadata: its image when known (``image/registry/web``), else
  its container id (``container/3f1c…``, one profile per container);
- a host process: the systemd unit of its cgroup (``host/node-1/unit/nginx.service``), else the
  cgroup's last component with digits collapsed (``host/node-1/cgroup/session-*.scope``), else
  its executable (``host/node-1/exe/usr/sbin/sshd``).

The instance is the pod uid, else the container id, else the host name: an entry must be seen
from several instances before it is learned (the poisoning defence against one bad replica).
Cost: one pass over the Resource's attributes per Resource; host Resources one more attribute
read per record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from otelguard import semconv

_OWNERS = (  # the enricher writes every owner up the chain; the first present is the top
    ("Deployment", semconv.K8S_DEPLOYMENT_NAME), ("StatefulSet", semconv.K8S_STATEFULSET_NAME),
    ("DaemonSet", semconv.K8S_DAEMONSET_NAME), ("CronJob", semconv.K8S_CRONJOB_NAME),
    ("Job", semconv.K8S_JOB_NAME), ("ReplicaSet", semconv.K8S_REPLICASET_NAME),
)
_RESOURCE_KEYS = frozenset({k for _, k in _OWNERS} | {
    semconv.K8S_NAMESPACE_NAME, semconv.K8S_POD_NAME, semconv.K8S_POD_UID,
    semconv.K8S_CONTAINER_NAME, semconv.CONTAINER_ID, semconv.CONTAINER_IMAGE_NAME,
    semconv.HOST_NAME, semconv.HOST_PROCESS, semconv.STREAM,
})
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Origin:
    """What a Resource says about where its records come from."""

    workload: Optional[str]  # None: a host Resource, decided per record (see :func:`of_record`)
    instance: str
    host: str
    detection: bool  # otelguard.stream=detection: not observed, read for taint only


def of_resource(attributes: Any) -> Origin:
    """The workload and instance of one Resource's records (``attributes``: its KeyValues)."""
    res: dict[str, Any] = {}
    for kv in attributes:
        if kv.key in _RESOURCE_KEYS:
            v = kv.value
            res[kv.key] = v.bool_value if kv.key == semconv.HOST_PROCESS else v.string_value
    host = res.get(semconv.HOST_NAME) or "host"
    detection = res.get(semconv.STREAM) == semconv.STREAM_DETECTION
    instance = res.get(semconv.K8S_POD_UID) or res.get(semconv.CONTAINER_ID) or host
    ns = res.get(semconv.K8S_NAMESPACE_NAME)
    container = res.get(semconv.K8S_CONTAINER_NAME) or ""
    if ns:
        for kind, key in _OWNERS:
            name = res.get(key)
            if name:
                return Origin(f"k8s/{ns}/{kind}/{name}/{container}", instance, host, detection)
        pod = res.get(semconv.K8S_POD_NAME)
        if pod:
            return Origin(f"k8s/{ns}/Pod/{pod}/{container}", instance, host, detection)
    image = res.get(semconv.CONTAINER_IMAGE_NAME)
    if image:
        return Origin(f"image/{image}", instance, host, detection)
    cid = res.get(semconv.CONTAINER_ID)
    if cid and not res.get(semconv.HOST_PROCESS):
        return Origin(f"container/{cid}", instance, host, detection)
    return Origin(None, instance, host, detection)


def of_host_record(host: str, cgroup: str, exe: str) -> str:
    """The workload of a host process from its cgroup path and executable."""
    last = cgroup.rstrip("/").rpartition("/")[2]
    if last.endswith(".service"):
        return f"host/{host}/unit/{last}"
    if last:
        return f"host/{host}/cgroup/{_DIGITS.sub('*', last)}"
    return f"host/{host}/exe/{exe.lstrip('/') or 'unknown'}"
