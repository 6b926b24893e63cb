"""The ``reach`` analyser: the tier map and the edges behind the
:class:`~otelguard.risk.analyser.Analyser` contract (docs/risk.md#sensitive-reach).

A new edge is a finding at once: ``observe`` queues it and the stage takes the queue through
``urgent()`` at the end of the same batch (appending the record to it), not at the report
interval. Findings: kind
``edge``, subject ``TARGET|PORT``, state ``reached`` (the connect succeeded or is in progress)
or ``attempted`` (refused, unreachable), severity ``high`` for the built-in targets (metadata,
API server, etcd, kubelet) and ``medium`` for labelled ones.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.kube import KubeAccessError, api_client_from
from otelguard.kube.reflector import ApiServerSource, K8sSource
from otelguard.risk.analyser import Dropped
from otelguard.risk.model import Finding, Observation
from otelguard.risk.reach.config import ReachConfig
from otelguard.risk.reach.edges import Edge, ReachTracker
from otelguard.risk.reach.tiers import KINDS, TierMap

NAME = "reach"
EDGE = "edge"
log = logging.getLogger(__name__)


def finding(edge: Edge) -> Finding:
    t = edge.target
    verb = "connected" if edge.connected else "tried to connect"
    return Finding(
        NAME, EDGE, edge.key, "reached" if edge.connected else "attempted",
        "high" if t.id.startswith("builtin:") else "medium",
        f"Sensitive reach: {edge.workload} (tier {edge.source_tier}) {verb} to {t.id} "
        f"({edge.address}:{edge.port}; {t.reason}), an edge never seen before",
        first_seen_ns=edge.time_unix_nano, last_seen_ns=edge.time_unix_nano,
        evidence=(edge.trigger_uid,) if edge.trigger_uid else (),
        attributes=((S.RISK_SOURCE_TIER, edge.source_tier), (S.RISK_TARGET, t.id),
                    (S.RISK_TARGET_TIER, t.tier), (S.RISK_TARGET_REASON, t.reason),
                    (S.NETWORK_PEER_ADDRESS, edge.address), (S.NETWORK_PEER_PORT, edge.port))
        + (((S.PROCESS_EXECUTABLE_PATH, edge.executable),) if edge.executable else ()))


class ReachAnalyser:
    name = NAME
    events = frozenset({S.EV_NETWORK_CONNECT})
    fields = frozenset({S.SYSCALL_RET, S.LOG_RECORD_UID, S.NETWORK_PEER_ADDRESS,
                        S.NETWORK_PEER_PORT, S.PEER_K8S_NAMESPACE_NAME, S.PEER_K8S_SERVICE_NAME,
                        S.PEER_K8S_WORKLOAD_NAME, S.PEER_K8S_WORKLOAD_KIND,
                        S.PROCESS_EXECUTABLE_PATH})

    def __init__(self, config: ReachConfig, dropped: Dropped,
                 source: Optional[K8sSource] = None) -> None:
        self.config = config
        self.tiers = TierMap(config)
        self.tracker = ReachTracker(config, self.tiers)
        self.source = source
        self._dropped = dropped
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple[str, str], Finding] = OrderedDict()
        self._evicted = 0

    def start(self) -> None:
        if self.source is None:
            try:
                client = api_client_from(self.config.kubeconfig, self.config.context)
            except KubeAccessError as exc:
                log.warning("risk reach: no API server (%s): judging the built-in targets and "
                            "the enricher's peer names only", exc)
                return
            self.source = ApiServerSource(client)
        self.source.start(self.tiers, KINDS, None)
        wait = self.config.wait_for_sync_seconds
        if wait > 0 and not self.source.wait_synced(wait):
            log.warning("risk reach: tier map not synced after %.0fs; judging with what is "
                        "known", wait)

    def shutdown(self) -> None:
        if self.source is not None:
            self.source.stop()

    def observe(self, observation: Observation) -> None:
        if not observation.container_id:  # host processes are not sources
            return
        res = observation.resource
        with self._lock:
            edge = self.tracker.connect(
                observation.workload, str(res.get(S.K8S_NAMESPACE_NAME) or ""),
                str(res.get(S.K8S_POD_IP) or ""), bool(res.get(S.K8S_POD_HOST_NETWORK)),
                observation.attributes, observation.time_unix_nano)
            if edge is not None:
                self._pending[(edge.workload, edge.key)] = finding(edge)
                if len(self._pending) > self.config.max_pending:
                    self._pending.popitem(last=False)
                    self._dropped("pending_full", 1)
            if self.tracker.evicted_edges != self._evicted:
                self._dropped("edges_full", self.tracker.evicted_edges - self._evicted)
                self._evicted = self.tracker.evicted_edges

    def urgent(self) -> list[tuple[str, Finding]]:
        """The new edges since the last call (the stage, after each batch and on each flush)."""
        with self._lock:
            out = [(workload, f) for (workload, _), f in self._pending.items()]
            self._pending.clear()
        return out

    def findings(self, workload: str) -> list[Finding]:
        with self._lock:
            return [finding(e) for e in self.tracker.edges.get(workload, {}).values()]

    def workloads(self) -> list[str]:
        with self._lock:
            return list(self.tracker.edges)

    def forget(self, workload: str) -> None:
        with self._lock:
            self.tracker.edges.pop(workload, None)


def create(config: Any, dropped: Dropped) -> ReachAnalyser:
    """From the ``risk`` stage's Config (its ``reach`` section)."""
    return ReachAnalyser(config.reach, dropped)


__all__ = ["EDGE", "NAME", "ReachAnalyser", "create", "finding"]
