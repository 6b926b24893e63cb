"""Cluster actions on a pod and its node (docs/response.md#actions); workload.py has those that
change a workload's replicas (scale, roll back, delete a pod).

- ``label_pod``: set labels and/or annotations on the pod (e.g. ``quarantine: "true"`` for
  other tooling to act on); revert restores each key's previous value (or removes it).
- ``isolate_pod``: a NetworkPolicy denying all ingress and egress except an optional allow
  list, selecting a label this action puts on the pod (``otelguard.dev/isolate=<pod uid>``) so
  only that pod is isolated; revert deletes the policy and the label.
- ``cordon_node``: ``spec.unschedulable`` on the pod's node; revert uncordons it.

Each write carries the ``resourceVersion`` just read (the API server refuses it if the object
moved in between) after ``apply`` has checked again what ``plan`` saw: the pod's uid (a pod of
the same name made by a controller is another pod) and the values the diff shows as "before".
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Optional

from otelguard.config import Checks
from otelguard.response.actions.base import (
    ActionError, Change, Outcome, Target, build_params, params_json,
)
from otelguard.response.actions.diff import object_diff, readable
from otelguard.response.actions.kubeapi import Kube, NotFound, controller_of

# (API group, resource, verbs): what each action needs; the chart's ClusterRole grants exactly
# the union for the enabled actions (tests/response/actions/test_rbac.py checks both agree).
Rule = tuple[str, str, tuple[str, ...]]

ISOLATE_LABEL = "otelguard.dev/isolate"
MANAGED_BY = {"app.kubernetes.io/managed-by": "otelguard"}
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _bad_label_key(key: str) -> Optional[str]:
    prefix, _, name = key.rpartition("/")
    if not name or not _LABEL_NAME.match(name) or (prefix and not _PREFIX.match(prefix)):
        return f"{key!r} is not a valid label key"
    return None


@dataclass(frozen=True)
class LabelParams:
    labels: Mapping[str, str] = field(default_factory=dict)  # set on the pod
    annotations: Mapping[str, str] = field(default_factory=dict)  # set on the pod

    def __post_init__(self) -> None:
        checks = Checks()
        if not self.labels and not self.annotations:
            checks.add("labels", "give labels or annotations to set (both are empty)")
        for key, value in self.labels.items():
            bad = _bad_label_key(key) or (None if _LABEL_NAME.match(value)
                                          else f"{value!r} is not a valid label value")
            if bad:
                checks.add(f"labels.{key}", bad)
        for key in self.annotations:
            if _bad_label_key(key):
                checks.add(f"annotations.{key}", f"{key!r} is not a valid annotation key")
        checks.done()


class _MetadataEdit:
    """Labels/annotations on one pod: planned "before" values, checked again on apply, each
    key restored on revert only while it still holds the value apply wrote."""

    def __init__(self, kube: Kube, action: str) -> None:
        self.kube, self.action = kube, action

    @staticmethod
    def changes(pod: Mapping[str, Any], want: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        meta = pod["metadata"]
        sets = {sec: {k: v for k, v in want[sec].items() if (meta.get(sec) or {}).get(k) != v}
                for sec in want}
        before = {sec: {k: (meta.get(sec) or {}).get(k) for k in sets[sec]} for sec in sets}
        return {"uid": meta["uid"], "set": sets, "before": before}

    @staticmethod
    def edited(pod: Mapping[str, Any], values: Mapping[str, Mapping[str, Optional[str]]]
               ) -> dict[str, Any]:
        out = copy.deepcopy(dict(pod))
        for sec, kv in values.items():
            section = out["metadata"].setdefault(sec, {})
            for k, v in kv.items():
                if v is None:
                    section.pop(k, None)
                else:
                    section[k] = v
            if not section:
                del out["metadata"][sec]
        return out

    def _patch(self, pod: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"], **values}}
        self.kube.patch(self.action, f"patch pod {meta['namespace']}/{meta['name']}",
                        self.kube.core.patch_namespaced_pod, meta["name"], meta["namespace"],
                        body=body)

    def apply(self, target: Target, state: Mapping[str, Any]) -> dict[str, Any]:
        pod = self.kube.pod(self.action, target)
        if pod["metadata"]["uid"] != state["uid"]:
            raise ActionError(f"pod {target.namespace}/{target.pod} is another pod than planned")
        for sec, kv in state["before"].items():
            for k, was in kv.items():
                now = (pod["metadata"].get(sec) or {}).get(k)
                if now != was:
                    raise ActionError(f"pod {target.namespace}/{target.pod}: {sec[:-1]} {k} is "
                                      f"{now!r} now, planned from {was!r}")
        values = {sec: kv for sec, kv in state["set"].items() if kv}
        if values:
            self._patch(pod, values)
        return dict(state)

    def revert(self, target: Target, state: Mapping[str, Any]) -> Outcome:
        try:
            pod = self.kube.pod(self.action, Target(namespace=target.namespace, pod=target.pod))
        except NotFound:
            return Outcome(True, f"pod {target.namespace}/{target.pod} is gone")
        if pod["metadata"]["uid"] != state["uid"]:
            return Outcome(True, f"pod {target.namespace}/{target.pod} is another pod now")
        restore: dict[str, dict[str, Optional[str]]] = {}
        moved = []
        for sec, kv in state["set"].items():
            for k, wrote in kv.items():
                now = (pod["metadata"].get(sec) or {}).get(k)
                if now == wrote:
                    restore.setdefault(sec, {})[k] = state["before"][sec][k]
                elif now != state["before"][sec][k]:
                    moved.append(f"{sec[:-1]} {k}={now!r}")
        if restore:
            self._patch(pod, restore)
        if moved:
            return Outcome(False, f"restored what was still ours; changed by someone else since "
                                  f"apply, left alone: {', '.join(moved)}")
        return Outcome(True, "restored" if restore else "already restored")


class KubeAction:
    """What the cluster actions share: the API (a ``kubernetes.client.ApiClient`` or a Kube)."""

    where: ClassVar[Literal["cluster"]] = "cluster"
    name: ClassVar[str]

    def __init__(self, client: Any) -> None:
        self.kube = client if isinstance(client, Kube) else Kube(client)


class LabelPod(KubeAction):
    """Set labels/annotations on the target pod."""

    name: ClassVar[str] = "label_pod"
    Params: ClassVar[type[LabelParams]] = LabelParams
    reversible: ClassVar[bool] = True
    rbac: ClassVar[tuple[Rule, ...]] = (("", "pods", ("get", "patch")),)

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(LabelParams, params, self.name)
        pod = self.kube.pod(self.name, target)
        want = {"labels": dict(p.labels), "annotations": dict(p.annotations)}
        state = _MetadataEdit.changes(pod, want)
        after = _MetadataEdit.edited(pod, state["set"])
        n = sum(len(kv) for kv in state["set"].values())
        return Change(
            self.name, target, params_json(p),
            summary=(f"set {n} label/annotation value(s) on pod {target.namespace}/{target.pod}"
                     if n else f"pod {target.namespace}/{target.pod} already has them: no change"),
            diff=object_diff(readable(pod), readable(after), f"pods/{target.namespace}/{target.pod}"),
            planned_state=state)

    def apply(self, change: Change) -> Outcome:
        state = _MetadataEdit(self.kube, self.name).apply(change.target, change.planned_state)
        return Outcome(True, f"labelled pod {change.target.namespace}/{change.target.pod}", state)

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        return _MetadataEdit(self.kube, self.name).revert(change.target, outcome.revert_state)


@dataclass(frozen=True)
class Peer:
    cidr: str  # an IP block the isolated pod may still exchange traffic with, e.g. 10.0.0.53/32
    ports: tuple[int, ...] = ()  # only these ports (empty: all)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"

    def __post_init__(self) -> None:
        import ipaddress

        checks = Checks()
        try:
            ipaddress.ip_network(self.cidr)
        except ValueError:
            checks.add("cidr", f"{self.cidr!r} is not a CIDR (e.g. 10.0.0.0/8)")
        for i, port in enumerate(self.ports):
            if not 0 < port < 65536:
                checks.add(f"ports[{i}]", f"must be 1-65535, got {port}")
        checks.done()


@dataclass(frozen=True)
class IsolateParams:
    allow_ingress: tuple[Peer, ...] = ()  # sources still allowed in (empty: none)
    allow_egress: tuple[Peer, ...] = ()  # destinations still allowed out (empty: none)


def _rules(peers: tuple[Peer, ...], side: str) -> list[dict[str, Any]]:
    out = []
    for peer in peers:
        rule: dict[str, Any] = {side: [{"ipBlock": {"cidr": peer.cidr}}]}
        if peer.ports:
            rule["ports"] = [{"protocol": peer.protocol, "port": port} for port in peer.ports]
        out.append(rule)
    return out


class IsolatePod(KubeAction):
    """Isolate the target pod with a NetworkPolicy selecting only it."""

    name: ClassVar[str] = "isolate_pod"
    Params: ClassVar[type[IsolateParams]] = IsolateParams
    reversible: ClassVar[bool] = True
    rbac: ClassVar[tuple[Rule, ...]] = (
        ("", "pods", ("get", "patch")),
        ("networking.k8s.io", "networkpolicies", ("get", "create", "delete")),
    )

    @staticmethod
    def policy_name(pod: str, uid: str) -> str:
        return f"otelguard-isolate-{pod[:200]}-{uid[:8]}"

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(IsolateParams, params, self.name)
        pod = self.kube.pod(self.name, target)
        uid, ns = pod["metadata"]["uid"], pod["metadata"]["namespace"]
        policy: dict[str, Any] = {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": self.policy_name(pod["metadata"]["name"], uid), "namespace": ns,
                         "labels": dict(MANAGED_BY)},
            "spec": {"podSelector": {"matchLabels": {ISOLATE_LABEL: uid}},
                     "policyTypes": ["Ingress", "Egress"],
                     "ingress": _rules(p.allow_ingress, "from"),
                     "egress": _rules(p.allow_egress, "to")},
        }
        np_name = policy["metadata"]["name"]
        try:
            self.kube.call(self.name, f"get networkpolicy {ns}/{np_name}",
                           self.kube.networking.read_namespaced_network_policy, np_name, ns)
            raise ActionError(f"pod {ns}/{target.pod} is already isolated by {np_name}")
        except NotFound:
            pass
        state = _MetadataEdit.changes(pod, {"labels": {ISOLATE_LABEL: uid}})
        after = _MetadataEdit.edited(pod, state["set"])
        diff = (object_diff(readable(pod), readable(after), f"pods/{ns}/{target.pod}")
                + object_diff(None, policy, f"networkpolicies/{ns}/{np_name}"))
        allowed = len(p.allow_ingress) + len(p.allow_egress)
        return Change(
            self.name, target, params_json(p),
            summary=(f"isolate pod {ns}/{target.pod} with NetworkPolicy {np_name} (deny all"
                     f"{f', {allowed} allow rule(s)' if allowed else ''})"),
            diff=diff, planned_state={**state, "policy": policy})

    def apply(self, change: Change) -> Outcome:
        ps = change.planned_state
        policy = ps["policy"]
        ns, np_name = policy["metadata"]["namespace"], policy["metadata"]["name"]
        created = self.kube.call(self.name, f"create networkpolicy {ns}/{np_name}",
                                 self.kube.networking.create_namespaced_network_policy, ns,
                                 body=policy)
        try:
            state = _MetadataEdit(self.kube, self.name).apply(change.target, ps)
        except ActionError:
            self._delete_policy(ns, np_name, created["metadata"]["uid"])
            raise
        return Outcome(True, f"isolated pod {ns}/{change.target.pod} with {np_name}",
                       {**state, "policy_uid": created["metadata"]["uid"]})

    def _delete_policy(self, ns: str, name: str, uid: str) -> bool:
        try:
            self.kube.call(self.name, f"delete networkpolicy {ns}/{name}",
                           self.kube.networking.delete_namespaced_network_policy, name, ns,
                           body={"preconditions": {"uid": uid}})
            return True
        except NotFound:
            return False

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        rs = outcome.revert_state
        meta = change.planned_state["policy"]["metadata"]
        deleted = self._delete_policy(meta["namespace"], meta["name"], rs["policy_uid"])
        labels = _MetadataEdit(self.kube, self.name).revert(change.target, rs)
        return Outcome(labels.ok, f"NetworkPolicy {meta['name']} "
                                  f"{'deleted' if deleted else 'already gone'}; pod: {labels.message}")


@dataclass(frozen=True)
class NoParams:
    """The action takes no parameters."""


class CordonNode(KubeAction):
    """Mark the target's node (``Target.node``, else the pod's) unschedulable."""

    name: ClassVar[str] = "cordon_node"
    Params: ClassVar[type[NoParams]] = NoParams
    reversible: ClassVar[bool] = True
    rbac: ClassVar[tuple[Rule, ...]] = (("", "nodes", ("get", "patch")), ("", "pods", ("get",)))

    def _node(self, name: str) -> dict[str, Any]:
        node: dict[str, Any] = self.kube.call(self.name, f"get node {name}",
                                              self.kube.core.read_node, name)
        return node

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        build_params(NoParams, params, self.name)
        name = target.node or self.kube.pod(self.name, target).get("spec", {}).get("nodeName")
        if not name:
            raise ActionError("cordon_node needs the target's node (or a scheduled pod)")
        node = self._node(name)
        was = bool(node.get("spec", {}).get("unschedulable", False))
        after = copy.deepcopy(node)
        after.setdefault("spec", {})["unschedulable"] = True
        return Change(
            self.name, target, {},
            summary=f"cordon node {name}" if not was else f"node {name} is already cordoned",
            diff=object_diff(readable(node), readable(after), f"nodes/{name}"),
            planned_state={"node": name, "uid": node["metadata"]["uid"], "unschedulable": was})

    def apply(self, change: Change) -> Outcome:
        ps = change.planned_state
        node = self._node(ps["node"])
        if node["metadata"]["uid"] != ps["uid"]:
            raise ActionError(f"node {ps['node']} is another node object than planned")
        now = bool(node.get("spec", {}).get("unschedulable", False))
        if now != ps["unschedulable"]:
            raise ActionError(f"node {ps['node']}: unschedulable is {now} now, planned from "
                              f"{ps['unschedulable']}")
        if now:
            return Outcome(True, f"node {ps['node']} was already cordoned: nothing done", {})
        self.kube.patch(self.name, f"patch node {ps['node']}", self.kube.core.patch_node,
                        ps["node"], body={"metadata": {"resourceVersion":
                                                       node["metadata"]["resourceVersion"]},
                                          "spec": {"unschedulable": True}})
        return Outcome(True, f"cordoned node {ps['node']}", {"node": ps["node"], "uid": ps["uid"]})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        rs = outcome.revert_state
        if not rs:
            return Outcome(True, "apply changed nothing: nothing to revert")
        try:
            node = self._node(rs["node"])
        except NotFound:
            return Outcome(True, f"node {rs['node']} is gone")
        if node["metadata"]["uid"] != rs["uid"]:
            return Outcome(True, f"node {rs['node']} is another node object now")
        if not node.get("spec", {}).get("unschedulable", False):
            return Outcome(True, f"node {rs['node']} is already schedulable")
        self.kube.patch(self.name, f"patch node {rs['node']}", self.kube.core.patch_node,
                        rs["node"], body={"spec": {"unschedulable": None}})
        return Outcome(True, f"uncordoned node {rs['node']}")
