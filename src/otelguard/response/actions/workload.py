"""Cluster actions on a workload's replicas (docs/response.md#actions).

- ``scale_to_zero``: ``spec.replicas`` of the Deployment/StatefulSet/ReplicaSet to 0; revert
  sets the count it had back.
- ``rollback_deployment``: the Deployment's pod template replaced by the one of its previous
  revision (the ReplicaSet whose ``deployment.kubernetes.io/revision`` is the highest below the
  current one, or ``to_revision``), without ``pod-template-hash``, as ``kubectl rollout undo``
  does; revert puts the template it replaced back.
- ``delete_pod``: refused when fewer than ``min_healthy_replicas`` other ready pods of its
  workload would remain; not reversible (the controller, if any, makes a new pod).

The workload is ``Target.workload_kind``/``workload_name`` or found from the pod's owners.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional

from otelguard.config import Checks
from otelguard.response.actions.base import (
    ActionError, Change, Outcome, Target, build_params, params_json,
)
from otelguard.response.actions.diff import object_diff, readable
from otelguard.response.actions.kube import NoParams, Rule, KubeAction
from otelguard.response.actions.kubeapi import Kube, NotFound, controller_of, strip_hash

REVISION = "deployment.kubernetes.io/revision"
_SCALABLE = {"Deployment": "deployment", "StatefulSet": "stateful_set", "ReplicaSet": "replica_set"}


def _methods(kube: Kube, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(read, patch) of the apps/v1 kind."""
    if kind not in _SCALABLE:
        raise ActionError(f"cannot scale a {kind}: only {', '.join(_SCALABLE)}")
    stem = _SCALABLE[kind]
    return (getattr(kube.apps, f"read_namespaced_{stem}"),
            getattr(kube.apps, f"patch_namespaced_{stem}"))


def _replicas(obj: Mapping[str, Any]) -> int:
    return int(obj.get("spec", {}).get("replicas", 1))


class ScaleToZero(KubeAction):
    """Scale the target's workload to zero replicas."""

    name: ClassVar[str] = "scale_to_zero"
    Params: ClassVar[type[NoParams]] = NoParams
    reversible: ClassVar[bool] = True
    rbac: ClassVar[tuple[Rule, ...]] = (
        ("", "pods", ("get",)), ("apps", "replicasets", ("get", "patch")),
        ("apps", "deployments", ("get", "patch")), ("apps", "statefulsets", ("get", "patch")),
    )

    def _read(self, kind: str, name: str, ns: str) -> dict[str, Any]:
        read, _ = _methods(self.kube, kind)
        obj: dict[str, Any] = self.kube.call(self.name, f"get {kind} {ns}/{name}", read, name, ns)
        return obj

    def _set(self, kind: str, obj: Mapping[str, Any], replicas: int) -> None:
        _, patch = _methods(self.kube, kind)
        meta = obj["metadata"]
        self.kube.patch(self.name, f"patch {kind} {meta['namespace']}/{meta['name']}", patch,
                        meta["name"], meta["namespace"],
                        body={"metadata": {"resourceVersion": meta["resourceVersion"]},
                              "spec": {"replicas": replicas}})

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        build_params(NoParams, params, self.name)
        kind, name = self.kube.workload_of(self.name, target)
        ns = str(target.namespace)
        obj = self._read(kind, name, ns)
        after = copy.deepcopy(obj)
        after.setdefault("spec", {})["replicas"] = 0
        n = _replicas(obj)
        return Change(
            self.name, target, {},
            summary=(f"scale {kind} {ns}/{name} from {n} to 0 replicas" if n
                     else f"{kind} {ns}/{name} has 0 replicas already: no change"),
            diff=object_diff(readable(obj), readable(after), f"{kind.lower()}s/{ns}/{name}"),
            planned_state={"kind": kind, "name": name, "namespace": ns,
                           "uid": obj["metadata"]["uid"], "replicas": n})

    def apply(self, change: Change) -> Outcome:
        ps = change.planned_state
        obj = self._read(ps["kind"], ps["name"], ps["namespace"])
        what = f"{ps['kind']} {ps['namespace']}/{ps['name']}"
        if obj["metadata"]["uid"] != ps["uid"]:
            raise ActionError(f"{what} is another object than planned (recreated)")
        if _replicas(obj) != ps["replicas"]:
            raise ActionError(f"{what} has {_replicas(obj)} replicas now, planned from "
                              f"{ps['replicas']}")
        if ps["replicas"] == 0:
            return Outcome(True, f"{what} had 0 replicas: nothing done", {})
        self._set(ps["kind"], obj, 0)
        return Outcome(True, f"scaled {what} to 0", dict(ps))

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        rs = outcome.revert_state
        if not rs:
            return Outcome(True, "apply changed nothing: nothing to revert")
        what = f"{rs['kind']} {rs['namespace']}/{rs['name']}"
        try:
            obj = self._read(rs["kind"], rs["name"], rs["namespace"])
        except NotFound:
            return Outcome(True, f"{what} is gone")
        if obj["metadata"]["uid"] != rs["uid"]:
            return Outcome(True, f"{what} is another object now")
        now = _replicas(obj)
        if now == rs["replicas"]:
            return Outcome(True, f"{what} has {now} replicas already")
        if now != 0:
            return Outcome(False, f"{what} was scaled to {now} by someone else since: left alone")
        self._set(rs["kind"], obj, int(rs["replicas"]))
        return Outcome(True, f"scaled {what} back to {rs['replicas']}")


@dataclass(frozen=True)
class RollbackParams:
    to_revision: int = 0  # the revision to go back to (0: the one before the current)

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 0, "to_revision")
        checks.done()


class RollbackDeployment(KubeAction):
    """Put a Deployment's previous pod template back."""

    name: ClassVar[str] = "rollback_deployment"
    Params: ClassVar[type[RollbackParams]] = RollbackParams
    reversible: ClassVar[bool] = True
    rbac: ClassVar[tuple[Rule, ...]] = (
        ("", "pods", ("get",)), ("apps", "replicasets", ("get", "list")),
        ("apps", "deployments", ("get", "patch")),
    )

    def _deployment(self, name: str, ns: str) -> dict[str, Any]:
        dep: dict[str, Any] = self.kube.call(
            self.name, f"get deployment {ns}/{name}", self.kube.apps.read_namespaced_deployment,
            name, ns)
        return dep

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(RollbackParams, params, self.name)
        kind, name = self.kube.workload_of(self.name, target)
        if kind != "Deployment":
            raise ActionError(f"rollback_deployment works on a Deployment, not a {kind}")
        ns = str(target.namespace)
        dep = self._deployment(name, ns)
        try:
            current = int(dep["metadata"].get("annotations", {})[REVISION])
        except (KeyError, ValueError):
            raise ActionError(f"Deployment {ns}/{name} has no {REVISION} annotation") from None
        listed = self.kube.call(self.name, f"list replicasets in {ns}",
                                self.kube.apps.list_namespaced_replica_set, ns)
        revisions: dict[int, dict[str, Any]] = {}
        for rs in listed["items"]:
            owner = [r for r in rs["metadata"].get("ownerReferences") or ()
                     if r.get("controller") and r.get("uid") == dep["metadata"]["uid"]]
            rev = (rs["metadata"].get("annotations") or {}).get(REVISION, "")
            if owner and rev.isdigit():
                revisions[int(rev)] = rs
        older = [r for r in revisions if r < current]
        to = p.to_revision or (max(older) if older else 0)
        if to not in revisions:
            raise ActionError(f"Deployment {ns}/{name} (revision {current}) has no revision "
                              f"{to or 'before it'} to roll back to")
        template = strip_hash(revisions[to]["spec"]["template"])
        if template == dep["spec"]["template"]:
            raise ActionError(f"revision {to}'s template is Deployment {ns}/{name}'s already")
        after = copy.deepcopy(dep)
        after["spec"]["template"] = template
        return Change(
            self.name, target, params_json(p),
            summary=f"roll Deployment {ns}/{name} back from revision {current} to {to}",
            diff=object_diff(readable(dep), readable(after), f"deployments/{ns}/{name}"),
            planned_state={"name": name, "namespace": ns, "uid": dep["metadata"]["uid"],
                           "revision": current, "to_revision": to,
                           "template": dep["spec"]["template"], "new_template": template})

    def _replace(self, dep: Mapping[str, Any], template: Any) -> None:
        meta = dep["metadata"]
        self.kube.patch(
            self.name, f"patch deployment {meta['namespace']}/{meta['name']}",
            self.kube.apps.patch_namespaced_deployment, meta["name"], meta["namespace"],
            body=[{"op": "test", "path": "/metadata/resourceVersion",
                   "value": meta["resourceVersion"]},
                  {"op": "replace", "path": "/spec/template", "value": template}])

    def apply(self, change: Change) -> Outcome:
        ps = change.planned_state
        dep = self._deployment(ps["name"], ps["namespace"])
        what = f"Deployment {ps['namespace']}/{ps['name']}"
        if dep["metadata"]["uid"] != ps["uid"]:
            raise ActionError(f"{what} is another object than planned (recreated)")
        if dep["spec"]["template"] != ps["template"]:
            raise ActionError(f"{what}'s pod template changed since plan")
        self._replace(dep, ps["new_template"])
        return Outcome(True, f"rolled {what} back to revision {ps['to_revision']}",
                       {"name": ps["name"], "namespace": ps["namespace"], "uid": ps["uid"],
                        "template": ps["template"], "applied": ps["new_template"]})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        rs = outcome.revert_state
        what = f"Deployment {rs['namespace']}/{rs['name']}"
        try:
            dep = self._deployment(rs["name"], rs["namespace"])
        except NotFound:
            return Outcome(True, f"{what} is gone")
        if dep["metadata"]["uid"] != rs["uid"]:
            return Outcome(True, f"{what} is another object now")
        if dep["spec"]["template"] == rs["template"]:
            return Outcome(True, f"{what} has its original template already")
        if dep["spec"]["template"] != rs["applied"]:
            return Outcome(False, f"{what}'s template was changed by someone else since: left alone")
        self._replace(dep, rs["template"])
        return Outcome(True, f"restored {what}'s template")


@dataclass(frozen=True)
class DeleteParams:
    # refuse when fewer other ready pods of the workload than this would remain
    min_healthy_replicas: int = 1
    grace_period_seconds: Optional[int] = None  # None: the pod's own terminationGracePeriodSeconds

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 0, "min_healthy_replicas")
        if self.grace_period_seconds is not None:
            checks.at_least(self, 0, "grace_period_seconds")
        checks.done()


def selector_string(selector: Mapping[str, Any]) -> str:
    """A LabelSelector as the ``labelSelector`` query parameter."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or ())
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)


def _ready(pod: Mapping[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or ())


class DeletePod(KubeAction):
    """Delete the target pod unless that leaves its workload short of ready replicas."""

    name: ClassVar[str] = "delete_pod"
    Params: ClassVar[type[DeleteParams]] = DeleteParams
    reversible: ClassVar[bool] = False
    rbac: ClassVar[tuple[Rule, ...]] = (
        ("", "pods", ("get", "list", "delete")),
        ("apps", "replicasets", ("get",)), ("apps", "deployments", ("get",)),
        ("apps", "statefulsets", ("get",)), ("apps", "daemonsets", ("get",)),
    )

    def _others_ready(self, pod: Mapping[str, Any]) -> tuple[str, int]:
        """(the workload, how many of its other pods are ready)."""
        meta = pod["metadata"]
        ns, owner = meta["namespace"], controller_of(pod)
        if owner is None:
            return f"pod {ns}/{meta['name']} (no controller)", 0
        kind, name = owner
        if kind == "ReplicaSet":
            rs = self.kube.call(self.name, f"get replicaset {ns}/{name}",
                                self.kube.apps.read_namespaced_replica_set, name, ns)
            kind, name = controller_of(rs) or (kind, name)
        stems = {"ReplicaSet": "replica_set", "Deployment": "deployment",
                 "StatefulSet": "stateful_set", "DaemonSet": "daemon_set"}
        if kind not in stems:
            raise ActionError(f"pod {ns}/{meta['name']} belongs to a {kind}: cannot count its "
                              f"replicas (only {', '.join(stems)})")
        obj = self.kube.call(self.name, f"get {kind} {ns}/{name}",
                             getattr(self.kube.apps, f"read_namespaced_{stems[kind]}"), name, ns)
        pods = self.kube.call(self.name, f"list pods in {ns}", self.kube.core.list_namespaced_pod,
                              ns, label_selector=selector_string(obj["spec"]["selector"]))
        ready = [p for p in pods["items"] if p["metadata"]["uid"] != meta["uid"] and _ready(p)]
        return f"{kind} {ns}/{name}", len(ready)

    def _check(self, pod: Mapping[str, Any], minimum: int) -> str:
        workload, ready = self._others_ready(pod)
        if ready < minimum:
            raise ActionError(f"deleting pod {pod['metadata']['namespace']}/"
                              f"{pod['metadata']['name']} would leave {workload} {ready} ready "
                              f"replica(s), fewer than min_healthy_replicas={minimum}: refused")
        return f"{workload} keeps {ready} ready"

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(DeleteParams, params, self.name)
        pod = self.kube.pod(self.name, target)
        keeps = self._check(pod, p.min_healthy_replicas)
        return Change(
            self.name, target, params_json(p),
            summary=f"delete pod {target.namespace}/{target.pod} ({keeps}); NOT reversible",
            diff=object_diff(readable(pod), None, f"pods/{target.namespace}/{target.pod}"),
            planned_state={"uid": pod["metadata"]["uid"]})

    def apply(self, change: Change) -> Outcome:
        pod = self.kube.pod(self.name, change.target)
        if pod["metadata"]["uid"] != change.planned_state["uid"]:
            raise ActionError(f"pod {change.target.namespace}/{change.target.pod} is another "
                              "pod than planned")
        keeps = self._check(pod, int(change.params.get("min_healthy_replicas", 1)))
        body: dict[str, Any] = {"preconditions": {"uid": pod["metadata"]["uid"]}}
        grace = change.params.get("grace_period_seconds")
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        meta = pod["metadata"]
        self.kube.call(self.name, f"delete pod {meta['namespace']}/{meta['name']}",
                       self.kube.core.delete_namespaced_pod, meta["name"], meta["namespace"],
                       body=body)
        return Outcome(True, f"deleted pod {meta['namespace']}/{meta['name']} ({keeps})", {})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        return Outcome(False, "delete_pod is not reversible: a controller, if any, makes a new "
                              "pod from its template")
