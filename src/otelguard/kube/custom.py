"""otelguard's custom resources (group ``otelguard.dev``) through the official client's
``CustomObjectsApi``: typed verbs, plain-dict objects, errors as :mod:`otelguard.kube.errors`.

Generic on purpose: the caller names the kind (plural) and whether it is namespaced; the
profiles store (``WorkloadProfile``) and response (its requests) share it. Objects travel as the
API's JSON (camelCase dicts), parsed with ``json.loads``.

Optimistic concurrency is the API server's: :meth:`CustomResources.replace` sends the object's
``metadata.resourceVersion`` and fails with :class:`~otelguard.kube.errors.Conflict` if someone
wrote in between; :meth:`CustomResources.update` re-reads and retries on that. Costs: one HTTP
round trip per verb (~2-5 ms on loopback), nothing cached here.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from otelguard.kube.errors import Conflict, KubeError, wrap
from otelguard.kube.stream import Obj, events, shutdown_response

GROUP = "otelguard.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def meta(obj: Obj) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def resource_version(obj: Obj) -> str:
    return str(meta(obj).get("resourceVersion") or "")


@dataclass(frozen=True)
class ObjectList:
    """A list's items and the resourceVersion to watch from after it."""

    items: list[Obj]
    resource_version: str


class CustomResources:
    """Verbs on one custom resource kind. ``api_client`` is a ``kubernetes.client.ApiClient``
    (:func:`otelguard.kube.access.api_client_from`). Thread-safe as far as the client is (one
    connection pool; each call is independent)."""

    def __init__(self, api_client: Any, plural: str, namespaced: bool = True,
                 group: str = GROUP, version: str = VERSION,
                 request_timeout: float = 30.0) -> None:
        from kubernetes import client

        self.plural, self.namespaced = plural, namespaced
        self.group, self.version = group, version
        self._api = client.CustomObjectsApi(api_client)
        self._timeout = request_timeout

    # -- helpers --

    def _what(self, verb: str, namespace: Optional[str], name: str = "") -> str:
        where = f"{namespace}/{name}" if namespace and name else (namespace or name or "*")
        return f"{verb} {self.plural}.{self.group} {where}"

    def _ns(self, namespace: Optional[str]) -> str:
        if self.namespaced and not namespace:
            raise ValueError(f"{self.plural}.{self.group} is namespaced: give a namespace")
        return namespace or ""

    def _call(self, what: str, method: str, *args: Any, timeout: Optional[float] = None,
              stream: bool = False, **kwargs: Any) -> Any:
        try:
            resp = getattr(self._api, method)(
                self.group, self.version, *args, _preload_content=False,
                _request_timeout=(10, timeout or self._timeout), **kwargs)
        except Exception as exc:  # ApiException, urllib3 and socket errors
            raise wrap(exc, what) from exc
        if stream:
            return resp
        try:
            data = resp.data
        finally:
            resp.release_conn()
        return json.loads(data) if data else {}

    def _scoped(self, method: str, namespace: Optional[str]) -> tuple[str, tuple[Any, ...]]:
        """(client method, leading args) for a verb: ``namespaced_`` or ``cluster_`` variant."""
        if self.namespaced:
            return f"{method}_namespaced_custom_object", (self._ns(namespace), self.plural)
        return f"{method}_cluster_custom_object", (self.plural,)

    # -- verbs --

    def get(self, name: str, namespace: Optional[str] = None) -> Obj:
        """The object; :class:`~otelguard.kube.errors.NotFound` if it does not exist."""
        method, args = self._scoped("get", namespace)
        out: Obj = self._call(self._what("get", namespace, name), method, *args, name)
        return out

    def list(self, namespace: Optional[str] = None, label_selector: str = "",
             page_size: int = 500) -> ObjectList:
        """Every object (all namespaces when ``namespace`` is None), paged."""
        items: list[Obj] = []
        cont = ""
        while True:
            kwargs: dict[str, Any] = {"limit": page_size}
            if cont:
                kwargs["_continue"] = cont
            if label_selector:
                kwargs["label_selector"] = label_selector
            if self.namespaced and namespace:
                body = self._call(self._what("list", namespace),
                                  "list_namespaced_custom_object", namespace, self.plural,
                                  **kwargs)
            else:
                body = self._call(self._what("list", None), "list_cluster_custom_object",
                                  self.plural, **kwargs)
            items.extend(body.get("items") or [])
            lmeta = body.get("metadata") or {}
            cont = str(lmeta.get("continue") or "")
            if not cont:
                return ObjectList(items, str(lmeta.get("resourceVersion") or ""))

    def create(self, obj: Obj, namespace: Optional[str] = None) -> Obj:
        """Create ``obj`` (its apiVersion/kind are filled in when missing);
        :class:`~otelguard.kube.errors.AlreadyExists` if the name is taken."""
        ns = namespace or meta(obj).get("namespace")
        body = {"apiVersion": f"{self.group}/{self.version}", **obj}
        method, args = self._scoped("create", ns)
        out: Obj = self._call(self._what("create", ns, str(meta(obj).get("name", ""))),
                              method, *args, body)
        return out

    def replace(self, obj: Obj) -> Obj:
        """Write ``obj`` whole (spec and metadata; ``status`` is ignored when the kind has a status
        subresource), only if it still has ``metadata.resourceVersion``:
        :class:`~otelguard.kube.errors.Conflict` otherwise."""
        name, ns = str(meta(obj).get("name") or ""), meta(obj).get("namespace")
        if not resource_version(obj):
            raise ValueError(f"{self._what('replace', ns, name)}: no metadata.resourceVersion "
                             f"(read the object first; a blind overwrite is never done)")
        method, args = self._scoped("replace", ns)
        out: Obj = self._call(self._what("replace", ns, name), method, *args, name, obj)
        return out

    def replace_status(self, obj: Obj) -> Obj:
        """Write ``obj``'s status through the status subresource, guarded by its
        resourceVersion like :meth:`replace`."""
        name, ns = str(meta(obj).get("name") or ""), meta(obj).get("namespace")
        if not resource_version(obj):
            raise ValueError(f"{self._what('replace status', ns, name)}: no "
                             f"metadata.resourceVersion")
        method, args = self._scoped("replace", ns)
        out: Obj = self._call(self._what("replace status", ns, name), f"{method}_status",
                              *args, name, obj)
        return out

    def patch_status(self, name: str, status: dict[str, Any], namespace: Optional[str] = None,
                     resource_version: str = "") -> Obj:
        """JSON merge patch of ``status`` (keys set to None are removed). With
        ``resource_version`` the patch applies only to that version (else Conflict)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        method, args = self._scoped("patch", namespace)
        out: Obj = self._call(self._what("patch status", namespace, name), f"{method}_status",
                              *args, name, body)
        return out

    def patch(self, name: str, patch: dict[str, Any], namespace: Optional[str] = None,
              resource_version: str = "") -> Obj:
        """JSON merge patch of the object (not its status subresource); guarded like
        :meth:`patch_status`."""
        body = dict(patch)
        if resource_version:
            body["metadata"] = {**(body.get("metadata") or {}), "resourceVersion": resource_version}
        method, args = self._scoped("patch", namespace)
        out: Obj = self._call(self._what("patch", namespace, name), method, *args, name, body)
        return out

    def delete(self, name: str, namespace: Optional[str] = None,
               resource_version: str = "") -> None:
        """Delete; with ``resource_version`` only that version (else Conflict)."""
        body: dict[str, Any] = {}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        method, args = self._scoped("delete", namespace)
        self._call(self._what("delete", namespace, name), method, *args, name, body=body)

    def update(self, name: str, change: Callable[[Obj], Optional[Obj]],
               namespace: Optional[str] = None, attempts: int = 5,
               status: bool = False) -> Optional[Obj]:
        """Read, ``change`` (returns the new object, or None: nothing to write), replace; on
        Conflict read again and retry, up to ``attempts`` times. The stored object, or None
        when ``change`` declined. ``status``: write through the status subresource."""
        for attempt in range(attempts):
            current = self.get(name, namespace)
            new = change(current)
            if new is None:
                return None
            try:
                return self.replace_status(new) if status else self.replace(new)
            except Conflict:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def watch(self, namespace: Optional[str] = None, resource_version: str = "",
              timeout_seconds: int = 300, label_selector: str = "") -> "Watch":
        """A watch from ``resource_version`` (from "now" when empty: the server sends the current
        objects as ADDED first). Iterate it for ``(type, object)``; ``close()`` from any thread
        ends the iteration. Raises :class:`~otelguard.kube.errors.Expired` (410) when the version
        is too old."""
        kwargs: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True,
                                  "timeout_seconds": timeout_seconds}
        if resource_version:
            kwargs["resource_version"] = resource_version
        if label_selector:
            kwargs["label_selector"] = label_selector
        what = self._what("watch", namespace)
        if self.namespaced and namespace:
            resp = self._call(what, "list_namespaced_custom_object", namespace, self.plural,
                              timeout=timeout_seconds + 30, stream=True, **kwargs)
        else:
            resp = self._call(what, "list_cluster_custom_object", self.plural,
                              timeout=timeout_seconds + 30, stream=True, **kwargs)
        return Watch(resp, what)


class Watch:
    """One open watch response; iterate for ``(type, object)`` events (BOOKMARK included: its
    object carries only the resourceVersion). Ends when the server ends it or on ``close()``."""

    def __init__(self, resp: Any, what: str) -> None:
        self._resp, self._what = resp, what
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[tuple[str, Obj]]:
        try:
            for event in events(self._resp):
                yield event
                if self._closed.is_set():
                    return
        except KubeError:
            raise
        except Exception as exc:  # the connection broke (or close() cut it)
            if not self._closed.is_set():
                raise wrap(exc, self._what) from exc
        finally:
            shutdown_response(self._resp)

    def close(self) -> None:
        self._closed.set()
        shutdown_response(self._resp)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
