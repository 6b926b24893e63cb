"""Requests as ResponseRequest objects on a real kube-apiserver, with the chart's RBAC: the
responder (its ServiceAccount token, the rendered Role) proposes, a person with the approver
ClusterRole decides with `otelguard respond --kube` (a reviewer may not; nobody but the
responder may write status), the responder carries the decision out on its next tick and
records what became of it; every transition is in its audit chain exactly once."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.kube import CustomResources, Forbidden, install_crd
from otelguard.response.audit import read_jsonl, verify
from otelguard.response.kube_store import CRD_PATH, PLURAL, KubeStore
from otelguard.response.policy import Facts, PolicySet, parse_policies
from otelguard.response.actions.base import Target
from otelguard.response.actions.kubeapi import api_client
from otelguard.response.request import State, Trigger
from otelguard.response.responder import Responder
from tests.support.helm import NAMESPACE, require_helm, template
from tests.support.kube import KubeCluster
from tests.support.kube_world import unless_exists
from tests.support.response import MarkerAction

pytestmark = pytest.mark.e2e

POLICY = textwrap.dedent("""\
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: ask}
    spec:
      mode: approve
      match: {rules: [A]}
      actions: [{action: mark}]
    """)


def _component(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    return [d for d in docs
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]


def _token_client(kube: KubeCluster, admin: Any, sa: str, name: str) -> tuple[Any, Path]:
    from kubernetes import client

    core = client.CoreV1Api(admin)
    token = core.create_namespaced_service_account_token(
        sa, NAMESPACE, {"spec": {"expirationSeconds": 3600}}).status.token
    path = kube.kubeconfig_for_token(token, name)
    return api_client(str(path)), path


@pytest.fixture(scope="module")
def identities(kube: KubeCluster, admin: Any) -> Iterator[dict[str, tuple[Any, Path]]]:
    """The responder as the chart renders it; alice bound to the approver ClusterRole and bob
    to the reviewer one, in the release namespace."""
    from kubernetes import client

    require_helm()
    install_crd(admin, CRD_PATH)
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    with unless_exists():
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    docs = template({"response": {"enabled": True}})
    made: list[tuple[str, str]] = []
    sa = next(d for d in _component(docs, "responder") if d["kind"] == "ServiceAccount")
    for d in [sa, *_component(docs, "response-requests"), *_component(docs, "response-approval")]:
        kind = d["kind"]
        with unless_exists():
            if kind == "ServiceAccount":
                core.create_namespaced_service_account(NAMESPACE, d)
            elif kind == "Role":
                rbac.create_namespaced_role(NAMESPACE, d)
            elif kind == "RoleBinding":
                rbac.create_namespaced_role_binding(NAMESPACE, d)
            elif kind == "ClusterRole":
                rbac.create_cluster_role(d)
                made.append(("ClusterRole", d["metadata"]["name"]))
    roles = {d["metadata"]["name"].rsplit("-", 1)[-1]: d["metadata"]["name"]
             for d in _component(docs, "response-approval")}
    for person, role in (("alice", roles["approver"]), ("bob", roles["reviewer"])):
        with unless_exists():
            core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": person}})
            rbac.create_namespaced_role_binding(NAMESPACE, {
                "metadata": {"name": f"{person}-response"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": person,
                              "namespace": NAMESPACE}]})
    out = {"responder": _token_client(kube, admin, sa["metadata"]["name"], "responder"),
           "alice": _token_client(kube, admin, "alice", "alice"),
           "bob": _token_client(kube, admin, "bob", "bob")}
    yield out
    for _, name in made:
        rbac.delete_cluster_role(name)


def test_decisions_by_patching_under_rbac(identities: dict[str, tuple[Any, Path]],
                                          tmp_path: Path) -> None:
    responder_client, _ = identities["responder"]
    alice_client, alice = identities["alice"]
    _, bob = identities["bob"]
    store = KubeStore(CustomResources(responder_client, PLURAL), NAMESPACE, tmp_path / "chain")
    action = MarkerAction(tmp_path / "marks")
    policies = PolicySet(tuple(parse_policies(POLICY, "mem", {"mark"})))
    responder = Responder(policies, store, {"mark": action})
    pod = f"web-{tmp_path.name[-6:]}"
    (req,) = responder.propose(Facts("detection", rule="A"),
                               Trigger("detection", f"uid-{pod}", "A", "WARNING"),
                               Target(namespace="shop", pod=pod))
    obj = CustomResources(alice_client, PLURAL).get(req.id, NAMESPACE)
    assert obj["status"]["state"] == "Proposed" and obj["status"]["request"]["id"] == req.id
    assert "mark" in obj["status"]["summary"]

    kube = ["--kube", "--namespace", NAMESPACE]
    assert main(["respond", "approve", req.id, *kube, "--kubeconfig", str(bob),
                 "--by", "bob"]) == 2  # a reviewer may not decide
    with pytest.raises(Forbidden):  # an approver may not rewrite what is decided on
        CustomResources(alice_client, PLURAL).patch_status(
            req.id, {"summary": "something else"}, NAMESPACE)
    responder.tick()
    assert store.get(req.id).state == State.PROPOSED  # type: ignore[union-attr]
    assert action.runs() == []

    assert main(["respond", "approve", req.id[:8], *kube, "--kubeconfig", str(alice),
                 "--by", "alice", "--reason", "seen"]) == 0
    responder.tick()
    done = store.get(req.id)
    assert done is not None and done.state == State.DONE and done.approved_by == "alice"
    assert [r["what"] for r in action.runs()] == ["apply"]
    status = CustomResources(alice_client, PLURAL).get(req.id, NAMESPACE)["status"]
    assert status["decisionResult"] == "done: approve by alice"

    assert main(["respond", "approve", req.id, *kube, "--kubeconfig", str(alice),
                 "--by", "alice"]) == 0  # again: recorded, then refused by the responder
    responder.tick()
    status = CustomResources(alice_client, PLURAL).get(req.id, NAMESPACE)["status"]
    assert status["decisionResult"].startswith("refused: ") and status["state"] == "Done"
    assert [r["what"] for r in action.runs()] == ["apply"]

    assert main(["respond", "revert", req.id, *kube, "--kubeconfig", str(alice),
                 "--by", "alice"]) == 0
    responder.tick()
    assert store.get(req.id).state == State.REVERTED  # type: ignore[union-attr]
    assert [r["what"] for r in action.runs()] == ["apply", "revert"]

    records = read_jsonl(store.audit_path)
    assert verify(records).ok
    final = store.get(req.id)
    assert final is not None
    assert Counter((str(r.attributes[S.RESPONSE_STATE_FROM]), str(r.attributes[S.RESPONSE_STATE_TO]))
                   for r in records) == Counter((t.frm, t.to) for t in final.history)
    assert [t.by for t in final.history] == ["policy:ask", "alice", "otelguard", "otelguard",
                                             "alice"]
