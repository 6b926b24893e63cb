"""On a cluster the processor's responder proposes and takes decisions, and the node executor
(``otelguard agent --respond``) carries out node actions for its own node: a real
freeze_container on a fake kubepods container, through ResponseRequest objects on a real
kube-apiserver. The processor never executes the node's request; every transition is in
exactly one of the two audit chains, and both verify."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.kube import CustomResources, install_crd
from otelguard.response.actions.base import Target
from otelguard.response.audit import AuditRecord, read_jsonl, verify
from otelguard.response.executor import NodeExecutor, node_actions
from otelguard.response.kube_store import CRD_PATH, PLURAL, KubeStore
from otelguard.response.policy import Facts, PolicySet, parse_policies
from otelguard.response.request import State, Trigger
from otelguard.response.responder import Responder
from tests.ebpf.containers import container
from tests.support.kube import KubeCluster
from tests.support.kube_world import make_namespace
from tests.support.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

POLICY = textwrap.dedent("""\
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: freeze}
    spec:
      mode: approve
      match: {rules: [A]}
      actions: [{action: freeze_container}]
    """)


def test_the_node_executes_what_the_processor_proposed(kube: KubeCluster, admin: Any,
                                                       tmp_path: Path) -> None:
    install_crd(admin, CRD_PATH)
    ns = make_namespace(admin)
    res = CustomResources(admin, PLURAL)
    central = KubeStore(res, ns, tmp_path / "processor")
    processor = Responder(PolicySet(tuple(parse_policies(POLICY, "mem"))), central,
                          node_actions(), executes=lambda r: not r.has_node_actions())
    node = f"node-{uuid.uuid4().hex[:6]}"
    shipped: list[AuditRecord] = []
    executor = NodeExecutor(KubeStore(res, ns, tmp_path / "node"), node,
                            lambda records: shipped.extend(records) or True, tick_seconds=0.1)
    with container() as box, box.popen([sys.executable, "-c", "while True: pass"]) as busy:
        try:
            (req,) = processor.propose(
                Facts("detection", rule="A"), Trigger("detection", f"u-{node}", "A"),
                Target(node=node, namespace="shop", pod="web-1",
                       container_id=box.container_id))
            assert req.node == node and req.has_node_actions()
            kubeconfig = str(kube.kubeconfig)
            assert main(["respond", "approve", req.id, "--kube", "--namespace", ns,
                         "--kubeconfig", kubeconfig, "--by", "alice"]) == 0
            processor.tick()  # takes the approval, does not execute a node's request
            assert central.get(req.id).state == State.APPROVED  # type: ignore[union-attr]
            assert (box.path / "cgroup.freeze").read_text().strip() == "0"

            executor.start()
            wait_for(lambda: central.get(req.id).state == State.DONE, 20,  # type: ignore[union-attr]
                     "the node executor")
            assert (box.path / "cgroup.freeze").read_text().strip() == "1"
            assert main(["respond", "revert", req.id, "--kube", "--namespace", ns,
                         "--kubeconfig", kubeconfig, "--by", "alice"]) == 0
            processor.tick()  # a node's revert: left for the node
            wait_for(lambda: central.get(req.id).state == State.REVERTED, 20,  # type: ignore[union-attr]
                     "the revert on the node")
            assert (box.path / "cgroup.freeze").read_text().strip() == "0"
        finally:
            executor.stop()
            busy.kill()
    final = central.get(req.id)
    assert final is not None
    chains = [read_jsonl(tmp_path / "processor" / "audit.jsonl"),
              read_jsonl(tmp_path / "node" / "audit.jsonl")]
    assert all(verify(c).ok for c in chains)
    moved = Counter((str(r.attributes[S.RESPONSE_STATE_FROM]), str(r.attributes[S.RESPONSE_STATE_TO]))
                    for c in chains for r in c)
    assert moved == Counter((t.frm, t.to) for t in final.history)
    assert [str(r.attributes[S.RESPONSE_STATE_TO]) for r in shipped] == [
        "Executing", "Done", "Reverted"]
