"""The responder's ClusterRole from the Helm chart (response.enabled) is exactly the union of the
enabled cluster actions' ``rbac``, and it suffices: every cluster action runs through a
ServiceAccount token (TokenRequest) bound to it on the real kube-apiserver. A missing verb fails
with a Forbidden error that names the verb and the resource."""

from __future__ import annotations

import json
import uuid
from typing import Any, Iterator

import pytest

from otelguard.response.actions.base import ActionError, Target
from otelguard.response.actions.kube import CordonNode, IsolatePod, LabelPod
from otelguard.response.actions.kubeapi import api_client
from otelguard.response.actions.registry import ACTIONS
from otelguard.response.actions.workload import DeletePod, RollbackDeployment, ScaleToZero
from tests.support.helm import NAMESPACE, require_helm, template
from tests.support.kube import KubeCluster
from tests.support.kube_rollout import make_node, rollout
from tests.support.kube_world import make_namespace, unless_exists
from tests.support.polling import wait_until

pytestmark = pytest.mark.e2e

CLUSTER_ACTIONS = sorted(n for n, c in ACTIONS.items() if c.where == "cluster")
Triple = tuple[str, str, str]


def granted(role: dict[str, Any]) -> set[Triple]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def needed(names: list[str]) -> set[Triple]:
    return {(g, r, v) for n in names for g, r, verbs in ACTIONS[n].rbac for v in verbs}


def responder(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "responder"}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    require_helm()


def test_the_chart_grants_exactly_the_enabled_actions_verbs() -> None:
    assert responder(template()) == {}  # off by default
    objs = responder(template({"response": {"enabled": True}}))
    assert set(objs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert granted(objs["ClusterRole"]) == needed(CLUSTER_ACTIONS)
    some = ["label_pod", "isolate_pod"]
    objs = responder(template({"response": {"enabled": True, "actions": some}}))
    assert granted(objs["ClusterRole"]) == needed(some)
    assert ("", "nodes", "patch") not in granted(objs["ClusterRole"])
    with pytest.raises(AssertionError, match='unknown cluster action "reboot"'):
        template({"response": {"enabled": True, "actions": ["reboot"]}})


@pytest.fixture(scope="module")
def responder_client(kube: KubeCluster, admin: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    """An ApiClient with a token of the chart's responder ServiceAccount, bound as rendered."""
    from kubernetes import client

    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    with unless_exists():
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    objs = responder(template({"response": {"enabled": True}}))
    sa, role, binding = objs["ServiceAccount"], objs["ClusterRole"], objs["ClusterRoleBinding"]
    with unless_exists():  # the session's API server: test_kube_store.py makes it too
        core.create_namespaced_service_account(NAMESPACE, sa)
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)
    token = core.create_namespaced_service_account_token(
        sa["metadata"]["name"], NAMESPACE, {"spec": {"expirationSeconds": 3600}}).status.token
    try:
        yield api_client(str(kube.kubeconfig_for_token(token, "responder"))), role
    finally:
        rbac.delete_cluster_role_binding(binding["metadata"]["name"])
        rbac.delete_cluster_role(role["metadata"]["name"])


def test_every_cluster_action_runs_with_exactly_that_role(
        admin: Any, responder_client: tuple[Any, dict[str, Any]]) -> None:
    from kubernetes import client

    sa, _ = responder_client
    ns = make_namespace(admin)
    node = f"node-{uuid.uuid4().hex[:6]}"
    make_node(admin, node)
    r = rollout(admin, ns, "web", ["web:1", "web:2"], replicas=3, ready=3, node=node)
    pod = Target(namespace=ns, pod=r.pods[0])
    cases = [(LabelPod, pod, {"labels": {"quarantine": "true"}}), (IsolatePod, pod, {}),
             (CordonNode, pod, {}), (ScaleToZero, pod, {}), (RollbackDeployment, pod, {}),
             (DeletePod, Target(namespace=ns, pod=r.pods[1]), {"min_healthy_replicas": 2})]
    assert sorted(c[0].name for c in cases) == CLUSTER_ACTIONS
    for cls, target, params in cases:
        action = cls(sa)
        change = action.plan(target, params)
        outcome = action.apply(change)
        assert outcome.ok, (cls.name, outcome.message)
        if cls.reversible:
            assert action.revert(change, outcome).ok, cls.name
    apps = client.AppsV1Api(admin)
    dep = json.loads(apps.read_namespaced_deployment("web", ns, _preload_content=False).data)
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["template"]["spec"]["containers"][0][
        "image"] == "web:2"
    assert not client.CoreV1Api(admin).read_node(node).spec.unschedulable
    with pytest.raises(Exception) as denied:  # and nothing beyond: no secrets
        client.CoreV1Api(sa).list_namespaced_secret(ns)
    assert getattr(denied.value, "status", None) == 403


def test_a_missing_verb_is_a_clear_forbidden_error(
        admin: Any, responder_client: tuple[Any, dict[str, Any]]) -> None:
    from kubernetes import client

    sa, role = responder_client
    rbac = client.RbacAuthorizationV1Api(admin)
    node = f"node-{uuid.uuid4().hex[:6]}"
    make_node(admin, node)
    rules = [dict(rule, verbs=[v for v in rule["verbs"] if v != "patch"])
             if rule["resources"] == ["nodes"] else rule for rule in role["rules"]]
    rbac.patch_cluster_role(role["metadata"]["name"], {"rules": rules})
    try:
        action = CordonNode(sa)
        change = action.plan(Target(node=node), {})  # get is still granted

        errors: list[str] = []

        def forbidden() -> bool:
            try:
                outcome = action.apply(change)
            except ActionError as exc:
                errors.append(str(exc))
                return "Forbidden" in str(exc)
            action.revert(change, outcome)  # the old Role was still in effect: undo, try again
            return False
        assert wait_until(forbidden, 10), errors
        message = errors[-1]
        assert message.startswith(f"cordon_node: patch node {node}: Forbidden: ")
        assert 'cannot patch resource "nodes"' in message
        assert "the responder's Role lacks this verb" in message
        assert not client.CoreV1Api(admin).read_node(node).spec.unschedulable
    finally:
        rbac.patch_cluster_role(role["metadata"]["name"], {"rules": role["rules"]})
