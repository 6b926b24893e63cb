"""``k8s_attributes``: adds pod, namespace, workload, image, labels and security facts to each
Resource, and the peer pod/Service to records with a network peer.

Runs first in the processors pipeline (detection rules read ``k8s.*``). Needs the Resource to be
the observed container (``container.id``, else ``k8s.pod.uid``, else ``k8s.pod.ip``), which is what
our agent emits; any other OTLP source with those keys works too. Cost per batch: one cache lookup
per Resource (memoised attribute dict, ~3 µs with the write) plus, per record, one scan of its
attribute keys for ``network.peer.address``.

Late pods. The agent sees a container's first exec before the API server has reported its
container ID (the kubelet patches the pod status after the runtime started it). A Resource whose
``container.id`` the cache does not know is *held*: taken out of the batch and kept, at most
``hold_seconds`` and at most ``max_held_batches`` Resources in all, then released into the next
batch of the same signal (ahead of newer records, so order per container is kept) or by
:meth:`K8sEnricher.drain`, which the pipeline calls on a timer and at shutdown. ``process()``
never waits. A Resource released without its pod is passed on unenriched and counted in
``otelguard_dropped_total{stage="k8s_enrichment", reason=...}`` -- not dropped, but "enrichment
missing", as docs/architecture.md#metrics lists it -- with reason ``pod_not_found`` (no pod),
``container_not_found`` (pod found by uid/IP, container unknown) or ``hold_full`` (released early
because the hold was full). A container that stayed unknown for a whole hold is not held again
for ``GIVE_UP_SECONDS``, so a non-Kubernetes container on the node costs one hold, not one per
batch.

A held Resource's caller was answered OK. With a journal (:meth:`K8sEnricher.open_state`, the
service's ``state_dir``) each held Resource and its due time are written ahead (k8s/journal.py):
holding bumps ``state_version``, so the service fsyncs before it answers that request; the entry
is settled once the Resource left in a batch that was forwarded or whose loss was counted (by
flush number for :meth:`drain`, per request for one released into a caller's batch:
pipeline.ReleasesIntoRequests). A start re-holds what was live, due at most ``hold_seconds``
later, so it leaves enriched if its pod is known by then, else unenriched and counted as today.
Without a journal a SIGKILL loses what is held, uncounted (docs/reliability.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span
from prometheus_client import Counter

from otelguard import semconv, telemetry
from otelguard.kube import KubeAccessError, api_client_from
from otelguard.otlp.messages import count_item_records
from otelguard.processors.k8s.cache import K8sCache
from otelguard.processors.k8s.config import Config
from otelguard.processors.k8s.identity import drop_claims, mismatch_detection, sender_node
from otelguard.processors.k8s.journal import HoldJournal
from otelguard.processors.k8s.peers import PeerResolver, may_have_peer
from otelguard.processors.k8s.source import ApiServerSource, K8sSource, Kind
from otelguard.processors.errors import ProcessorsError
from otelguard.processors.k8s.writer import AttributeWriter
from otelguard.processors.journal import JournalWrite
from otelguard.processors.stage import Batch

log = logging.getLogger(__name__)

TYPE_NAME = "k8s_attributes"
DROP_STAGE = "k8s_enrichment"
GIVE_UP_SECONDS = 60.0
_GIVE_UP_MAX = 10_000

enrichment = Counter(
    semconv.METRIC_K8S_ENRICHMENT,
    "Kubernetes enrichment lookups: target resource (result hit_container_id, hit_pod_uid, "
    "hit_pod_ip, held, miss) or peer (hit, miss).",
    ["target", "result"], registry=telemetry.REGISTRY,
)

ResourceItem = Union[ResourceLogs, ResourceSpans]
_SPAN_INTERNAL = Span.SPAN_KIND_INTERNAL


def _items(batch: Batch) -> Any:
    """The batch's repeated Resource container (resource_logs or resource_spans)."""
    if isinstance(batch, ExportLogsServiceRequest):
        return batch.resource_logs
    return batch.resource_spans


def _peer_candidates(item: ResourceItem) -> Any:
    """The records (log records or spans) of one Resource that may carry a network peer, in
    place (see peers.py for what is skipped and why)."""
    if isinstance(item, ResourceLogs):
        for sl in item.scope_logs:
            for rec in sl.log_records:
                if may_have_peer(rec.event_name):
                    yield rec
    else:
        for ss in item.scope_spans:
            for span in ss.spans:
                if span.kind != _SPAN_INTERNAL:
                    yield span


@dataclass
class _Held:
    deadline: float
    container_id: str
    item: ResourceItem
    batch_type: type[Batch]
    rid: int = 0  # its id in the journal (0 without one)


class K8sEnricher:
    """The ``k8s_attributes`` stage. ``start()`` starts the source's watch threads and waits up to
    ``wait_for_sync_seconds`` for the first list; ``shutdown()`` stops them (held Resources are
    released by the pipeline's final ``drain``)."""

    type_name = TYPE_NAME
    # Only sets absent attributes (for verified senders it replaces k8s.*/container.* claims
    # in place: still a valid Resource, see identity.py); held Resources are moved into the hold store before they
    # leave the batch. A failure midway leaves a valid batch and loses nothing, so the pipeline
    # needs no restore snapshot (bench/service_vs_collector.py: the snapshot cost ~1.5 us/record).
    additive = True

    def __init__(
        self,
        config: Config,
        source: Optional[K8sSource] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.cache = K8sCache(config, clock)
        self._source = source
        self._clock = clock
        self._held: list[_Held] = []
        self._held_ids: set[str] = set()
        self._given_up: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._writer = AttributeWriter()
        self._hits = {r: enrichment.labels("resource", r)
                      for r in ("hit_container_id", "hit_pod_uid", "hit_pod_ip", "held", "miss")}
        self._peer_hit = enrichment.labels("peer", "hit")
        self._peer_miss = enrichment.labels("peer", "miss")
        self._gave_up_sync = ""  # why start() went on without a synced cache (readiness)
        # Node-mismatch detections (identity.py) not yet in a logs batch: a spans batch, or a
        # Resource released by drain(); they leave with the next logs batch or drain().
        self._detections: list[ResourceLogs] = []
        # Records released into a later batch (pipeline.ReleasesRecords): their callers were
        # answered already, so the service counts them if that batch's forward fails.
        self.released_records = 0
        # The journal (pipeline.PersistsState): None without service.state_dir.
        self._wall = wall_clock
        self._journal: Optional[HoldJournal] = None
        self._next_rid = 1
        self._drains = 0
        self._emitted: list[tuple[int, list[int]]] = []  # (drain number, ids) not settled
        self._request_released: list[int] = []  # released into the batch being processed
        self.state_version = 0  # bumped by a hold: the request is answered after the fsync

    @property
    def source(self) -> Optional[K8sSource]:
        return self._source

    def kinds(self) -> tuple[Kind, ...]:
        kinds = [Kind.POD, Kind.REPLICASET, Kind.JOB]
        if self.config.namespace_labels:
            kinds.append(Kind.NAMESPACE)
        if self.config.peers:
            kinds += [Kind.SERVICE, Kind.ENDPOINTSLICE]
        return tuple(kinds)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._source is None:
            cfg = self.config
            try:
                api_client = api_client_from(cfg.kubeconfig, cfg.context)
            except KubeAccessError as exc:  # stops startup with the reason
                raise ProcessorsError(f"k8s_attributes: {exc}") from exc
            self._source = ApiServerSource(
                api_client,
                watch_timeout_seconds=cfg.watch_timeout_seconds,
                max_backoff_seconds=cfg.max_backoff_seconds,
                page_size=cfg.list_page_size,
            )
        self._source.start(self.cache, self.kinds(), self.config.effective_node_name)
        wait = self.config.wait_for_sync_seconds
        if wait <= 0:
            self._gave_up_sync = "wait_for_sync_seconds is 0: enriching what is known while " \
                                 "the cache lists"
        elif not self._source.wait_synced(wait):
            self._gave_up_sync = f"cache not synced after {wait:.0f}s: enriching what is " \
                                 f"known, holding unknown containers up to " \
                                 f"{self.config.hold_seconds:.1f}s"
            log.warning("k8s_attributes: cache not synced after %.0fs; enriching what is known, "
                        "holding unknown containers up to %.1fs", wait, self.config.hold_seconds)

    def readiness(self) -> tuple[bool, str]:
        """Ready once the cache synced, or once ``start()`` gave up waiting (the reason says so);
        read by the service's ``/readyz`` (receiver/health.py)."""
        if self._source is None:
            return False, "not started"
        if self._source.synced():
            return True, "cache synced"
        if self._gave_up_sync:
            return True, "gave up waiting: " + self._gave_up_sync
        return False, "cache not synced yet"

    def shutdown(self) -> None:
        if self._source is not None:
            self._source.stop()
        if self._journal is not None:  # what is still live stays there for the next start
            with self._lock:
                self._journal.close()
                self._journal = None

    # --- per batch -------------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        now = self._clock()
        items = _items(batch)
        with self._lock:
            earlier = len(self._detections)
            released = self._take_due(type(batch), now, final=False)
            keep: list[int] = []
            hold: list[int] = []
            for i, item in enumerate(items):
                if self._enrich_resource(item, now, may_hold=True):
                    keep.append(i)
                else:
                    hold.append(i)
            if hold:
                self._hold(items, hold, type(batch), now)
            if released:
                self.released_records += sum(count_item_records(h.item) for h in released)
                current = [items[i] for i in keep] if hold else list(items)
                merged = [*(h.item for h in released), *current]
                copies = []
                for it in merged:
                    c = type(it)()
                    c.CopyFrom(it)
                    copies.append(c)
                del items[:]
                items.extend(copies)
                if self._journal is not None:
                    self._request_released.extend(h.rid for h in released)
            elif hold:
                for i in reversed(hold):
                    del items[i]
            if self.config.peers:
                self._peers(items)
            if self._detections and isinstance(batch, ExportLogsServiceRequest):
                # Those of earlier requests were acknowledged already: released records.
                self.released_records += earlier
                items.extend(self._detections)
                self._detections = []
        return batch

    def drain(self, final: bool) -> list[Batch]:
        """Held Resources that are due (their pod arrived or their hold expired; all when
        ``final``), as new batches (one per signal). Called by the pipeline's flush timer."""
        now = self._clock()
        out: list[Batch] = []
        with self._lock:
            self._drains += 1
            for batch_type in (ExportLogsServiceRequest, ExportTraceServiceRequest):
                released = self._take_due(batch_type, now, final)
                if not released:
                    continue
                if self._journal is not None:
                    self._emitted.append((self._drains, [h.rid for h in released]))
                batch = batch_type()
                items = _items(batch)
                items.extend(h.item for h in released)
                if self.config.peers:
                    self._peers(items)
                out.append(batch)
            if self._detections:
                batch = ExportLogsServiceRequest()
                batch.resource_logs.extend(self._detections)
                self._detections = []
                out.append(batch)
        return out

    @property
    def held_count(self) -> int:
        return len(self._held)

    # --- internals (lock held) ------------------------------------------------------------

    def _keys(self, item: ResourceItem) -> tuple[str, str, str, bool]:
        cid = uid = ip = ""
        host = False
        for kv in item.resource.attributes:
            key = kv.key
            if key == semconv.CONTAINER_ID:
                cid = kv.value.string_value
            elif key == semconv.K8S_POD_UID:
                uid = kv.value.string_value
            elif key == semconv.K8S_POD_IP:
                ip = kv.value.string_value
            elif key == semconv.HOST_PROCESS:
                host = kv.value.bool_value
        return cid, uid, ip, host

    def _enrich_resource(self, item: ResourceItem, now: float, may_hold: bool) -> bool:
        """Enrich one Resource in place; False means: hold it (not enriched yet)."""
        cid, uid, ip, host = self._keys(item)
        if host or not (cid or uid or ip):
            return True  # not a pod's Resource: nothing to look up, nothing missing
        if may_hold and cid and (cid in self._held_ids or self._should_hold(cid, now)):
            if not self.cache.knows_container(cid) or cid in self._held_ids:
                self._hits["held"].inc()
                return False
        res = self.cache.resolve(cid or None, uid or None, ip or None)
        if res is None:
            self._hits["miss"].inc()
            self._count_missing(item, "pod_not_found")
            return True
        self._hits["hit_" + res.via].inc()
        sender = sender_node(item.resource.attributes)
        if sender is None:
            self._writer.write(item.resource, res.attrs)
        else:
            self._override(item, res.attrs, sender, res.via)
        if not res.container_found:
            self._count_missing(item, "container_not_found")
        elif cid:
            self._given_up.pop(cid, None)
        return True

    def _override(self, item: ResourceItem, attrs: dict[str, Any], sender: str,
                  via: str) -> None:
        """A verified sender: the pod's attributes replace its claims; a pod on another node
        than the sender's is a detection (identity.py)."""
        drop_claims(item.resource.attributes)
        self._writer.write(item.resource, attrs)
        pod_node = attrs.get(semconv.K8S_NODE_NAME)
        if via != "pod_ip" and isinstance(pod_node, str) and pod_node and pod_node != sender:
            self._detections.append(mismatch_detection(item, sender, pod_node, via))

    def _should_hold(self, cid: str, now: float) -> bool:
        cfg = self.config
        if cfg.hold_seconds <= 0 or cfg.max_held_batches <= 0:
            return False
        until = self._given_up.get(cid)
        if until is not None:
            if until > now:
                return False
            del self._given_up[cid]
        return True

    def _count_missing(self, item: ResourceItem, reason: str) -> None:
        n = count_item_records(item)
        if n:
            telemetry.dropped.labels(DROP_STAGE, reason).inc(n)

    def _hold(self, items: Any, indexes: list[int], batch_type: type[Batch], now: float) -> None:
        for i in indexes:
            item = items[i]
            copy = type(item)()
            copy.CopyFrom(item)
            cid = self._keys(copy)[0]
            held = _Held(now + self.config.hold_seconds, cid, copy, batch_type)
            if self._journal is not None:
                held.rid = self._next_rid
                self._next_rid += 1
                self._journal.hold(held.rid, self._wall() + self.config.hold_seconds, copy)
                self.state_version += 1
            self._held.append(held)
            self._held_ids.add(cid)
        # Over the limit: the oldest go on unenriched now rather than grow without bound.
        excess = len(self._held) - self.config.max_held_batches
        if excess > 0:
            for h in self._held[:excess]:
                h.deadline = float("-inf")

    def _take_due(self, batch_type: type[Batch], now: float, final: bool) -> list[_Held]:
        """Remove and return held Resources of ``batch_type`` that are due, enriched if their pod
        is known now, else passed on unenriched and counted."""
        if not self._held:
            return []
        due: list[_Held] = []
        rest: list[_Held] = []
        expired_ids: set[str] = set()
        for h in self._held:
            if h.batch_type is not batch_type:
                rest.append(h)
                continue
            known = self.cache.knows_container(h.container_id)
            if known or final or h.deadline <= now or h.container_id in expired_ids:
                # Keep order per container: once one is due, later ones of the same id follow.
                expired_ids.add(h.container_id)
                if not known and h.deadline == float("-inf"):
                    self._count_missing(h.item, "hold_full")
                    self._hits["miss"].inc()
                    res = self.cache.resolve(None, *self._keys(h.item)[1:3])
                    if res is not None:
                        self._writer.write(h.item.resource, res.attrs)
                elif not known:
                    self._give_up(h.container_id, now)
                    self._enrich_resource(h.item, now, may_hold=False)
                else:
                    self._enrich_resource(h.item, now, may_hold=False)
                due.append(h)
            else:
                rest.append(h)
        self._held = rest
        self._held_ids = {h.container_id for h in rest}
        return due

    # --- the journal (pipeline.PersistsState, pipeline.ReleasesIntoRequests) ----------------

    def open_state(self, path: Path, compact_bytes: int) -> None:
        """Open the journal at ``path`` and hold again what a previous process held or released
        without settling, each due when it was due but at most ``hold_seconds`` from now (the
        first drain after ``start()`` releases it enriched if the pod is known by then)."""
        journal = HoldJournal(path, compact_bytes)
        recovered = journal.recover(TYPE_NAME)
        now, wall = self._clock(), self._wall()
        with self._lock:
            self._journal = journal
            for rid, due, item in recovered:
                batch_type: type[Batch] = (ExportLogsServiceRequest
                                           if isinstance(item, ResourceLogs)
                                           else ExportTraceServiceRequest)
                wait = min(max(due - wall, 0.0), self.config.hold_seconds)
                cid = self._keys(item)[0]
                self._held.append(_Held(now + wait, cid, item, batch_type, rid))
                self._held_ids.add(cid)
                self._next_rid = max(self._next_rid, rid + 1)
        if recovered:
            log.info("%s: re-releasing %d held Resource(s) (%d records) a previous process "
                     "acknowledged", path, len(recovered),
                     sum(count_item_records(item) for _, _, item in recovered))

    def journal_write(self) -> Optional[JournalWrite]:
        with self._lock:
            return self._journal.write() if self._journal is not None else None

    def settle(self, drains: int) -> None:
        """What drains up to ``drains`` released was forwarded or counted."""
        with self._lock:
            if self._journal is None:
                return
            for n, rids in self._emitted:
                if n <= drains:
                    self._journal.settle(rids)
            self._emitted = [(n, rids) for n, rids in self._emitted if n > drains]

    def take_request_releases(self) -> list[int]:
        """Ids of held Resources the last ``process()`` put into its batch (the pipeline hands
        them to the service with the result)."""
        taken, self._request_released = self._request_released, []
        return taken

    def settle_request_releases(self, rids: list[int]) -> None:
        """The batch they rode in was forwarded, or their loss counted (``held_<reason>``)."""
        with self._lock:
            if self._journal is not None:
                self._journal.settle(rids)

    def _give_up(self, cid: str, now: float) -> None:
        self._given_up[cid] = now + GIVE_UP_SECONDS
        self._given_up.move_to_end(cid)
        while len(self._given_up) > _GIVE_UP_MAX:
            self._given_up.popitem(last=False)

    def _peers(self, items: Any) -> None:
        resolver = PeerResolver(self.cache.peer, self._writer)
        for item in items:
            for rec in _peer_candidates(item):
                resolver.enrich(rec)
        if resolver.hits:
            self._peer_hit.inc(resolver.hits)
        if resolver.misses:
            self._peer_miss.inc(resolver.misses)


def create(config: Config, source: Optional[K8sSource] = None) -> K8sEnricher:
    """The registry's factory; ``source`` lets tests pass an InMemorySource."""
    return K8sEnricher(config, source)
