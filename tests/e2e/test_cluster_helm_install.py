"""The whole product installed the way users install it, on the real one-node cluster.

``helm upgrade --install`` of deploy/helm/otelguard into the node that scripts/cluster/up.sh runs
(real kubelet, containerd, runc, kube-proxy, CoreDNS), with the images ``make images`` built
(imported by up.sh; ``imagePullPolicy: Never``). Loki and Jaeger run on this host, bound to the
bridge address pods reach (198.51.100.1). Then a workload Deployment whose container attacks:

- a shell reads ``/etc/shadow``;
- a binary is copied into the container's writable layer and executed (drop and execute);
- a reverse shell, ``nc -e /bin/sh``, to a listener of this test on 198.51.100.1.

Asserted: the agent pod (DaemonSet), the processor and the gateway Collector are Running and
Ready; each attack's detection is queried back from Loki carrying the Kubernetes context that the
real kubelet/containerd gave it (namespace, pod, Deployment, container id, image name); the
detection's trace is in Jaeger. Root, the kernel, the cluster and the images; ~3-5 min.
"""

from __future__ import annotations

from typing import Any

import pytest

from otelguard import semconv as sc
from tests.support.cluster_release import TESTBOX, describe, label, pods, ready
from tests.support.node import Node
from tests.support.polling import wait_until
from tests.support.stack import Jaeger, Loki

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.kernel]

RULES = {
    "shadow": "Read sensitive file untrusted",
    "drop": "Drop and execute new binary in container",
    "netcat": "Netcat Remote Code Execution in Container",
}


def test_agent_processor_and_collector_run_ready_on_the_node(node: Node, release: str) -> None:
    for component in ("agent", "processor", "collector"):
        def all_ready() -> bool:
            found = pods(node, release, f"app.kubernetes.io/component={component}")
            return bool(found) and all(ready(p) for p in found)
        assert wait_until(all_ready, 120), f"{component} not Ready:\n{describe(node, release)}"
    (agent,) = pods(node, release, "app.kubernetes.io/component=agent")
    assert agent["spec"]["nodeName"] == node.name
    # its API token (response on: agent --respond) reaches the ResponseRequests and nothing else
    assert agent["spec"].get("automountServiceAccountToken") is True
    sa = f"system:serviceaccount:{release}:{agent['spec']['serviceAccountName']}"
    rr = "responserequests.otelguard.dev"
    for verb, resource, allowed in (("list", [rr], "yes"), ("patch", [rr, "--subresource=status"], "yes"),
                                    ("create", [rr], "no"), ("patch", [rr], "no"),
                                    ("list", ["pods"], "no"), ("get", ["secrets"], "no")):
        got = node.kubectl("-n", release, "auth", "can-i", verb, *resource, "--as", sa,
                           check=False).stdout.strip()
        assert got == allowed, f"{sa} {verb} {resource}: {got}"
    # the agent's own view: probes attached, headers found (doctor in the pod, as docs/install.md says)
    doctor = node.kubectl("-n", release, "exec", agent["metadata"]["name"], "--", "otelguard",
                          "doctor", timeout=300, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "host-mounted /lib/modules" in doctor.stdout, doctor.stdout


def test_the_reverse_shell_really_ran(attack: dict[str, Any]) -> None:
    assert "pwned-0" in attack["shell_output"], attack["shell_output"]


@pytest.mark.parametrize("attack_name", sorted(RULES))
def test_detection_in_loki_carries_the_kubelet_context(
        attack_name: str, attack: dict[str, Any], cluster_backends: tuple[Loki, Jaeger]) -> None:
    loki, jaeger = cluster_backends
    rule = RULES[attack_name]
    q = (f'{{k8s_namespace_name="{attack["namespace"]}", otelguard_stream="detection"}}'
         f' | security_rule_name="{rule}"')

    def found() -> list[dict[str, str]]:
        return [s["stream"] for s in loki.query_range(q, since_s=900)["result"] for _ in s["values"]]
    everything = f'{{k8s_namespace_name="{attack["namespace"]}"}}'
    assert wait_until(lambda: len(found()) >= 1, 120), (
        f"no {rule!r} detection in Loki; records there: {loki.query_range(everything, since_s=900)}")
    det = found()[0]
    assert det[label(sc.K8S_NAMESPACE_NAME)] == attack["namespace"]
    assert det[label(sc.K8S_POD_NAME)] == attack["pod"]
    assert det[label(sc.K8S_POD_UID)] == attack["uid"]
    assert det[label(sc.K8S_DEPLOYMENT_NAME)] == "web"
    assert det[label(sc.CONTAINER_ID)] == attack["container_id"]
    assert det[label(sc.CONTAINER_IMAGE_NAME)] in (TESTBOX, TESTBOX.rsplit(":", 1)[0]), det
    assert det[label(sc.K8S_CLUSTER_NAME)] == "e2e-node"
    # the detection's trace: the trigger's process span and the detection span, in Jaeger
    trace_id = det["trace_id"]
    def names() -> set[str]:
        return {sp["name"] for rs in jaeger.trace(trace_id)
                for ss in rs.get("scopeSpans", []) for sp in ss.get("spans", [])}
    assert wait_until(lambda: f"detection {rule}" in names(), 60), names()
    assert any(n.startswith("exec ") for n in names()), names()
