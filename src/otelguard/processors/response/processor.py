"""The ``response`` stage: detections and incidents matched to response policies, requests
proposed, approved ones executed, and the audit chain shipped on its own stream
(docs/response.md; docs/architecture.md#response).

Runs after ``incidents`` (it responds to incident records too, and to detections that left
noise control). ``process`` only reads: it picks the batch's detection and incident records
that some policy could match (one Resource attribute scan per ResourceLogs; records of other
streams cost a string compare) and queues their facts, never waiting; a full queue drops and
counts (``otelguard_dropped_total{stage, reason="queue_full"}``). Everything else happens on
the worker thread started in ``start()``: planning (which reads the cluster or the node), the
store's fsynced writes, execution, expiry and ttl reverts every ``tick_seconds``. The audit
records (the store's chain file, which ``otelguard respond`` appends to as well) leave through
:meth:`drain` on the flush timer; the offset shipped is kept in ``<store>/shipped`` once the
pipeline settled the drain that carried them (at least once: a crash may send a record
twice, which ``audit verify`` accepts as the identical duplicate it is).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import telemetry
from otelguard.processors.journal import JournalWrite
from otelguard.processors.response.config import Config
from otelguard.processors.response.records import findings
from otelguard.processors.stage import Batch
from otelguard.response import metrics
from otelguard.response.actions.base import Action, Target
from otelguard.response.audit import to_resource_logs
from otelguard.response.policy import Facts, PolicySet, load_policies
from otelguard.response.request import ResponseRequest, State, Trigger
from otelguard.response.responder import Responder
from otelguard.config import write_atomic
from otelguard.response.store import ChainedStore, LocalStore

TYPE_NAME = "response"
log = logging.getLogger(__name__)


def available_actions(kubeconfig: Optional[str], need_cluster: bool = True
                      ) -> dict[str, Action]:
    """The registry's actions, ready to run here (docs/response.md#actions): node actions
    always; cluster actions with an API client (``kubeconfig``, else in-cluster, else the
    default kubeconfig), when ``need_cluster`` and one can be built."""
    from otelguard.kube import KubeAccessError, api_client_from
    from otelguard.response.actions.registry import ACTIONS

    client = None
    if need_cluster:
        try:
            client = api_client_from(kubeconfig or "")
        except KubeAccessError as exc:
            if kubeconfig:
                raise
            log.info("response: no Kubernetes API (%s): cluster actions unavailable", exc)
    out: dict[str, Action] = {}
    for name, cls in ACTIONS.items():
        if cls.where == "node":
            out[name] = cls()
        elif client is not None:
            out[name] = cls(client)
    return out


class ResponseStage:
    """The stage; ``actions`` and ``clock`` are injectable (tests), else the registry's."""

    type_name = TYPE_NAME
    appends_only = True  # process() only reads; audit records leave through drain()
    logs_only = True
    state_version = 0  # proposals never hold a request: the store persists them itself

    def __init__(self, config: Config, actions: Optional[Mapping[str, Action]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._actions = actions
        self._clock = clock
        names = set(actions) if actions is not None else None
        self.policies: PolicySet = _tree_policies(config.policy_dir, names) \
            if config.policy_dir else load_policies(config.policies, names) \
            if config.policies else PolicySet()
        sources = {p.spec.match.source for p in self.policies.policies}
        self._detections = "detection" in sources
        self._incidents = "incident" in sources
        self._directory = Path(config.store) if config.store else None
        self._queue: queue.Queue[tuple[Facts, Trigger, Target]] = queue.Queue(config.max_queue)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.store: Optional[ChainedStore] = None
        self.responder: Optional[Responder] = None
        self._lock = threading.Lock()
        self._offset = 0  # chain bytes handed to drain()
        self._drains = 0  # drain() calls so far (what settle() counts)
        self._drained: list[tuple[int, int]] = []  # (drain number, chain offset after it)
        self._seen_size = -2  # the chain file's size at the last full tick
        self._due = 0.0  # when the next expiry or ttl revert falls due

    # --- lifecycle ---------------------------------------------------------------------------

    def open_state(self, path: Path, compact_bytes: int) -> None:
        """The service's state_dir: the store goes to ``<state_dir>/<stage name>/`` when no
        ``store`` is configured (the store is its own persistence; no journal)."""
        if self._directory is None:
            self._directory = path.parent / path.stem

    def journal_write(self) -> Optional[JournalWrite]:
        return None

    def settle(self, drains: int) -> None:
        """The records of this stage's first ``drains`` drains were forwarded: a restart ships
        from after them."""
        with self._lock:
            done = [offset for n, offset in self._drained if n <= drains]
            self._drained = [(n, offset) for n, offset in self._drained if n > drains]
        if done and self.store is not None:
            write_atomic(self.store.directory / "shipped", str(max(done)).encode())

    def start(self) -> None:
        if not self.policies.policies:
            return
        if self._directory is None:
            raise ValueError("response: no store directory: set `store` or the service's "
                             "state_dir")
        actions = self._actions
        if actions is None:
            wanted = {s.action for p in self.policies.policies for s in p.spec.actions}
            from otelguard.response.actions.registry import ACTIONS
            actions = available_actions(self.config.kubeconfig, any(
                ACTIONS[a].where == "cluster" for a in wanted if a in ACTIONS))
            missing = sorted(wanted - set(actions))
            if missing:
                raise ValueError(f"response: policies use {', '.join(missing)}, which need a "
                                 f"Kubernetes API: set `kubeconfig` or run in a cluster")
        self.store = self._open_store(self._directory)
        try:
            self._offset = int((self._directory / "shipped").read_text())
        except (FileNotFoundError, ValueError):
            self._offset = 0
        self.responder = Responder(self.policies, self.store, actions, self._clock,
                                   executes=self._executes)
        self.responder.recover()
        self._thread = threading.Thread(target=self._run, name="response", daemon=True)
        self._thread.start()

    def _open_store(self, directory: Path) -> ChainedStore:
        if self.config.requests == "local":
            return LocalStore(directory, self._clock)
        from otelguard.kube import CustomResources, api_client_from, own_namespace
        from otelguard.response.kube_store import PLURAL, KubeStore
        resources = CustomResources(api_client_from(self.config.kubeconfig or ""), PLURAL)
        return KubeStore(resources, self.config.namespace or own_namespace("otelguard"),
                         directory, self._clock)

    def _executes(self, req: ResponseRequest) -> bool:
        if self.config.execute == "all":
            return True
        return self.config.execute == "cluster" and not req.has_node_actions()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        left = self._queue.qsize()
        if left:
            telemetry.dropped.labels(TYPE_NAME, "shutdown").inc(left)

    # --- the batch ---------------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        if self.responder is None or not isinstance(batch, ExportLogsServiceRequest):
            return batch
        for found in findings(batch, self._detections, self._incidents):
            try:
                self._queue.put_nowait(found)
            except queue.Full:
                telemetry.dropped.labels(TYPE_NAME, "queue_full").inc()
                metrics.suppressed.labels("*", "queue_full").inc()
        return batch

    def drain(self, final: bool) -> list[Batch]:
        """The audit records appended since the last drain, by any process."""
        if self.store is None:
            return []
        with self._lock:
            records, self._offset = self.store.audit_since(self._offset)
            self._drains += 1
            self._drained.append((self._drains, self._offset))
        if not records:
            return []
        metrics.audit_seq.labels(self.store.chain).set(records[-1].seq)
        out = ExportLogsServiceRequest()
        out.resource_logs.append(to_resource_logs(records))
        return [out]

    # --- the worker --------------------------------------------------------------------------

    def _run(self) -> None:
        assert self.responder is not None
        next_tick = 0.0
        while not self._stop.is_set():
            try:
                facts, trigger, target = self._queue.get(timeout=self.config.tick_seconds)
            except queue.Empty:
                pass
            else:
                try:
                    self.responder.propose(facts, trigger, target)
                except Exception:  # noqa: BLE001 - one bad proposal never stops the worker
                    log.exception("response: proposal failed")
                finally:
                    self._queue.task_done()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.config.tick_seconds
                try:
                    self._tick()
                except Exception:  # noqa: BLE001 - retried at the next tick
                    log.exception("response: tick failed")

    def _tick(self) -> None:
        """A full pass when something may be due: the local chain grew (a proposal, or a
        decision by ``otelguard respond`` in another process: every transition appends to it),
        an expiry or ttl revert fell due, or the store is the cluster's (decisions arrive on
        the objects). Otherwise a stat of the chain file is the whole cost."""
        assert self.responder is not None and self.store is not None
        local = isinstance(self.store, LocalStore)
        size = self.store.audit_path.stat().st_size if local else -1
        if local and size == self._seen_size and self._clock() < self._due:
            return
        self._due = self.responder.tick()
        self._seen_size = self.store.audit_path.stat().st_size if local else -1
        metrics.pending.set(sum(1 for r in self.store.requests()
                                if r.state == State.PROPOSED))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once the queue is empty (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False


def _tree_policies(policy_dir: str, actions: Optional[set[str]]) -> PolicySet:
    """A policy tree's responses/ (docs/policy.md#running-a-tree): the tree must validate
    whole, and each policy's revision is the tree's, so a request (and its audit records)
    names the same revision as the detections that triggered it."""
    from otelguard.processors.policy.tree import checked_tree

    tree = checked_tree(policy_dir, actions=actions)
    return PolicySet(tuple(dataclasses.replace(p, revision=tree.revision)
                           for p in tree.responses.policies))


def create(config: Config) -> ResponseStage:
    return ResponseStage(config)
