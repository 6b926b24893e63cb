"""Cluster actions against the real kube-apiserver: each changes the object as its dry run said,
apply refuses when what plan saw moved, and revert restores the original (twice is harmless)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from otelguard.response.actions.base import ActionError, Change, Target
from otelguard.response.actions.kube import ISOLATE_LABEL, CordonNode, IsolatePod, LabelPod
from otelguard.response.actions.kubeapi import strip_hash
from otelguard.response.actions.workload import DeletePod, RollbackDeployment, ScaleToZero
from tests.support.kube_rollout import add_pod, make_node, rollout
from tests.support.kube_world import make_namespace

pytestmark = pytest.mark.e2e


def get(admin: Any, kind: str, ns: str, name: str) -> Any:
    from kubernetes import client

    api = {"pod": (client.CoreV1Api, "read_namespaced_pod"),
           "deployment": (client.AppsV1Api, "read_namespaced_deployment"),
           "networkpolicy": (client.NetworkingV1Api, "read_namespaced_network_policy")}[kind]
    return json.loads(getattr(api[0](admin), api[1])(name, ns, _preload_content=False).data)


def pod_target(admin: Any, ns: str, pod: str) -> Target:
    p = get(admin, "pod", ns, pod)
    return Target(namespace=ns, pod=pod, pod_uid=p["metadata"]["uid"],
                  node=p["spec"].get("nodeName"))


def test_label_pod_plan_apply_revert(admin: Any) -> None:
    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1"], replicas=1)
    pod = r.pods[0]
    target = pod_target(admin, ns, pod)
    action = LabelPod(admin)
    change = action.plan(target, {"labels": {"quarantine": "true", "app": "web-q"},
                                  "annotations": {"otelguard.dev/reason": "shell in pod"}})
    assert "+    quarantine: 'true'" in change.diff and "-    app: web\n" in change.diff
    assert "+    otelguard.dev/reason: shell in pod" in change.diff
    assert "quarantine" not in get(admin, "pod", ns, pod)["metadata"]["labels"]  # dry run
    outcome = action.apply(change)
    meta = get(admin, "pod", ns, pod)["metadata"]
    assert meta["labels"]["quarantine"] == "true" and meta["labels"]["app"] == "web-q"
    assert meta["annotations"]["otelguard.dev/reason"] == "shell in pod"

    assert action.revert(change, outcome).ok
    meta = get(admin, "pod", ns, pod)["metadata"]
    assert "quarantine" not in meta["labels"] and meta["labels"]["app"] == "web"
    assert "otelguard.dev/reason" not in (meta.get("annotations") or {})
    assert action.revert(change, outcome).message == "already restored"


def test_label_pod_apply_refuses_what_moved_since_plan(admin: Any) -> None:
    from kubernetes import client

    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1"])
    target = pod_target(admin, ns, r.pods[0])
    action = LabelPod(admin)
    change = action.plan(target, {"labels": {"quarantine": "true"}})
    client.CoreV1Api(admin).patch_namespaced_pod(
        r.pods[0], ns, {"metadata": {"labels": {"quarantine": "no"}}})
    with pytest.raises(ActionError, match="label quarantine is 'no' now, planned from None"):
        action.apply(change)
    # the same name, another pod (a controller made it again)
    client.CoreV1Api(admin).delete_namespaced_pod(r.pods[0], ns, grace_period_seconds=0)
    add_pod(admin, ns, r.pods[0], None, {"app": "web"}, True)
    with pytest.raises(ActionError, match="is another pod now"):
        action.plan(target, {"labels": {"quarantine": "true"}})


def test_label_revert_leaves_a_value_someone_else_set(admin: Any) -> None:
    from kubernetes import client

    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1"])
    action = LabelPod(admin)
    change = action.plan(pod_target(admin, ns, r.pods[0]), {"labels": {"a": "1", "b": "2"}})
    outcome = action.apply(change)
    client.CoreV1Api(admin).patch_namespaced_pod(r.pods[0], ns, {"metadata": {"labels": {"b": "9"}}})
    reverted = action.revert(change, outcome)
    assert not reverted.ok and "label b='9'" in reverted.message
    labels = get(admin, "pod", ns, r.pods[0])["metadata"]["labels"]
    assert "a" not in labels and labels["b"] == "9"


def test_isolate_pod_selects_only_that_pod(admin: Any) -> None:
    from kubernetes import client

    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1"], replicas=2, ready=2)
    target = pod_target(admin, ns, r.pods[0])
    action = IsolatePod(admin)
    change = action.plan(target, {"allow_egress": [{"cidr": "10.96.0.10/32", "ports": [53],
                                                    "protocol": "UDP"}]})
    np_name = change.planned_state["policy"]["metadata"]["name"]
    assert f"+++ b/networkpolicies/{ns}/{np_name}" in change.diff
    assert f"+    {ISOLATE_LABEL}: {target.pod_uid}" in change.diff
    outcome = action.apply(change)

    policy = get(admin, "networkpolicy", ns, np_name)
    assert policy["spec"]["podSelector"] == {"matchLabels": {ISOLATE_LABEL: target.pod_uid}}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policy["spec"] or policy["spec"]["ingress"] == []  # deny all in
    assert policy["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}],
                                         "ports": [{"protocol": "UDP", "port": 53}]}]
    selected = client.CoreV1Api(admin).list_namespaced_pod(
        ns, label_selector=f"{ISOLATE_LABEL}={target.pod_uid}").items
    assert [p.metadata.name for p in selected] == [r.pods[0]]
    with pytest.raises(ActionError, match="already isolated"):
        action.plan(target, {})

    assert action.revert(change, outcome).ok
    with pytest.raises(Exception) as gone:
        get(admin, "networkpolicy", ns, np_name)
    assert getattr(gone.value, "status", None) == 404
    assert ISOLATE_LABEL not in get(admin, "pod", ns, r.pods[0])["metadata"]["labels"]
    assert action.revert(change, outcome).ok


def test_cordon_node(admin: Any) -> None:
    from kubernetes import client

    ns = make_namespace(admin)
    node = f"node-{uuid.uuid4().hex[:6]}"
    make_node(admin, node)
    r = rollout(admin, ns, "web", ["web:1"], node=node)
    action = CordonNode(admin)
    change = action.plan(Target(namespace=ns, pod=r.pods[0]), {})  # node from the pod
    assert change.summary == f"cordon node {node}" and "+  unschedulable: true" in change.diff
    outcome = action.apply(change)
    core = client.CoreV1Api(admin)
    assert core.read_node(node).spec.unschedulable is True
    assert action.revert(change, outcome).ok
    assert not core.read_node(node).spec.unschedulable
    assert "already schedulable" in action.revert(change, outcome).message


def test_scale_to_zero_and_back(admin: Any) -> None:
    from kubernetes import client

    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1"], replicas=3, ready=3)
    action = ScaleToZero(admin)
    change = action.plan(Target(namespace=ns, pod=r.pods[0]), {})  # pod -> RS -> Deployment
    assert change.summary == f"scale Deployment {ns}/web from 3 to 0 replicas"
    assert "-  replicas: 3\n+  replicas: 0" in change.diff
    outcome = action.apply(change)
    assert get(admin, "deployment", ns, "web")["spec"]["replicas"] == 0
    assert action.revert(change, outcome).ok
    assert get(admin, "deployment", ns, "web")["spec"]["replicas"] == 3
    assert action.revert(change, outcome).ok

    change = action.plan(Target(namespace=ns, workload_kind="Deployment", workload_name="web"), {})
    client.AppsV1Api(admin).patch_namespaced_deployment("web", ns, {"spec": {"replicas": 5}})
    with pytest.raises(ActionError, match="has 5 replicas now, planned from 3"):
        action.apply(change)


def test_rollback_to_the_previous_revision_and_revert(admin: Any) -> None:
    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1", "web:2", "web:3"])
    action = RollbackDeployment(admin)
    change = action.plan(Target(namespace=ns, workload_kind="Deployment", workload_name="web"), {})
    assert change.summary == f"roll Deployment {ns}/web back from revision 3 to 2"
    assert "-      - image: web:3\n+      - image: web:2" in change.diff
    outcome = action.apply(change)
    dep = get(admin, "deployment", ns, "web")
    assert dep["spec"]["template"] == strip_hash(r.revisions[2]["spec"]["template"])
    assert "pod-template-hash" not in dep["spec"]["template"]["metadata"]["labels"]

    assert action.revert(change, outcome).ok
    dep = get(admin, "deployment", ns, "web")
    assert dep["spec"]["template"] == strip_hash(r.revisions[3]["spec"]["template"])
    assert action.revert(change, outcome).ok

    to_one = action.plan(Target(namespace=ns, pod=r.pods[0]), {"to_revision": 1})
    action.apply(to_one)
    assert get(admin, "deployment", ns, "web")["spec"]["template"] == strip_hash(
        r.revisions[1]["spec"]["template"])
    stale = Change(change.action, change.target, change.params, change.summary, change.diff,
                   "cluster", change.planned_state)
    with pytest.raises(ActionError, match="pod template changed since plan"):
        action.apply(stale)


def test_rollback_refuses_without_history(admin: Any) -> None:
    ns = make_namespace(admin)
    rollout(admin, ns, "solo", ["solo:1"])
    with pytest.raises(ActionError, match="has no revision before it"):
        RollbackDeployment(admin).plan(
            Target(namespace=ns, workload_kind="Deployment", workload_name="solo"), {})
    with pytest.raises(ActionError, match="works on a Deployment, not a StatefulSet"):
        RollbackDeployment(admin).plan(
            Target(namespace=ns, workload_kind="StatefulSet", workload_name="db"), {})


def test_delete_pod_respects_min_healthy_replicas(admin: Any) -> None:
    from kubernetes import client

    ns = make_namespace(admin)
    r = rollout(admin, ns, "web", ["web:1"], replicas=3, ready=2)  # pods 0, 1 ready; 2 not
    action = DeletePod(admin)
    with pytest.raises(ActionError, match=r"leave Deployment .*/web 1 ready replica\(s\), fewer "
                                          r"than min_healthy_replicas=2: refused"):
        action.plan(pod_target(admin, ns, r.pods[0]), {"min_healthy_replicas": 2})
    change = action.plan(pod_target(admin, ns, r.pods[2]), {"min_healthy_replicas": 2})
    assert "NOT reversible" in change.summary and "+++ /dev/null" in change.diff
    # between approval and apply, one of the ready pods goes unready: apply checks again
    client.CoreV1Api(admin).patch_namespaced_pod_status(
        r.pods[1], ns, {"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    with pytest.raises(ActionError, match="fewer than min_healthy_replicas=2"):
        action.apply(change)
    # graceful (the default): the pod is terminating, the kubelet would finish it
    graceful = action.plan(pod_target(admin, ns, r.pods[2]), {"min_healthy_replicas": 1})
    assert action.apply(graceful).ok
    assert get(admin, "pod", ns, r.pods[2])["metadata"]["deletionTimestamp"]
    # a terminating pod is not ready: deleting the last ready one is refused with min 1
    with pytest.raises(ActionError, match="leave Deployment .*/web 0 ready"):
        action.plan(pod_target(admin, ns, r.pods[0]), {"min_healthy_replicas": 1})
    ok = action.plan(pod_target(admin, ns, r.pods[1]),
                     {"min_healthy_replicas": 1, "grace_period_seconds": 0})
    outcome = action.apply(ok)
    assert outcome.ok
    names = [p.metadata.name for p in client.CoreV1Api(admin).list_namespaced_pod(ns).items]
    assert r.pods[1] not in names and r.pods[0] in names
    assert not action.revert(ok, outcome).ok
    add_pod(admin, ns, "lonely", None, {"app": "other"}, True)
    with pytest.raises(ActionError, match="no controller"):
        action.plan(Target(namespace=ns, pod="lonely"), {})
    assert action.plan(Target(namespace=ns, pod="lonely"), {"min_healthy_replicas": 0})
