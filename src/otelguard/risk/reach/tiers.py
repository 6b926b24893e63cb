"""The tier map: namespace and Service tiers and the addresses of Services, from the API server
(docs/risk.md#sensitive-reach), plus the built-in sensitive targets."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from otelguard import semconv as S
from otelguard.kube.reflector import Kind, Obj
from otelguard.risk.reach.config import ReachConfig

API_SERVICE = ("default", "kubernetes")
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})
ETCD_PORTS = frozenset({2379, 2380})
KUBELET_PORT = 10250
KINDS = (Kind.NAMESPACE, Kind.SERVICE, Kind.ENDPOINTSLICE)  # what the map watches


@dataclass(frozen=True)
class Target:
    """A sensitive destination: ``id`` is stable across its addresses (``service:NS/NAME``,
    ``namespace:NS``, ``builtin:api-server``...)."""

    id: str
    tier: str
    reason: str  # why it is that tier: "label on Service shop/db", "built-in: etcd"


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
        self._targets: dict[str, Target] = {}  # id -> the one Target object (edges share it)

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

    def is_api_server(self, address: str, port: int, f: Mapping[str, Any]) -> bool:
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

    def target(self, address: str, port: int, f: Mapping[str, Any]) -> Optional[Target]:
        """The sensitive target a connect record reaches, None when it is not sensitive (one
        shared object per target: every edge to it holds the same)."""
        t = self._target(address, port, f)
        if t is None:
            return None
        held = self._targets.get(t.id)
        if held is None or held != t:
            if len(self._targets) >= 65536:
                self._targets.clear()
            held = self._targets[t.id] = t
        return held

    def _target(self, address: str, port: int, f: Mapping[str, Any]) -> Optional[Target]:
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
    def _peer_name(f: Mapping[str, Any]) -> str:
        """The peer workload the enricher named (a pod of a labelled namespace), else ""."""
        name = f.get(S.PEER_K8S_WORKLOAD_NAME)
        return f"workload:{f.get(S.PEER_K8S_NAMESPACE_NAME) or ''}/" \
               f"{f.get(S.PEER_K8S_WORKLOAD_KIND) or ''}/{name}" if name else ""

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"namespaces": len(self.ns_tier), "services": len(self._svc_ips),
                    "endpointslices": len(self._slices), "addresses": len(self._by_ip)}
