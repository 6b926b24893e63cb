"""Attacks whose rules need Kubernetes context, against a real kube-apiserver + etcd.

The path gains the stage that runs before detection in the product: events from the real Sensor
-> OtlpBuilder -> ``k8s_attributes`` (K8sEnricher watching the real API server: pod,
namespace, privileged flag, the Service a connection went to) -> ``falco_rules``. The test writes
the pod objects a kubelet would (tests/processors/k8s) for the real container cgroups it runs in.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from otelguard.processors.k8s import K8sEnricher
from tests.attacks.harness import PYTHON, run_attack
from tests.ebpf.containers import new_container_id
from tests.processors.k8s import objects as o
from tests.support.kube_world import IMAGE, create_running_pod, eventually, make_namespace, next_ip

pytestmark = [pytest.mark.e2e, pytest.mark.kernel, pytest.mark.timeout(180)]


def _pod(admin: Any, ns: str, name: str, privileged: bool = False) -> tuple[str, str]:
    """A running pod with one container; (pod uid, container id)."""
    cid = new_container_id()
    ctx = {"securityContext": {"privileged": True}} if privileged else {}
    body = o.pod(ns, name, containers=[{"name": "main", "image": IMAGE, **ctx}])
    return create_running_pod(admin, ns, body, next_ip(), {"main": cid}), cid


# Own network namespace: connects to ClusterIPs fail at once (ENETUNREACH, no kube-proxy here)
# and are recorded all the same, as in Falco.
CONNECT_TO = r"""
import ctypes, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x40000000) == 0                                  # CLONE_NEWNET
for target in sys.argv[1:]:
    ip, port = target.split(":")
    socket.socket().connect_ex((ip, int(port)))
"""


def test_contact_k8s_api_server_from_container(
        sensor: Sensor, stage: FalcoRulesProcessor, admin: Any,
        enricher_factory: Callable[..., K8sEnricher]) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(admin)  # the client's stubs do not take plain dict bodies

    def api_services() -> list[Any]:
        return list(core.list_namespaced_service(
            "default", field_selector="metadata.name=kubernetes").items)

    # a fresh API server creates its own Service a moment after it reports ready
    api_ip = str(eventually(api_services, 30, "the default/kubernetes Service")[0].spec.cluster_ip)
    ns = make_namespace(admin)
    svc = core.create_namespaced_service(ns, o.service(ns, "web-svc", None, "web"))
    other_ip = str(svc.spec.cluster_ip)
    uid, cid = _pod(admin, ns, "shop-0")
    enricher = enricher_factory()
    argv = [PYTHON, "-c", CONNECT_TO, f"{api_ip}:443", f"{other_ip}:80"]
    attack = run_attack(sensor, stage, argv,
                        container_kwargs={"pod_uid": uid, "container_id": cid},
                        before=[enricher])
    assert attack.returncode == 0, attack.stderr.decode()
    d = attack.detection(
        "Contact K8S API Server From Container", "NOTICE", S.EV_NETWORK_CONNECT,
        body=["Unexpected connection to K8s API Server from container", f"->{api_ip}:443",
              "rport=443", "fd_proto=tcp"],
        evidence={S.NETWORK_PEER_ADDRESS: api_ip, S.PEER_K8S_SERVICE_NAME: "kubernetes",
                  S.PEER_K8S_NAMESPACE_NAME: "default"})
    assert d.resource[S.K8S_NAMESPACE_NAME] == ns and d.resource[S.K8S_POD_NAME] == "shop-0"
    # near miss in the same run: the pod's own Service is no API server
    others = [a for a in attack.records(S.EV_NETWORK_CONNECT)
              if a.get(S.NETWORK_PEER_ADDRESS) == other_ip]
    assert others and others[0].get(S.PEER_K8S_SERVICE_NAME) == "web-svc"
    assert len(attack.fired("Contact K8S API Server From Container")) == 1


def test_debugfs_in_privileged_container(
        sensor: Sensor, stage: FalcoRulesProcessor, admin: Any,
        enricher_factory: Callable[..., K8sEnricher]) -> None:
    ns = make_namespace(admin)
    priv_uid, priv_cid = _pod(admin, ns, "node-debugger", privileged=True)
    plain_uid, plain_cid = _pod(admin, ns, "web-0")
    enricher = enricher_factory()
    debugfs = ["/usr/sbin/debugfs", "-R", "stats", "/dev/null"]
    attack = run_attack(sensor, stage, debugfs, before=[enricher],
                        container_kwargs={"pod_uid": priv_uid, "container_id": priv_cid})
    d = attack.detection(
        "Debugfs Launched in Privileged Container", "WARNING", S.EV_PROCESS_EXEC,
        body=["Debugfs launched started in a privileged container", "process=debugfs",
              "command=debugfs -R stats /dev/null"])
    assert d.resource[S.K8S_POD_PRIVILEGED] is True
    # near miss: the same command in a container that is not privileged
    plain = run_attack(sensor, stage, debugfs, before=[enricher],
                       container_kwargs={"pod_uid": plain_uid, "container_id": plain_cid})
    execs = [a for a in plain.records(S.EV_PROCESS_EXEC) if a.get(S.PROCESS_COMM) == "debugfs"]
    assert execs
    assert not plain.fired("Debugfs Launched in Privileged Container")
