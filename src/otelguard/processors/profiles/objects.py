"""Profiles as ``WorkloadProfile`` objects (``otelguard.dev/v1alpha1``, crd.yaml beside this
module): the same document as a profile file, in the shape the API server keeps.

``spec`` is the file's spec plus ``workload`` (the key; the object's name is derived from it, so a
copied or renamed object whose name does not match its key is refused); ``status`` is the
file's status plus ``revision`` and ``allowed`` (the count the ``Entries`` printer column
shows). The content hash covers the file's spec only, so a profile exported to a file and
imported back keeps its approval. An object is bounded below the API server's request limit
(etcd keeps at most ~1.5 MiB): past :data:`MAX_OBJECT_BYTES` the evidence lists are shortened
first (instances, buckets), then the candidates' evidence dropped; ``spec`` is never cut.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from otelguard.config import ConfigError
from otelguard.processors.profiles.document import (
    API_VERSION, KIND, SPEC_KEYS, ProfileDocument, Spec, Status, parse, plain,
)

PLURAL = "workloadprofiles"
MAX_OBJECT_BYTES = 1_000_000
MANAGED_BY = {"app.kubernetes.io/managed-by": "otelguard"}
_UNSAFE = re.compile(r"[^a-z0-9.-]+")
SPEC_FIELDS = ("workload", *SPEC_KEYS)
STATUS_FIELDS = (*(f.name for f in dataclasses.fields(Status)), "revision", "allowed")


def object_name(workload: str) -> str:
    """A DNS-subdomain name for a workload key: readable, distinct for distinct keys."""
    safe = _UNSAFE.sub("-", workload.lower()).strip("-.")[:200].strip("-.")
    return f"{safe or 'workload'}-{hashlib.sha256(workload.encode()).hexdigest()[:10]}"


def allowed_count(spec: Spec) -> int:
    return sum(len(getattr(spec, key)) for key in SPEC_KEYS)


def to_object(doc: ProfileDocument, namespace: str) -> dict[str, Any]:
    """The object for a document (no resourceVersion: the store adds the one it last saw)."""
    data = plain(dataclasses.asdict(doc))
    status = {**data.get("status", {}), "revision": doc.metadata.revision,
              "allowed": allowed_count(doc.spec)}
    obj = {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": object_name(doc.metadata.workload), "namespace": namespace,
                     "labels": dict(MANAGED_BY)},
        "spec": {"workload": doc.metadata.workload, **data.get("spec", {})},
        "status": status,
    }
    return _bounded(obj)


def _bounded(obj: dict[str, Any]) -> dict[str, Any]:
    """Shorten the evidence until the object fits :data:`MAX_OBJECT_BYTES`."""
    if _size(obj) <= MAX_OBJECT_BYTES:
        return obj
    status = obj["status"]
    for key in ("entries", "quarantine"):
        status[key] = [{k: v for k, v in ev.items() if k not in ("instances", "buckets")}
                       for ev in status.get(key, [])]
    if _size(obj) > MAX_OBJECT_BYTES and status.get("state") != "learning":
        status.pop("entries", None)  # after learning the spec is what counts
    while _size(obj) > MAX_OBJECT_BYTES and status.get("quarantine"):
        status["quarantine"] = status["quarantine"][: len(status["quarantine"]) // 2]
    return obj


def _size(obj: dict[str, Any]) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def spec_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that makes an object's spec exactly ``obj``'s (absent fields null)."""
    return {"spec": {k: obj["spec"].get(k) for k in SPEC_FIELDS}}


def status_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """The same for status (sent to the status subresource: the patch's value only)."""
    return {k: obj["status"].get(k) for k in STATUS_FIELDS}


class ObjectError(ValueError):
    """An object that is no valid profile (the message names it and every problem)."""


def from_object(obj: dict[str, Any]) -> ProfileDocument:
    """The document an object stands for; :class:`ObjectError` when it is not valid."""
    meta = obj.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    where = f"{PLURAL} {ns}/{name}"
    spec = dict(obj.get("spec") or {})
    status = dict(obj.get("status") or {})
    workload = spec.pop("workload", None)
    revision = status.pop("revision", 0)
    status.pop("allowed", None)
    if not isinstance(workload, str) or not workload:
        raise ObjectError(f"{where}: spec.workload is missing")
    if object_name(workload) != name:
        raise ObjectError(f"{where}: the name does not belong to spec.workload {workload!r} "
                          f"(expected {object_name(workload)}): refused")
    try:
        return parse({"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                      "metadata": {"workload": workload, "revision": revision},
                      "spec": spec, "status": status}, source=where)
    except ConfigError as exc:
        raise ObjectError(str(exc)) from exc
