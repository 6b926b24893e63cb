"""A list-and-watch view of Kubernetes kinds: the ``K8sSource`` seam. The k8s enricher's cache
is fed by one (processors/k8s), the risk analysers' tier map by another (risk/reach.py).

Two implementations ship in the package:

* :class:`ApiServerSource` lists and watches a real API server with the official ``kubernetes``
  client, one thread per kind (a "reflector" as client-go calls it): list (paged) -> replace the
  kind in the sink -> watch from the list's resourceVersion with bookmarks -> on 410 Gone relist,
  on any other error back off and re-watch from the last resourceVersion seen. The sink keeps its
  contents through all of it, so an API server outage only delays updates.
* :class:`InMemorySource` holds objects a test puts in and forwards changes synchronously.

Objects travel as plain dicts in the API's JSON shape (camelCase). Bodies are parsed with
``json.loads`` rather than the client's model classes: building ``V1Pod`` models costs ~10x more
and the cache keeps only a few fields anyway.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Protocol

from otelguard.kube.errors import Expired, http_status
from otelguard.kube.stream import Obj as Obj  # re-exported: the k8s modules import it here
from otelguard.kube.stream import events, shutdown_response

log = logging.getLogger(__name__)


class Kind(enum.Enum):
    """The kinds the enricher watches, with the API group/version/plural that serves them."""

    POD = ("", "v1", "pods")
    NAMESPACE = ("", "v1", "namespaces")
    SERVICE = ("", "v1", "services")
    REPLICASET = ("apps", "v1", "replicasets")
    JOB = ("batch", "v1", "jobs")
    ENDPOINTSLICE = ("discovery.k8s.io", "v1", "endpointslices")

    @property
    def group(self) -> str:
        return self.value[0]

    @property
    def version(self) -> str:
        return self.value[1]

    @property
    def plural(self) -> str:
        return self.value[2]


class K8sSink(Protocol):
    """What a source feeds: the enricher's cache. Called from the source's threads."""

    def replace(self, kind: Kind, objects: list[Obj]) -> None:
        """The complete current set of ``kind`` (after a list): anything else of that kind is gone."""

    def upsert(self, kind: Kind, obj: Obj) -> None: ...

    def delete(self, kind: Kind, obj: Obj) -> None: ...


class K8sSource(Protocol):
    """Feeds a sink until stopped. ``start`` returns at once; ``synced`` is true after every kind
    was listed once."""

    def start(self, sink: K8sSink, kinds: tuple[Kind, ...], node_name: Optional[str]) -> None: ...

    def synced(self) -> bool: ...

    def wait_synced(self, timeout: float) -> bool: ...

    def stop(self) -> None: ...


# --- In-memory ------------------------------------------------------------------------------


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class InMemorySource:
    """A source for unit tests: ``put``/``remove`` objects; changes reach the sink synchronously.

    Objects put before ``start`` arrive as the initial list. ``node_name`` filtering is applied to
    pods like the real field selector ``spec.nodeName``.
    """

    def __init__(self) -> None:
        self._objects: dict[Kind, dict[tuple[str, str], Obj]] = {k: {} for k in Kind}
        self._sink: Optional[K8sSink] = None
        self._kinds: tuple[Kind, ...] = ()
        self._node: Optional[str] = None
        self._lock = threading.Lock()

    def _visible(self, kind: Kind, obj: Obj) -> bool:
        if kind not in self._kinds:
            return False
        if kind is Kind.POD and self._node is not None:
            return bool((obj.get("spec") or {}).get("nodeName") == self._node)
        return True

    def start(self, sink: K8sSink, kinds: tuple[Kind, ...], node_name: Optional[str]) -> None:
        with self._lock:
            self._sink, self._kinds, self._node = sink, kinds, node_name
            for kind in kinds:
                sink.replace(kind, [o for o in self._objects[kind].values()
                                    if self._visible(kind, o)])

    def synced(self) -> bool:
        return self._sink is not None

    def wait_synced(self, timeout: float) -> bool:
        return self.synced()

    def stop(self) -> None:
        with self._lock:
            self._sink = None

    def put(self, kind: Kind, obj: Obj) -> None:
        with self._lock:
            self._objects[kind][_key(obj)] = obj
            if self._sink is not None and self._visible(kind, obj):
                self._sink.upsert(kind, obj)

    def remove(self, kind: Kind, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._objects[kind].pop((namespace, name), None)
            if obj is not None and self._sink is not None and self._visible(kind, obj):
                self._sink.delete(kind, obj)

    def relist(self) -> None:
        """Replay the current set as a fresh list, as the real source does after 410 Gone."""
        with self._lock:
            if self._sink is None:
                return
            for kind in self._kinds:
                self._sink.replace(kind, [o for o in self._objects[kind].values()
                                          if self._visible(kind, o)])


# --- Real API server ------------------------------------------------------------------------


@dataclass
class ReflectorStats:
    """Per-kind counters for tests and logs (not exported as metrics: debugging aid)."""

    lists: int = 0
    watches: int = 0
    events: int = 0
    errors: int = 0
    expired: int = 0
    last_error: str = ""


class ApiServerSource:
    """Lists and watches the API server through the official client (``kubernetes`` package).

    ``api_client`` is a ``kubernetes.client.ApiClient``; :func:`otelguard.kube.api_client_from`
    builds one from a kubeconfig or the in-cluster service account. Each kind has its own thread and HTTP
    connection. ``stop`` shuts the open watch responses down, so it returns within a second.
    """

    def __init__(
        self,
        api_client: Any,
        watch_timeout_seconds: int = 300,
        max_backoff_seconds: float = 5.0,
        page_size: int = 500,
    ) -> None:
        self._api = api_client
        self._watch_timeout = watch_timeout_seconds
        self._max_backoff = max_backoff_seconds
        self._page_size = page_size
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._synced: dict[Kind, threading.Event] = {}
        self._responses: dict[Kind, Any] = {}
        self._resp_lock = threading.Lock()
        self.stats: dict[Kind, ReflectorStats] = {}

    # -- lifecycle --

    def start(self, sink: K8sSink, kinds: tuple[Kind, ...], node_name: Optional[str]) -> None:
        self._stop.clear()
        for kind in kinds:
            self._synced[kind] = threading.Event()
            self.stats[kind] = ReflectorStats()
            selector = f"spec.nodeName={node_name}" if kind is Kind.POD and node_name else None
            t = threading.Thread(
                target=self._run, args=(sink, kind, selector),
                name=f"k8s-reflector-{kind.plural}", daemon=True,
            )
            self._threads.append(t)
            t.start()

    def synced(self) -> bool:
        return bool(self._synced) and all(e.is_set() for e in self._synced.values())

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for event in self._synced.values():
            if not event.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def stop(self) -> None:
        self._stop.set()
        with self._resp_lock:
            responses = list(self._responses.values())
        for resp in responses:
            shutdown_response(resp)
        for t in self._threads:
            t.join(timeout=5.0)
        self._threads.clear()

    # -- one kind --

    def _run(self, sink: K8sSink, kind: Kind, selector: Optional[str]) -> None:
        backoff = 0.2
        rv: Optional[str] = None
        stats = self.stats[kind]
        while not self._stop.is_set():
            try:
                if rv is None:
                    items, rv = self._list(kind, selector)
                    stats.lists += 1
                    sink.replace(kind, items)
                    # The sink keeps what it needs; the raw listed objects (~20 kB per pod)
                    # must not live on through the watch below.
                    del items
                    self._synced[kind].set()
                stats.watches += 1
                for event_type, obj in self._watch(kind, selector, rv):
                    stats.events += 1
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = str(new_rv)
                    if event_type == "BOOKMARK":
                        continue
                    if event_type in ("ADDED", "MODIFIED"):
                        sink.upsert(kind, obj)
                    elif event_type == "DELETED":
                        sink.delete(kind, obj)
                    backoff = 0.2
                # The server ended the watch (timeout_seconds): re-watch from rv at once.
            except Expired:
                stats.expired += 1
                log.info("k8s %s: resourceVersion %s expired; relisting", kind.plural, rv)
                rv = None
            except Exception as exc:  # network, HTTP, JSON: keep the cache, back off, retry
                if self._stop.is_set():
                    break
                stats.errors += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if http_status(exc) == 410:
                    stats.expired += 1
                    rv = None
                log.warning("k8s %s: %s; retrying in %.1fs", kind.plural, stats.last_error,
                            backoff)
                self._stop.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(self._max_backoff, backoff * 2)

    def _list(self, kind: Kind, selector: Optional[str]) -> tuple[list[Obj], str]:
        items: list[Obj] = []
        cont: Optional[str] = None
        while True:
            kwargs: dict[str, Any] = {"limit": self._page_size}
            if cont:
                kwargs["_continue"] = cont
            if selector:
                kwargs["field_selector"] = selector
            resp = self._call(kind, kwargs, stream=False)
            try:
                body: Obj = json.loads(resp.data)
            finally:
                resp.release_conn()
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def _watch(self, kind: Kind, selector: Optional[str], rv: str) -> Iterator[tuple[str, Obj]]:
        # Randomised like client-go so many watchers do not reconnect in lockstep.
        kwargs: dict[str, Any] = {
            "watch": True, "resource_version": rv, "allow_watch_bookmarks": True,
            "timeout_seconds": int(self._watch_timeout * (1 + random.random())),
        }
        if selector:
            kwargs["field_selector"] = selector
        resp = self._call(kind, kwargs, stream=True)
        with self._resp_lock:
            self._responses[kind] = resp
        try:
            if self._stop.is_set():
                return
            for event_type, obj in events(resp):  # an ERROR event raises (410: Expired)
                yield event_type, obj
                if self._stop.is_set():
                    return
        finally:
            with self._resp_lock:
                self._responses.pop(kind, None)
            shutdown_response(resp)

    def _call(self, kind: Kind, kwargs: dict[str, Any], stream: bool) -> Any:
        """One list or watch through the client's generated API (auth and TLS from its
        configuration); returns the raw urllib3 response. Non-2xx raises ApiException."""
        from kubernetes import client

        api_name, method = _LISTERS[kind]
        api = getattr(client, api_name)(self._api)
        # A watch's read timeout outlasts its server-side timeout (the server ends it first).
        read_timeout = int(kwargs["timeout_seconds"]) + 30 if stream else 60
        return getattr(api, method)(
            _preload_content=False, _request_timeout=(10, read_timeout), **kwargs,
        )


_LISTERS = {
    Kind.POD: ("CoreV1Api", "list_pod_for_all_namespaces"),
    Kind.NAMESPACE: ("CoreV1Api", "list_namespace"),
    Kind.SERVICE: ("CoreV1Api", "list_service_for_all_namespaces"),
    Kind.REPLICASET: ("AppsV1Api", "list_replica_set_for_all_namespaces"),
    Kind.JOB: ("BatchV1Api", "list_job_for_all_namespaces"),
    Kind.ENDPOINTSLICE: ("DiscoveryV1Api", "list_endpoint_slice_for_all_namespaces"),
}
