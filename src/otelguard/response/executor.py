"""The node's part of response on a cluster (docs/response.md#on-a-cluster): the agent on each
node carries out the approved requests whose changes run there (freeze a container, kill a
process, block a peer: they need root on that node), reverts them at their ttl or when a person
asks, and ships its own audit chain.

The processor's responder (``execute: cluster``) proposes, expires and takes approvals; it
leaves a request with node actions to the node named in it (``ResponseRequest.node``, the
target's ``k8s.node.name``). Both move the same ``ResponseRequest`` objects, guarded by their
resourceVersion, so a request is moved by one of them at a time. The executor's chain lives in
its state directory; its records go out through the agent's own OTLP connection (a separate
:class:`~otelguard.transport.delivery.Delivery`, at least once: the shipped offset advances only
after a send was taken).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from otelguard.config import write_atomic
from otelguard.response.actions.base import Action
from otelguard.response.audit import AuditRecord
from otelguard.response.policy import PolicySet
from otelguard.response.request import ResponseRequest
from otelguard.response.responder import Responder
from otelguard.response.store import ChainedStore

log = logging.getLogger(__name__)


def node_actions() -> dict[str, Action]:
    from otelguard.response.actions.registry import ACTIONS
    return {name: cls() for name, cls in ACTIONS.items() if cls.where == "node"}


class NodeExecutor:
    """Requests for ``node`` with node actions, executed here; ``ship(records)`` returns True
    once the records were taken."""

    def __init__(self, store: ChainedStore, node: str,
                 ship: Callable[[list[AuditRecord]], bool], tick_seconds: float = 0.5,
                 actions: Optional[dict[str, Action]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.node, self._ship = store, node, ship
        self.tick_seconds = tick_seconds
        self.responder = Responder(PolicySet(), store,
                                   actions if actions is not None else node_actions(), clock,
                                   executes=self.mine, administers=False)
        self._shipped = store.directory / "shipped"
        try:
            self._offset = int(self._shipped.read_text())
        except (FileNotFoundError, ValueError):
            self._offset = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def mine(self, req: ResponseRequest) -> bool:
        return req.node == self.node and req.has_node_actions()

    def start(self) -> None:
        self.responder.recover()
        self._thread = threading.Thread(target=self._run, name="response-node", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.ship()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.responder.tick()
            except Exception:  # noqa: BLE001 - the API server may be away: next tick
                log.exception("response: node executor tick failed")
            self.ship()

    def ship(self) -> None:
        records, offset = self.store.audit_since(self._offset)
        if records and self._ship(records):
            self._offset = offset
            write_atomic(self._shipped, str(offset).encode())
