"""The Kubernetes API as the cluster actions use it: one client, JSON in and out, clear errors.

The actions take an ApiClient; :func:`api_client` builds one from a kubeconfig (tests, the
bench, ``otelguard respond --kubeconfig``); in-cluster construction is ``otelguard.kube``'s. Calls go through the official client's generated
methods (auth, TLS and paths from its configuration) with ``_preload_content=False``: objects
stay plain JSON data, exactly what the diff renders and what a revert writes back. An API error
becomes an :class:`ActionError` saying which action, which call and why; a 403 names the verb
and resource the responder's Role lacks (docs/response.md#actions lists each action's).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping, Optional

from otelguard.response.actions.base import ActionError, Target

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class NotFound(ActionError):
    """The object is not there (a revert takes it as already undone)."""


def api_client(kubeconfig: str, context: str = "") -> Any:
    """A ``kubernetes.client.ApiClient`` from a kubeconfig file, never touching the client's
    global default configuration. In-cluster construction belongs to ``otelguard.kube`` (the
    enricher's ``api_client_from`` moves there); pass its client to the actions."""
    from kubernetes import config

    from_file: Callable[..., Any] = config.new_client_from_config
    try:
        return from_file(config_file=kubeconfig, context=context or None)
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        raise ActionError(f"cannot use kubeconfig {kubeconfig!r}: {type(exc).__name__}: {exc}") from exc


class Kube:
    """The typed API groups the actions call, over one ApiClient."""

    def __init__(self, client: Any) -> None:
        from kubernetes import client as k

        self.client = client
        self.core = k.CoreV1Api(client)
        self.apps = k.AppsV1Api(client)
        self.networking = k.NetworkingV1Api(client)

    def call(self, action: str, what: str, fn: Callable[..., Any], *args: Any,
             **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` returning the response's JSON (None when empty)."""
        from kubernetes.client.exceptions import ApiException

        try:
            resp = fn(*args, _preload_content=False, _request_timeout=(5, 30), **kwargs)
        except ApiException as exc:
            raise _error(action, what, exc) from None
        data = resp.data
        return json.loads(data) if data else None

    def patch(self, action: str, what: str, fn: Callable[..., Any], *args: Any,
              body: Any) -> Any:
        """A merge patch (``body`` a mapping) or a JSON patch (``body`` a list)."""
        kind = JSON_PATCH if isinstance(body, list) else MERGE
        return self.call(action, what, fn, *args, body=body, _content_type=kind)

    def pod(self, action: str, target: Target) -> dict[str, Any]:
        """The target pod; refused when it is another pod than the detection's (same name, new
        uid: the controller replaced it)."""
        if not target.namespace or not target.pod:
            raise ActionError(f"{action} needs the target's namespace and pod name")
        pod: dict[str, Any] = self.call(action, f"get pod {target.namespace}/{target.pod}",
                                        self.core.read_namespaced_pod, target.pod, target.namespace)
        if target.pod_uid and pod["metadata"]["uid"] != target.pod_uid:
            raise ActionError(f"pod {target.namespace}/{target.pod} is another pod now (uid "
                              f"{pod['metadata']['uid']}, the detection's was {target.pod_uid})")
        return pod

    def workload_of(self, action: str, target: Target) -> tuple[str, str]:
        """(kind, name) of the target's workload: as named, else from the pod's owners
        (ReplicaSet -> its Deployment)."""
        if target.workload_kind and target.workload_name:
            return target.workload_kind, target.workload_name
        pod = self.pod(action, target)
        owner = controller_of(pod)
        if owner is None:
            raise ActionError(f"pod {target.namespace}/{target.pod} has no controller")
        kind, name = owner
        if kind == "ReplicaSet":
            rs = self.call(action, f"get replicaset {target.namespace}/{name}",
                           self.apps.read_namespaced_replica_set, name, target.namespace)
            parent = controller_of(rs)
            if parent is not None and parent[0] == "Deployment":
                return parent
        return kind, name


def controller_of(obj: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return str(ref["kind"]), str(ref["name"])
    return None


def _error(action: str, what: str, exc: Any) -> ActionError:
    try:
        message = json.loads(exc.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        message = str(exc.body or exc.reason)
    status = exc.status
    if status == 403:
        return ActionError(f"{action}: {what}: Forbidden: {message} (the responder's Role "
                           f"lacks this verb; docs/response.md#actions lists what each action needs)")
    if status == 404:
        return NotFound(f"{action}: {what}: not found: {message}")
    if status in (409, 422) and ("modified" in message or "test" in message):
        return ActionError(f"{action}: {what}: the object changed since it was read: {message}")
    return ActionError(f"{action}: {what}: HTTP {status} {exc.reason}: {message}")


def strip_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A ReplicaSet's pod template as its Deployment's: without ``pod-template-hash``."""
    tpl = json.loads(json.dumps(template))
    labels = tpl.get("metadata", {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    return dict(tpl)
