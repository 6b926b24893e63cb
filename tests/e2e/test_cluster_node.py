"""The real one-node cluster (scripts/cluster/up.sh, tests/support/node.py): a kubelet-registered
node, Debian's containerd and runc running the locally built testbox image, the bridge CNI, kube-proxy
Services, CoreDNS, and the otelguard sensor + k8s enricher attributing a pod's syscalls.

One cluster per session (started, or attached to a running ``make cluster``); every wait is
bounded. Root; ~1-3 min on 2 busy cores plus the cluster's start.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from tests.support.node import Node
from tests.support.oci_images import TESTBOX_REF
from tests.support.otelguard_run import OTELGUARD, output_records
from tests.support.polling import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.kernel, pytest.mark.timeout(900)]

SRC = str(Path(__file__).resolve().parents[2] / "src")
UNIFIED = Path("/sys/fs/cgroup/unified")


def _manifest(ns: str) -> str:
    """A Deployment serving HTTP on 8080 behind a ClusterIP Service, and a client pod."""
    box = {"image": TESTBOX_REF, "imagePullPolicy": "Never"}
    server = {"name": "web", **box, "command": ["sh", "-c", "mkdir -p /tmp/www && echo hello-from-"
                                                "testbox > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
              "ports": [{"containerPort": 8080}],
              "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [server], "terminationGracePeriodSeconds": 1}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": ns},
         "spec": {"containers": [{"name": "client", **box, "command": ["sleep", "3600"]}],
                  "terminationGracePeriodSeconds": 1}},
    ]
    return "\n---\n".join(json.dumps(o) for o in objects)


@pytest.fixture(scope="module")
def workload(node: Node) -> Iterator[str]:
    ns = f"og-cluster-{secrets.token_hex(3)}"
    node.kubectl("apply", "-f", "-", input=_manifest(ns))
    try:
        node.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=180s", timeout=200)
        node.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=180s",
                     timeout=200)
        yield ns
    finally:
        node.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _pod(node: Node, ns: str, selector: str) -> dict[str, Any]:
    items = json.loads(node.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    assert len(items) == 1, items
    pod: dict[str, Any] = items[0]
    return pod


def _container_id(pod: dict[str, Any]) -> str:
    cid: str = pod["status"]["containerStatuses"][0]["containerID"]
    assert cid.startswith("containerd://"), cid
    return cid.removeprefix("containerd://")


def _exec(node: Node, ns: str, *argv: str, timeout: float = 60) -> str:
    return node.kubectl("-n", ns, "exec", "client", "--", *argv, timeout=timeout).stdout


def test_node_registers_ready(node: Node) -> None:
    info = json.loads(node.kubectl("get", "node", node.name, "-o", "json").stdout)
    ready = [c["status"] for c in info["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"]
    assert {"type": "InternalIP", "address": node.host_ip} in info["status"]["addresses"]
    assert info["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert info["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.")


def test_deployment_runs_in_kubepods_cgroups(node: Node, workload: str) -> None:
    pod = _pod(node, workload, "app=web")
    assert pod["status"]["phase"] == "Running" and pod["spec"]["nodeName"] == node.name
    assert pod["status"]["podIP"].startswith("198.51.100.")
    cid, uid = _container_id(pod), pod["metadata"]["uid"]
    dirs = [d for d in UNIFIED.glob(f"kubepods/**/pod{uid}/{cid}") if d.is_dir()]
    assert len(dirs) == 1, f"no cgroup2 dir for container {cid} of pod {uid}"
    pids = [int(p) for p in (dirs[0] / "cgroup.procs").read_text().split()]
    assert pids, f"{dirs[0]} holds no process"
    rel = "/" + str(dirs[0].relative_to(UNIFIED))
    for pid in pids:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        assert f"0::{rel}" in lines, lines
    assert any(Path(f"/proc/{p}/comm").read_text().strip() == "httpd" for p in pids)


def test_service_and_dns_name_connect_from_another_pod(node: Node, workload: str) -> None:
    svc = json.loads(node.kubectl("-n", workload, "get", "service", "web", "-o", "json").stdout)
    cluster_ip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network("203.0.113.128/25"), cluster_ip
    name = f"web.{workload}.svc.cluster.local"
    assert cluster_ip in _exec(node, workload, "nslookup", name)
    resolv = _exec(node, workload, "cat", "/etc/resolv.conf")
    assert f"nameserver {node.dns_ip}" in resolv, resolv
    # by Service IP and by the short name through the search path; kube-proxy DNATs to the pod.
    # HTTP by hand with nc: Debian 12's busybox-static wget segfaults (on the host too).
    for host in (cluster_ip, "web"):
        reply = _exec(node, workload, "sh", "-c",
                      f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {host} 80")
        assert reply.splitlines()[0].startswith("HTTP/1.") and "hello-from-testbox" in reply, reply


def test_pod_reaches_a_listener_on_the_host(node: Node, workload: str) -> None:
    token = secrets.token_hex(8)
    received: list[bytes] = []
    with socket.socket() as srv:
        srv.bind((node.host_ip, 0))
        srv.listen(1)
        srv.settimeout(60)
        port = srv.getsockname()[1]

        def accept() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(30)
                received.append(conn.recv(100))

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        _exec(node, workload, "sh", "-c", f"echo {token} | nc -w 5 {node.host_ip} {port}")
        t.join(timeout=60)
    assert received and received[0].strip() == token.encode()


def test_sensor_and_enricher_attribute_a_pod_read_of_shadow(
        node: Node, workload: str, tmp_path: Path) -> None:
    client = json.loads(node.kubectl("-n", workload, "get", "pod", "client", "-o", "json").stdout)
    cid, uid = _container_id(client), client["metadata"]["uid"]
    out, config = tmp_path / "out.jsonl", tmp_path / "otelguard.yaml"
    config.write_text(json.dumps({
        "sensor": {"cgroup_scope": ["/kubepods"]},
        "processors": [{"type": "k8s_attributes", "config": {
            "mode": "gateway", "kubeconfig": str(node.kubeconfig), "wait_for_sync_seconds": 30}}],
    }))
    argv = [OTELGUARD, "run", "--config", str(config), "--output", f"jsonl:{out}",
            "--metrics", "127.0.0.1:0"]
    log = tmp_path / "run.log"
    with open(log, "w") as err, subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PYTHONPATH": SRC}) as run:
        try:
            assert wait_until(lambda: "watching (" in log.read_text() or run.poll() is not None, 240), \
                f"otelguard run did not start:\n{log.read_text()}"
            assert run.poll() is None, log.read_text()
            assert "root:" in _exec(node, workload, "cat", "/etc/shadow")

            def shadow() -> list[tuple[dict[str, Any], Any]]:
                return [(res, rec) for res, rec in output_records(out)
                        if rec.event_name == S.EV_FILE_OPEN
                        and attrs_dict(rec.attributes).get(S.FILE_PATH) == "/etc/shadow"
                        and res.get(S.CONTAINER_ID) == cid]

            found = wait_until(shadow, 60, interval=0.5)
        finally:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=60)
    assert found, f"no open of /etc/shadow in container {cid}; run log:\n{log.read_text()[-3000:]}"
    res, rec = shadow()[0]
    assert res[S.K8S_POD_UID] == uid
    assert res[S.K8S_POD_NAME] == "client" and res[S.K8S_NAMESPACE_NAME] == workload
    assert attrs_dict(rec.attributes).get(S.PROCESS_EXECUTABLE_NAME) in ("cat", "busybox")
