"""Sensitive reach: a workload of a lower tier connecting to a sensitive system.

Tiers come from the label ``otelguard.dev/tier`` (``label`` in the config) on namespaces and
Services, read from the API server as the k8s enricher reads them (a
:class:`~otelguard.processors.k8s.source.K8sSource` feeding :class:`TierMap`: namespaces,
Services and EndpointSlices, nothing per pod), plus built-in sensitive targets that carry no
label:

- the cloud metadata address (169.254.169.254, AWS's fd00:ec2::254, Alibaba's
  100.100.100.200),
- the API server: the ``default/kubernetes`` Service's ClusterIP and its endpoints,
- etcd (peer ports 2379 and 2380), the kubelet's port 10250 on any address.

A connect record (succeeded, in progress or refused alike: the attempt is the reach) finds its
target by the peer the enricher named (``otelguard.peer.k8s.namespace.name``/``service.name``),
else by its address in the map (ClusterIPs and endpoints of labelled Services). The source's
tier is its namespace's, raised to a Service's when the pod's address is one of that Service's
endpoints. An edge (source workload -> target, port) from a tier below the target's
``sensitive`` tier, never seen before, is a finding at once, in the same batch (the latency is
the pipeline's). Host processes are not sources (the node's own components talk to the kubelet,
etcd and the API server); nor is a container's loopback, unless the pod uses the node's
network.

Memory: per workload at most ``max_edges`` remembered edges (least recently seen forgotten, so
an edge forgotten and seen again is reported again); at most ``max_workloads`` workloads.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.config import Checks
from otelguard.processors.k8s.source import Kind, Obj

TIER_LABEL = "otelguard.dev/tier"
API_SERVICE = ("default", "kubernetes")
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
ETCD_PORTS = frozenset({2379, 2380})
KUBELET_PORT = 10250
_EINPROGRESS = -115
KINDS = (Kind.NAMESPACE, Kind.SERVICE, Kind.ENDPOINTSLICE)
READS = frozenset({S.SYSCALL_RET, S.LOG_RECORD_UID, S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT,
                   S.PEER_K8S_NAMESPACE_NAME, S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_WORKLOAD_NAME,
                   S.PEER_K8S_WORKLOAD_KIND, S.PROCESS_EXECUTABLE_PATH, S.PROCESS_PID})


@dataclass(frozen=True)
class ReachConfig:
    """Sensitive-reach analysis (docs/risk-grants.md)."""

    enabled: bool = True
    label: str = TIER_LABEL  # the namespace and Service label that names a tier
    # Tiers from lowest to highest; a label value not listed counts as default_tier.
    tiers: tuple[str, ...] = ("public", "standard", "sensitive")
    default_tier: str = "standard"  # the tier of a namespace or Service without the label
    sensitive_tier: str = "sensitive"  # edges into this tier from a lower one are findings
    # Built-in targets (sensitive without a label): metadata, API server, etcd, kubelet.
    builtins: bool = True
    max_edges: int = 256  # edges remembered per workload (least recently seen forgotten)
    max_workloads: int = 10000  # workloads tracked (least recently seen forgotten, counted)

    def __post_init__(self) -> None:
        checks = Checks()
        if self.default_tier not in self.tiers:
            checks.add("default_tier", f"{self.default_tier!r} is not one of tiers {self.tiers}")
        if self.sensitive_tier not in self.tiers:
            checks.add("sensitive_tier",
                       f"{self.sensitive_tier!r} is not one of tiers {self.tiers}")
        if len(set(self.tiers)) != len(self.tiers):
            checks.add("tiers", "must be distinct")
        checks.at_least(self, 1, "max_edges", "max_workloads")
        checks.done()


@dataclass(frozen=True)
class Target:
    """A sensitive destination: ``id`` is stable across its addresses (``service:NS/NAME``,
    ``namespace:NS``, ``builtin:api-server``...)."""

    id: str
    tier: str
    reason: str  # why it is that tier: "label on Service shop/db", "built-in: etcd"


@dataclass(frozen=True)
class ReachFinding:
    workload: str
    source_tier: str
    target: Target
    address: str
    port: int
    executable: str
    trigger_uid: str
    connected: bool  # False: refused or failed (the attempt still reached for it)


class TierMap:
    """Namespace and Service tiers and the addresses of Services; a ``K8sSink`` fed by the
    source's threads, read by ``process()`` under one lock held for dict lookups."""

    def __init__(self, config: ReachConfig) -> None:
        self.cfg = config
        self._lock = threading.Lock()
        self._rank = {t: i for i, t in enumerate(config.tiers)}
        self.ns_tier: dict[str, str] = {}
        self.svc_tier: dict[tuple[str, str], str] = {}
        self._svc_ips: dict[tuple[str, str], tuple[str, ...]] = {}
        self._by_ip: dict[str, set[tuple[str, str]]] = {}  # ClusterIP or endpoint -> Services
        self._slices: dict[tuple[str, str], tuple[tuple[str, str], tuple[str, ...]]] = {}

    # --- sink ----------------------------------------------------------------------------------

    def _tier(self, labels: Optional[dict[str, str]]) -> Optional[str]:
        value = (labels or {}).get(self.cfg.label)
        if value is None:
            return None
        return value if value in self._rank else self.cfg.default_tier

    def replace(self, kind: Kind, objects: list[Obj]) -> None:
        with self._lock:
            if kind is Kind.NAMESPACE:
                self.ns_tier.clear()
            elif kind is Kind.SERVICE:
                for key in list(self._svc_ips):
                    self._drop_service(key)
                self.svc_tier.clear()
            elif kind is Kind.ENDPOINTSLICE:
                for key in list(self._slices):
                    self._drop_slice(key)
            for obj in objects:
                self._upsert(kind, obj)

    def upsert(self, kind: Kind, obj: Obj) -> None:
        with self._lock:
            self._upsert(kind, obj)

    def delete(self, kind: Kind, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self._lock:
            if kind is Kind.NAMESPACE:
                self.ns_tier.pop(key[1], None)
            elif kind is Kind.SERVICE:
                self._drop_service(key)
                self.svc_tier.pop(key, None)
            elif kind is Kind.ENDPOINTSLICE:
                self._drop_slice(key)

    def _upsert(self, kind: Kind, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        tier = self._tier(meta.get("labels"))
        if kind is Kind.NAMESPACE:
            if tier is None:
                self.ns_tier.pop(key[1], None)
            else:
                self.ns_tier[key[1]] = tier
        elif kind is Kind.SERVICE:
            self._drop_service(key)
            if tier is None:
                self.svc_tier.pop(key, None)
            else:
                self.svc_tier[key] = tier
            spec = obj.get("spec") or {}
            ips = [spec.get("clusterIP")] + list(spec.get("clusterIPs") or [])
            clean = tuple(dict.fromkeys(str(i) for i in ips if i and i != "None"))
            self._svc_ips[key] = clean
            for ip in clean:
                self._by_ip.setdefault(ip, set()).add(key)
        elif kind is Kind.ENDPOINTSLICE:
            self._drop_slice(key)
            service = str((meta.get("labels") or {}).get("kubernetes.io/service-name") or "")
            if not service:
                return
            addresses = tuple(dict.fromkeys(
                str(a) for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or []))
            svc = (key[0], service)
            self._slices[key] = (svc, addresses)
            for ip in addresses:
                self._by_ip.setdefault(ip, set()).add(svc)

    def _unindex(self, ip: str, svc: tuple[str, str]) -> None:
        held = self._by_ip.get(ip)
        if held is not None:
            held.discard(svc)
            if not held:
                del self._by_ip[ip]

    def _drop_service(self, key: tuple[str, str]) -> None:
        for ip in self._svc_ips.pop(key, ()):
            if not any(s[0] == key and ip in s[1] for s in self._slices.values()):
                self._unindex(ip, key)

    def _drop_slice(self, key: tuple[str, str]) -> None:
        old = self._slices.pop(key, None)
        if old is None:
            return
        svc, addresses = old
        for ip in addresses:
            if ip not in self._svc_ips.get(svc, ()) and not any(
                    s[0] == svc and ip in s[1] for s in self._slices.values()):
                self._unindex(ip, svc)

    # --- lookups -------------------------------------------------------------------------------

    def rank(self, tier: str) -> int:
        return self._rank.get(tier, self._rank[self.cfg.default_tier])

    def is_api_server(self, address: str, port: int, f: dict[str, Any]) -> bool:
        """A connection to the API server: its Service named by the enricher, or one of the
        ``default/kubernetes`` Service's addresses."""
        if (f.get(S.PEER_K8S_NAMESPACE_NAME), f.get(S.PEER_K8S_SERVICE_NAME)) == API_SERVICE:
            return True
        with self._lock:
            return API_SERVICE in self._by_ip.get(address, ())

    def source_tier(self, namespace: str, pod_ip: str) -> str:
        """A workload's tier: its namespace's, raised by a labelled Service it backs."""
        with self._lock:
            tier = self.ns_tier.get(namespace, self.cfg.default_tier)
            for svc in self._by_ip.get(pod_ip, ()) if pod_ip else ():
                st = self.svc_tier.get(svc)
                if st is not None and self.rank(st) > self.rank(tier):
                    tier = st
        return tier

    def target(self, address: str, port: int, f: dict[str, Any]) -> Optional[Target]:
        """The sensitive target a connect record reaches, None when it is not sensitive."""
        sensitive = self.cfg.sensitive_tier
        if self.cfg.builtins:
            if address in METADATA_ADDRESSES:
                return Target("builtin:cloud-metadata", sensitive, "built-in: cloud metadata")
            if self.is_api_server(address, port, f):
                return Target("builtin:api-server", sensitive, "built-in: the API server")
            if port in ETCD_PORTS:
                return Target(f"builtin:etcd/{address}", sensitive, "built-in: etcd port")
            if port == KUBELET_PORT:
                return Target(f"builtin:kubelet/{address}", sensitive,
                              "built-in: the kubelet's port")
        peer_ns = str(f.get(S.PEER_K8S_NAMESPACE_NAME) or "")
        peer_svc = str(f.get(S.PEER_K8S_SERVICE_NAME) or "")
        with self._lock:
            services = set(self._by_ip.get(address, ()))
            if peer_ns and peer_svc:
                services.add((peer_ns, peer_svc))
            for svc in sorted(services):
                if self.svc_tier.get(svc) == sensitive:
                    return Target(f"service:{svc[0]}/{svc[1]}", sensitive,
                                  f"label on Service {svc[0]}/{svc[1]}")
            namespaces = {peer_ns} if peer_ns else {s[0] for s in services}
            for ns in sorted(namespaces):
                if self.ns_tier.get(ns) == sensitive:
                    what = self._peer_name(f) or f"namespace:{ns}"
                    return Target(what, sensitive, f"label on namespace {ns}")
        return None

    @staticmethod
    def _peer_name(f: dict[str, Any]) -> str:
        ns = f.get(S.PEER_K8S_NAMESPACE_NAME) or ""
        if f.get(S.PEER_K8S_WORKLOAD_NAME):
            return f"workload:{ns}/{f.get(S.PEER_K8S_WORKLOAD_KIND) or ''}/" \
                   f"{f[S.PEER_K8S_WORKLOAD_NAME]}"
        if f.get(S.PEER_K8S_SERVICE_NAME):
            return f"service:{ns}/{f[S.PEER_K8S_SERVICE_NAME]}"
        return ""

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"namespaces": len(self.ns_tier), "services": len(self._svc_ips),
                    "endpointslices": len(self._slices), "addresses": len(self._by_ip)}


class ReachTracker:
    """The edges each workload was seen on, and the new sensitive ones as findings."""

    def __init__(self, config: ReachConfig, tiers: TierMap) -> None:
        self.cfg = config
        self.tiers = tiers
        self.edges: OrderedDict[str, OrderedDict[str, Target]] = OrderedDict()
        self.evicted_workloads = 0
        self.evicted_edges = 0

    def connect(self, workload: str, namespace: str, pod_ip: str, host_network: bool,
                f: dict[str, Any]) -> Optional[ReachFinding]:
        """One connect record of ``workload``; a finding when it is a new edge from a lower
        tier into the sensitive one. Loopback is the pod's own network namespace unless the
        pod uses the node's (``host_network``: then 127.0.0.1:2379 is the node's etcd)."""
        ret = f.get(S.SYSCALL_RET, 0)
        address = str(f.get(S.NETWORK_PEER_ADDRESS) or "")
        port = int(f.get(S.NETWORK_PEER_PORT) or 0)
        if not address or (_loopback(address) and not host_network):
            return None
        target = self.tiers.target(address, port, f)
        if target is None:
            return None
        source_tier = self.tiers.source_tier(namespace, pod_ip)
        if self.tiers.rank(source_tier) >= self.tiers.rank(target.tier):
            return None
        seen = self.edges.get(workload)
        if seen is None:
            seen = self.edges[workload] = OrderedDict()
            while len(self.edges) > self.cfg.max_workloads:
                self.edges.popitem(last=False)
                self.evicted_workloads += 1
        else:
            self.edges.move_to_end(workload)
        key = f"{target.id}|{port}"
        if key in seen:
            seen.move_to_end(key)
            return None
        seen[key] = target
        if len(seen) > self.cfg.max_edges:
            seen.popitem(last=False)
            self.evicted_edges += 1
        return ReachFinding(workload, source_tier, target, address, port,
                            str(f.get(S.PROCESS_EXECUTABLE_PATH) or ""),
                            str(f.get(S.LOG_RECORD_UID) or ""), ret >= 0 or ret == _EINPROGRESS)

    def sensitive_edges(self) -> dict[str, int]:
        """Workload -> sensitive edges remembered (the gauge)."""
        return {w: len(e) for w, e in self.edges.items()}


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
