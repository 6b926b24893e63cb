"""The enricher's in-memory view of the cluster: compact pod records and the indexes lookups use.

Fed by a :class:`~otelguard.processors.k8s.source.K8sSource` from its threads (``replace``,
``upsert``, ``delete``); read by ``process()`` under the same lock, which is held for dict lookups
only. Only the fields enrichment needs are kept (a pod is ~1-2 KB here, against ~10 KB of JSON).

Lookups:

* ``container.id`` -> pod, container name (from ``status.*ContainerStatuses[].containerID`` and
  the previous instance's ``lastState.terminated.containerID``, so a restarted container's last
  records still resolve);
* ``k8s.pod.uid`` -> pod;
* pod IP -> pod (``hostNetwork`` pods are not indexed by IP: they share the node's address);
* ClusterIP -> Service, EndpointSlice endpoint address -> Service (for peers).

A deleted pod stays resolvable for ``deleted_grace_seconds``: its last records (exit events,
spans closed at exit) are usually still in flight when the API server reports the delete. A
relist that no longer contains a pod counts as its delete, so the cache survives watch outages
without forgetting pods that are still running.

Resource attributes are built once per (pod version, container) and memoised; the memo is
invalidated by an ``owner_generation`` that moves only when a ReplicaSet's or Job's owner or a
namespace's selected labels change, not on every status update of those objects.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from otelguard import semconv
from otelguard.processors.k8s.config import Config, KeySelector
from otelguard.processors.k8s.pods import (
    Attrs, PodInfo, controller_of, nsname, pod_from,
)
from otelguard.processors.k8s.source import Kind, Obj

# Workload kinds in the order that names a pod's workload best (Deployment over its ReplicaSet).
WORKLOAD_KEYS = (
    ("Deployment", semconv.K8S_DEPLOYMENT_NAME),
    ("StatefulSet", semconv.K8S_STATEFULSET_NAME),
    ("DaemonSet", semconv.K8S_DAEMONSET_NAME),
    ("CronJob", semconv.K8S_CRONJOB_NAME),
    ("Job", semconv.K8S_JOB_NAME),
    ("ReplicaSet", semconv.K8S_REPLICASET_NAME),
)
_WORKLOAD_KEY = dict(WORKLOAD_KEYS)

# service.name of a pod with neither an application label nor a workload (a bare pod, or one
# owned by a custom controller): one fixed value, since a pod name per stream is what leaks
# cardinality into Loki (docs/architecture.md#streams). The pod name stays in k8s.pod.name.
BARE_POD_SERVICE_NAME = "bare-pod"
# The CronJob controller names each run's Job "<cronjob>-<scheduled minute since the epoch>";
# used only while the Job itself (which names its CronJob) is not in the cache yet.
_CRONJOB_RUN = re.compile(r"^(?P<cronjob>.+)-\d{8,10}$")


@dataclass(frozen=True, slots=True)
class Resolution:
    """A resolved Resource: the attributes to add, how the pod was found, and whether the
    container itself was found (False: pod-level attributes only)."""

    attrs: Attrs
    via: str  # "container_id" | "pod_uid" | "pod_ip"
    container_found: bool


class K8sCache:
    """Pods, owners, namespaces, Services and EndpointSlices; a K8sSink for the sources."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = config
        self._clock = clock
        self._labels = KeySelector(config.pod_labels)
        self._annotations = KeySelector(config.pod_annotations)
        self._ns_labels = KeySelector(config.namespace_labels)
        self._lock = threading.Lock()
        self.pods: dict[str, PodInfo] = {}
        self._pod_by_key: dict[tuple[str, str], str] = {}  # (ns, name) -> uid (live pods)
        self._by_container: dict[str, str] = {}
        self._by_ip: dict[str, str] = {}
        self._rs_owner: dict[tuple[str, str], tuple[str, str]] = {}  # -> (kind, name) or ("", "")
        self._job_owner: dict[tuple[str, str], tuple[str, str]] = {}
        self._ns_labels_of: dict[str, dict[str, str]] = {}
        self._svc_ips: dict[tuple[str, str], tuple[str, ...]] = {}
        self._by_cluster_ip: dict[str, tuple[str, str]] = {}
        # EndpointSlice (ns, slice name) -> (service name, addresses); address -> {(ns, svc): n}
        self._slices: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        self._by_endpoint_ip: dict[str, dict[tuple[str, str], int]] = {}
        self.owner_generation = 0
        self.generation = 0  # moves on every change; peers memoise on it
        self._peer_memo: dict[str, tuple[int, Optional[Attrs]]] = {}
        self._next_sweep = 0.0

    # --- sink --------------------------------------------------------------------------------

    def replace(self, kind: Kind, objects: list[Obj]) -> None:
        with self._lock:
            if kind is Kind.POD:
                present = set()
                for obj in objects:
                    uid = str((obj.get("metadata") or {}).get("uid") or "")
                    present.add(uid)
                    self._upsert_pod(obj)
                now = self._clock()
                for uid, pod in list(self.pods.items()):
                    if uid not in present and pod.deleted_at is None:
                        self._mark_deleted(pod, now)
            else:
                keep = {nsname(o) for o in objects}
                for key in list(self._keys_of(kind)):
                    if key not in keep:
                        self._delete_other(kind, key)
                for obj in objects:
                    self._upsert_other(kind, obj)
            self.generation += 1

    def upsert(self, kind: Kind, obj: Obj) -> None:
        with self._lock:
            if kind is Kind.POD:
                self._upsert_pod(obj)
                self._maybe_sweep()
            else:
                self._upsert_other(kind, obj)
            self.generation += 1

    def delete(self, kind: Kind, obj: Obj) -> None:
        with self._lock:
            if kind is Kind.POD:
                uid = str((obj.get("metadata") or {}).get("uid") or "")
                pod = self.pods.get(uid)
                if pod is None:  # deleted before we saw it: keep it for its late records
                    self._upsert_pod(obj)
                    pod = self.pods.get(uid)
                if pod is not None and pod.deleted_at is None:
                    self._mark_deleted(pod, self._clock())
            else:
                self._delete_other(kind, nsname(obj))
            self.generation += 1

    # --- pods --------------------------------------------------------------------------------

    def _upsert_pod(self, obj: Obj) -> None:
        pod = pod_from(obj, self._labels, self._annotations)
        if pod is None:
            return
        old = self.pods.get(pod.uid)
        if old is not None:
            for cid in old.container_ids:
                if cid not in pod.container_ids and self._by_container.get(cid) == pod.uid:
                    del self._by_container[cid]
            for ip in old.ips:
                if ip not in pod.ips and self._by_ip.get(ip) == pod.uid:
                    del self._by_ip[ip]
        # An object the API server lists or sends is live (a terminating pod is still running);
        # only a DELETED event or its absence from a relist marks it deleted.
        self.pods[pod.uid] = pod
        if pod.deleted_at is None:
            self._pod_by_key[(pod.namespace, pod.name)] = pod.uid
        for cid in pod.container_ids:
            self._by_container[cid] = pod.uid
        if not pod.host_network:
            for ip in pod.ips:
                current = self._by_ip.get(ip)
                holder = self.pods.get(current) if current else None
                # A live pod wins an address over a deleted one that used to have it.
                if holder is None or holder.deleted_at is not None or pod.deleted_at is None:
                    self._by_ip[ip] = pod.uid

    def _mark_deleted(self, pod: PodInfo, now: float) -> None:
        pod.deleted_at = now
        if self._pod_by_key.get((pod.namespace, pod.name)) == pod.uid:
            del self._pod_by_key[(pod.namespace, pod.name)]

    def _sweep(self, now: float) -> None:
        """Forget pods deleted longer than the grace period ago (lock held; ~1/s)."""
        grace = self._cfg.deleted_grace_seconds
        for uid, pod in list(self.pods.items()):
            if pod.deleted_at is not None and now - pod.deleted_at > grace:
                del self.pods[uid]
                for cid in pod.container_ids:
                    if self._by_container.get(cid) == uid:
                        del self._by_container[cid]
                for ip in pod.ips:
                    if self._by_ip.get(ip) == uid:
                        del self._by_ip[ip]
                self.generation += 1

    # --- owners, namespaces, services -----------------------------------------------------------

    def _keys_of(self, kind: Kind) -> list[tuple[str, str]]:
        if kind is Kind.REPLICASET:
            return list(self._rs_owner)
        if kind is Kind.JOB:
            return list(self._job_owner)
        if kind is Kind.NAMESPACE:
            return [("", n) for n in self._ns_labels_of]
        if kind is Kind.SERVICE:
            return list(self._svc_ips)
        if kind is Kind.ENDPOINTSLICE:
            return list(self._slices)
        return []

    def _upsert_other(self, kind: Kind, obj: Obj) -> None:
        key = nsname(obj)
        meta = obj.get("metadata") or {}
        if kind in (Kind.REPLICASET, Kind.JOB):
            table = self._rs_owner if kind is Kind.REPLICASET else self._job_owner
            owner = controller_of(meta)
            if table.get(key) != owner:
                table[key] = owner
                self.owner_generation += 1
        elif kind is Kind.NAMESPACE:
            selected = self._ns_labels.select(meta.get("labels"))
            if self._ns_labels_of.get(key[1]) != selected:
                self._ns_labels_of[key[1]] = selected
                self.owner_generation += 1
        elif kind is Kind.SERVICE:
            spec = obj.get("spec") or {}
            ips = [spec.get("clusterIP")] + list(spec.get("clusterIPs") or [])
            clean = tuple(dict.fromkeys(str(i) for i in ips if i and i != "None"))
            self._delete_other(kind, key)
            self._svc_ips[key] = clean
            for ip in clean:
                self._by_cluster_ip[ip] = key
        elif kind is Kind.ENDPOINTSLICE:
            service = str((meta.get("labels") or {}).get("kubernetes.io/service-name") or "")
            addresses: list[str] = []
            for ep in obj.get("endpoints") or []:
                addresses.extend(str(a) for a in ep.get("addresses") or [])
            self._delete_other(kind, key)
            entry = (service, tuple(dict.fromkeys(addresses)))
            self._slices[key] = entry
            if service:
                for ip in entry[1]:
                    counts = self._by_endpoint_ip.setdefault(ip, {})
                    svc_key = (key[0], service)
                    counts[svc_key] = counts.get(svc_key, 0) + 1

    def _delete_other(self, kind: Kind, key: tuple[str, str]) -> None:
        if kind is Kind.REPLICASET:
            if self._rs_owner.pop(key, None) is not None:
                self.owner_generation += 1
        elif kind is Kind.JOB:
            if self._job_owner.pop(key, None) is not None:
                self.owner_generation += 1
        elif kind is Kind.NAMESPACE:
            if self._ns_labels_of.pop(key[1], None) is not None:
                self.owner_generation += 1
        elif kind is Kind.SERVICE:
            for ip in self._svc_ips.pop(key, ()):
                if self._by_cluster_ip.get(ip) == key:
                    del self._by_cluster_ip[ip]
        elif kind is Kind.ENDPOINTSLICE:
            old = self._slices.pop(key, None)
            if old is not None and old[0]:
                svc_key = (key[0], old[0])
                for ip in old[1]:
                    counts = self._by_endpoint_ip.get(ip)
                    if counts is None:
                        continue
                    n = counts.get(svc_key, 0) - 1
                    if n > 0:
                        counts[svc_key] = n
                    else:
                        counts.pop(svc_key, None)
                    if not counts:
                        del self._by_endpoint_ip[ip]

    # --- lookups (process() path) -------------------------------------------------------------

    def _maybe_sweep(self) -> None:
        now = self._clock()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self._sweep(now)

    def resolve(
        self, container_id: Optional[str], pod_uid: Optional[str], pod_ip: Optional[str]
    ) -> Optional[Resolution]:
        """The Resource attributes for the first key that finds a pod (container.id, then
        k8s.pod.uid, then pod IP); None if none does."""
        with self._lock:
            self._maybe_sweep()
            if container_id:
                uid = self._by_container.get(container_id)
                if uid is not None:
                    owner = self.pods[uid]
                    name = owner.container_ids[container_id]
                    return Resolution(self._attrs(owner, name), "container_id", True)
            pod: Optional[PodInfo] = None
            via = ""
            if pod_uid:
                pod = self.pods.get(pod_uid)
                via = "pod_uid"
            if pod is None and pod_ip:
                uid = self._by_ip.get(pod_ip)
                pod = self.pods.get(uid) if uid else None
                via = "pod_ip"
            if pod is None:
                return None
            return Resolution(self._attrs(pod, None), via, not container_id)

    def knows_container(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._by_container

    def _workload(self, pod: PodInfo) -> list[tuple[str, str]]:
        """(kind, name) of every owner up the chain, nearest first (lock held)."""
        chain: list[tuple[str, str]] = []
        kind, name = pod.owner_kind, pod.owner_name
        for _ in range(3):
            if not kind or kind not in _WORKLOAD_KEY:
                break
            chain.append((kind, name))
            if kind == "ReplicaSet":
                kind, name = self._rs_owner.get((pod.namespace, name), ("", ""))
            elif kind == "Job":
                kind, name = self._job_owner.get((pod.namespace, name), ("", ""))
            else:
                break
        return chain

    def workload_of(self, pod: PodInfo) -> tuple[str, str]:
        """The workload that names the pod best: (kind, name), or ("", "") for a bare pod."""
        chain = self._workload(pod)
        ranked = {k: i for i, (k, _) in enumerate(WORKLOAD_KEYS)}
        best = min(chain, key=lambda kn: ranked[kn[0]], default=("", ""))
        return best

    def _service_of(self, pod: PodInfo) -> str:
        """service.name from the workload, stable across pods and runs (lock held): the
        CronJob's name for every run of it, never a Job's or a pod's own name."""
        kind, workload = self.workload_of(pod)
        if kind == "Job" and (pod.namespace, workload) not in self._job_owner:
            run = _CRONJOB_RUN.match(workload)
            return run.group("cronjob") if run else workload
        return workload or BARE_POD_SERVICE_NAME

    def _attrs(self, pod: PodInfo, container: Optional[str]) -> Attrs:
        memo_key = container or ""
        hit = pod.memo.get(memo_key)
        if hit is not None and hit[0] == self.owner_generation:
            return hit[1]
        attrs: Attrs = {
            semconv.K8S_NAMESPACE_NAME: pod.namespace,
            semconv.K8S_POD_NAME: pod.name,
            semconv.K8S_POD_UID: pod.uid,
            semconv.K8S_NODE_NAME: pod.node_name or None,
            semconv.K8S_POD_IP: pod.ips[0] if pod.ips else None,
        }
        chain = self._workload(pod)
        for kind, name in chain:
            attrs[_WORKLOAD_KEY[kind]] = name
        attrs[semconv.SERVICE_NAME] = pod.app_name or self._service_of(pod)
        info = pod.containers.get(container) if container else None
        if container:
            attrs[semconv.K8S_CONTAINER_NAME] = container
        if info is not None:
            attrs[semconv.CONTAINER_IMAGE_NAME] = info.image_name
            if info.image_tags:
                attrs[semconv.CONTAINER_IMAGE_TAGS] = list(info.image_tags)
            attrs[semconv.K8S_POD_PRIVILEGED] = info.privileged
            attrs[semconv.K8S_CONTAINER_MOUNTS] = list(info.mounts)  # [] too: spec known
            if info.liveness_probe:
                attrs[semconv.K8S_CONTAINER_LIVENESS_PROBE] = list(info.liveness_probe)
            if info.readiness_probe:
                attrs[semconv.K8S_CONTAINER_READINESS_PROBE] = list(info.readiness_probe)
            caps = info.added_capabilities
        else:
            attrs[semconv.K8S_POD_PRIVILEGED] = pod.privileged_any
            caps = pod.added_capabilities_all
        if caps:
            attrs[semconv.K8S_POD_ADDED_CAPABILITIES] = list(caps)
        attrs[semconv.K8S_POD_HOST_PID] = pod.host_pid
        attrs[semconv.K8S_POD_HOST_NETWORK] = pod.host_network
        if pod.service_account:
            attrs[semconv.K8S_POD_SERVICE_ACCOUNT] = pod.service_account
        for k, v in pod.labels.items():
            attrs[semconv.K8S_POD_LABEL_PREFIX + k] = v
        for k, v in pod.annotations.items():
            attrs[semconv.K8S_POD_ANNOTATION_PREFIX + k] = v
        for k, v in self._ns_labels_of.get(pod.namespace, {}).items():
            attrs[semconv.K8S_NAMESPACE_LABEL_PREFIX + k] = v
        pod.memo[memo_key] = (self.owner_generation, attrs)
        return attrs

    def peer(self, ip: str) -> Optional[Attrs]:
        """Peer attributes for an address: the pod that has it and/or the Service it belongs to
        (ClusterIP, or an EndpointSlice endpoint). None if the address is not the cluster's.
        Memoised until the next change of the cache (the returned dict must not be mutated)."""
        with self._lock:
            hit = self._peer_memo.get(ip)
            if hit is not None and hit[0] == self.generation:
                return hit[1]
            if len(self._peer_memo) >= 65536:
                self._peer_memo.clear()
            result = self._peer(ip)
            self._peer_memo[ip] = (self.generation, result)
            return result

    def _peer(self, ip: str) -> Optional[Attrs]:
        out: Attrs = {}
        uid = self._by_ip.get(ip)
        pod = self.pods.get(uid) if uid else None
        if pod is not None:
            out[semconv.PEER_K8S_POD_NAME] = pod.name
            out[semconv.PEER_K8S_NAMESPACE_NAME] = pod.namespace
            kind, name = self.workload_of(pod)
            if kind:
                out[semconv.PEER_K8S_WORKLOAD_KIND] = kind
                out[semconv.PEER_K8S_WORKLOAD_NAME] = name
        svc = self._by_cluster_ip.get(ip)
        if svc is None:
            candidates = self._by_endpoint_ip.get(ip)
            if candidates:
                svc = min(candidates)  # deterministic when several Services select a pod
        if svc is not None:
            out[semconv.PEER_K8S_SERVICE_NAME] = svc[1]
            out.setdefault(semconv.PEER_K8S_NAMESPACE_NAME, svc[0])
        return out or None

    def sizes(self) -> dict[str, int]:
        """Object counts per table, for tests, benchmarks and the status page."""
        with self._lock:
            return {
                "pods": len(self.pods),
                "pods_deleted": sum(1 for p in self.pods.values() if p.deleted_at is not None),
                "containers": len(self._by_container),
                "replicasets": len(self._rs_owner),
                "jobs": len(self._job_owner),
                "namespaces": len(self._ns_labels_of),
                "services": len(self._svc_ips),
                "endpointslices": len(self._slices),
            }
