"""The profile store of a cluster: WorkloadProfile objects in one namespace (objects.py for the
shape, docs/profiles.md#profiles-in-a-cluster for the workflow).

An :class:`~otelguard.kube.ObjectWatcher` keeps the latest version of every object the stage has
not read yet; :meth:`ObjectStore.scan` returns those someone else wrote (our own writes come back
through the watch and are recognised by their resourceVersion). :meth:`ObjectStore.save` writes
with JSON merge patches guarded by the resourceVersion of our last read or write: ``spec`` only
when it changed, then ``status`` through its subresource. A 409 means someone wrote in between:
the object is read again and handed to the next scan, so their version is adopted (a human's
approval or edit wins over learning, exactly like a file); the stage's next change writes on top
of it. Restarting the processor loses nothing a save wrote: ``open`` lists every object.

Cost: one watch connection; one or two HTTP requests per changed profile per save interval;
memory per profile: its name, last resourceVersions and a spec digest (~300 bytes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any, Optional

from otelguard.kube import (
    AlreadyExists, ApiError, Conflict, CustomResources, KubeError, NotFound, ObjectWatcher,
)
from otelguard.kube.custom import meta, resource_version
from otelguard.processors.errors import ProcessorsError
from otelguard.processors.profiles import metrics
from otelguard.processors.profiles.document import ProfileDocument
from otelguard.processors.profiles.objects import (
    PLURAL, ObjectError, from_object, spec_patch, status_patch, to_object,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
OURS_KEPT = 8  # resourceVersions of our own recent writes remembered per object


def _digest(spec: Any) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


class ObjectStore:
    """A :class:`~otelguard.processors.profiles.store.ProfileStore` over WorkloadProfile
    objects in ``namespace``."""

    def __init__(self, resources: CustomResources, namespace: str,
                 watch_timeout_seconds: int = 300) -> None:
        self.resources, self.namespace = resources, namespace
        self._lock = threading.Lock()  # the watcher's thread against the sync thread
        self._pending: dict[str, Obj] = {}  # name -> latest version not scanned yet
        self._read: dict[str, str] = {}  # name -> resourceVersion of our last read or write
        self._ours: dict[str, list[str]] = {}  # name -> resourceVersions we wrote
        self._spec: dict[str, str] = {}  # name -> digest of the spec last read or written
        self._watcher = ObjectWatcher(resources, namespace, self._listed, self._event,
                                      watch_timeout_seconds=watch_timeout_seconds)

    # -- lifecycle --

    def open(self) -> None:
        """List every object (approved profiles enforce from the first batch), then watch.
        A missing CRD or a refusal stops startup with the reason; an unreachable API server
        does not (the watcher lists once it answers)."""
        where = f"{PLURAL}.{self.resources.group} in namespace {self.namespace!r}"
        try:
            listed = self.resources.list(self.namespace)
        except NotFound as exc:
            raise ProcessorsError(
                f"profiles: {where}: the WorkloadProfile CRD is not installed (the Helm chart's "
                f"crds/, or `otelguard profile install-crd --kube`): {exc}") from exc
        except ApiError as exc:
            if exc.status in (401, 403):
                raise ProcessorsError(f"profiles: {where}: {exc}") from exc
            log.warning("profiles: %s: %s; listing again in the background", where, exc)
            self._watcher.start()
            return
        self._listed(listed.items)
        self._watcher.start(listed.resource_version)

    def close(self) -> None:
        self._watcher.stop()

    # -- the watcher's callbacks --

    def _listed(self, items: list[Obj]) -> None:
        with self._lock:
            names = set()
            for obj in items:
                name = str(meta(obj).get("name") or "")
                names.add(name)
                self._pending[name] = obj
            for gone in set(self._read) - names:
                self._forget(gone)

    def _event(self, event_type: str, obj: Obj) -> None:
        name = str(meta(obj).get("name") or "")
        with self._lock:
            if event_type == "DELETED":
                self._pending.pop(name, None)
                self._forget(name)
            else:
                self._pending[name] = obj

    def _forget(self, name: str) -> None:
        self._read.pop(name, None)
        self._ours.pop(name, None)
        self._spec.pop(name, None)

    # -- the store --

    def scan(self) -> list[ProfileDocument]:
        with self._lock:
            pending, self._pending = self._pending, {}
        out: list[ProfileDocument] = []
        for name, obj in sorted(pending.items()):
            rv = resource_version(obj)
            with self._lock:
                if rv == self._read.get(name) or rv in self._ours.get(name, ()):
                    continue  # read already, or our own write coming back
                self._read[name] = rv
                self._spec[name] = _digest(obj.get("spec"))
            try:
                out.append(from_object(obj))
            except ObjectError as exc:
                metrics.file_errors.labels("load").inc()
                log.warning("profile object not loaded: %s", exc)
        return out

    def save(self, doc: ProfileDocument) -> bool:
        obj = to_object(doc, self.namespace)
        name = obj["metadata"]["name"]
        with self._lock:
            rv = self._read.get(name)
            spec_changed = self._spec.get(name) != _digest(obj["spec"])
        try:
            if rv is None:
                rv = self._created(name, obj)
            elif spec_changed:
                rv = self._wrote(name, self.resources.patch(
                    name, spec_patch(obj), self.namespace, rv))
            self._wrote(name, self.resources.patch_status(
                name, status_patch(obj), self.namespace, rv))
        except (Conflict, AlreadyExists):
            log.info("profiles: %s/%s changed on the API server; reading it instead of writing",
                     self.namespace, name)
            self._reread(name)
            return False
        except KubeError as exc:
            metrics.file_errors.labels("save").inc()
            log.warning("profiles: %s/%s not written: %s", self.namespace, name, exc)
            if isinstance(exc, NotFound):
                with self._lock:
                    self._forget(name)  # deleted meanwhile: the next save creates it
            return False
        with self._lock:
            self._spec[name] = _digest(obj["spec"])
        return True

    def _created(self, name: str, obj: Obj) -> str:
        """Create (the status subresource ignores ``status`` on create); its resourceVersion."""
        return self._wrote(name, self.resources.create(obj, self.namespace))

    def _wrote(self, name: str, stored: Obj) -> str:
        rv = resource_version(stored)
        with self._lock:
            self._read[name] = rv
            ours = self._ours.setdefault(name, [])
            ours.append(rv)
            del ours[:-OURS_KEPT]
        return rv

    def _reread(self, name: str) -> None:
        try:
            obj: Optional[Obj] = self.resources.get(name, self.namespace)
        except NotFound:
            obj = None
        except KubeError as exc:
            log.warning("profiles: %s/%s not read again: %s", self.namespace, name, exc)
            return
        with self._lock:
            if obj is None:
                self._forget(name)
            else:
                self._pending[name] = obj

