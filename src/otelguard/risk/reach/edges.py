"""The edges each workload was seen on; a new one from a lower tier into the sensitive one is a
finding (docs/risk.md#sensitive-reach). Bounded per workload (``max_edges``)."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from otelguard import semconv as S
from otelguard.risk.reach.config import ReachConfig
from otelguard.risk.reach.tiers import Target, TierMap

_EINPROGRESS = -115


@dataclass(frozen=True, slots=True)
class Edge:
    """The first sighting of an edge (what its finding says)."""

    workload: str
    source_tier: str
    target: Target
    address: str
    port: int
    executable: str
    trigger_uid: str
    time_unix_nano: int
    connected: bool  # False: refused or failed (the attempt still reached for it)

    @property
    def key(self) -> str:
        return f"{self.target.id}|{self.port}"


class ReachTracker:
    """The sensitive edges each workload was seen on (the analyser holds one, and the lock)."""

    def __init__(self, config: ReachConfig, tiers: TierMap) -> None:
        self.cfg = config
        self.tiers = tiers
        self.edges: dict[str, OrderedDict[str, Edge]] = {}
        self.evicted_edges = 0

    def connect(self, workload: str, namespace: str, pod_ip: str, host_network: bool,
                f: Mapping[str, Any], time_unix_nano: int) -> Optional[Edge]:
        """One connect record of ``workload``; the edge when it is new, from a lower tier into
        the sensitive one. Loopback is the pod's own network namespace unless the pod uses the
        node's (``host_network``: then 127.0.0.1:2379 is the node's etcd)."""
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
        seen = self.edges.setdefault(workload, OrderedDict())
        key = f"{target.id}|{port}"
        if key in seen:
            seen.move_to_end(key)
            return None
        edge = seen[key] = Edge(workload, source_tier, target, address, port,
                                str(f.get(S.PROCESS_EXECUTABLE_PATH) or ""),
                                str(f.get(S.LOG_RECORD_UID) or ""), time_unix_nano,
                                ret >= 0 or ret == _EINPROGRESS)
        if len(seen) > self.cfg.max_edges:
            seen.popitem(last=False)
            self.evicted_edges += 1
        return edge


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
