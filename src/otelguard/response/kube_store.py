"""The request store of a cluster: one ``ResponseRequest`` object per request in otelguard's
namespace (src/otelguard/response/crd.yaml; docs/response.md#on-a-cluster).

The responder writes each request into ``status`` (the status subresource, guarded by the
resourceVersion of its last read: a 409 means another responder moved it first, and the
transition is refused). People decide by patching ``spec.decision`` (``otelguard respond
approve --kube`` or ``kubectl patch``), so Kubernetes RBAC decides who may approve and the API
server's audit log records who did; the responder turns each new decision (``metadata
.generation`` above ``status.observedGeneration``) into a transition on its next tick and marks
it handled. The audit chain is the responder's, in its state directory, with the local store's
intent protocol (store.py), so a transition and its record still go together across a crash.

Cost: one LIST per tick (every object), one GET + one status PUT per transition.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

from otelguard.kube import AlreadyExists, CustomResources, NotFound
from otelguard.kube.custom import meta
from otelguard.response.request import ResponseRequest
from otelguard.response.store import ChainedStore

PLURAL = "responserequests"
CRD_PATH = Path(__file__).with_name("crd.yaml")
Obj = dict[str, Any]
log = logging.getLogger(__name__)


def request_of(obj: Obj) -> Optional[ResponseRequest]:
    data = (obj.get("status") or {}).get("request")
    return ResponseRequest.from_json(data) if isinstance(data, dict) else None


def pending_decision(obj: Obj) -> Optional[dict[str, str]]:
    """The object's decision when nobody handled it yet."""
    decision = (obj.get("spec") or {}).get("decision")
    generation = int(meta(obj).get("generation") or 0)
    seen = int((obj.get("status") or {}).get("observedGeneration") or 0)
    if isinstance(decision, dict) and decision.get("action") and generation > seen:
        return {k: str(v) for k, v in decision.items()}
    return None


class KubeStore(ChainedStore):
    """Requests as ResponseRequest objects in ``namespace``; the chain in ``chain_dir``."""

    def __init__(self, resources: CustomResources, namespace: str, chain_dir: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.resources, self.namespace = resources, namespace
        self._objs: dict[str, Obj] = {}  # last version read or written, for guarded writes
        super().__init__(chain_dir, clock)

    def _read(self, rid: str) -> Optional[ResponseRequest]:
        try:
            obj = self.resources.get(rid, self.namespace)
        except NotFound:
            return None
        self._objs[rid] = obj
        return request_of(obj)

    def _ids(self) -> list[str]:
        return [str(meta(o).get("name")) for o in self.objects()]

    def objects(self) -> list[Obj]:
        items = self.resources.list(self.namespace).items
        for o in items:
            self._objs[str(meta(o).get("name"))] = o
        return items

    def requests(self) -> list[ResponseRequest]:
        with self.locked():
            out = [request_of(o) for o in self.objects()]
        return sorted((r for r in out if r is not None), key=lambda r: r.created)

    def _write(self, req: ResponseRequest) -> None:
        obj = self._objs.get(req.id)
        if obj is None:  # new (an object left without status by a crash was read: reused)
            try:
                obj = self.resources.create({"kind": "ResponseRequest", "metadata": {
                    "name": req.id, "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "otelguard",
                               "otelguard.dev/policy": req.policy[:63]}},
                    "spec": {}}, self.namespace)
            except AlreadyExists:
                obj = self.resources.get(req.id, self.namespace)
        status = dict(obj.get("status") or {})
        status.update(state=req.state.value if req.state else "",
                      summary=req.steps[0].change.summary[:200] if req.steps else "",
                      request=req.to_json())
        self._objs[req.id] = self.resources.replace_status({**obj, "status": status})

    def mark_handled(self, rid: str, generation: int, result: str) -> None:
        """Record that the decision of ``generation`` was handled, and how."""
        self._objs[rid] = self.resources.patch_status(
            rid, {"observedGeneration": generation, "decisionResult": result[:500]},
            self.namespace)

    def decisions(self) -> list[tuple[str, int, dict[str, str]]]:
        """(request id, generation, decision) of every decision not handled yet."""
        out = []
        for o in self.objects():
            d = pending_decision(o)
            if d is not None:
                out.append((str(meta(o).get("name")), int(meta(o).get("generation") or 0), d))
        return out

