"""deploy/ applied to a real kube-apiserver with server-side dry run (schema, defaults, validation).

deploy/ is the Helm chart deploy/helm/otelguard rendered (scripts/render_deploy.py;
tests/e2e/test_helm_chart.py checks it is current); these tests read it as kubectl would.

The namespace is created for real (a dry-run object cannot hold others); every other object is
sent with dryRun=All, so the API server validates it fully (field names, types, enum values,
probe shapes, capabilities, PDB selectors) without persisting anything.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import yaml

from tests.support.kube import start_cluster
from tests.support.prerequisites import require_kube_apiserver
from tests.support.stack import ROOT

pytestmark = pytest.mark.e2e

DEPLOY = ROOT / "deploy"


def manifest_documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / resource).read_text()):
            if doc:
                docs.append((resource, doc))
    return docs


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from kubernetes import config

    require_kube_apiserver()
    cluster = start_cluster(tmp_path_factory.mktemp("kube-deploy"))
    try:
        yield config.new_client_from_config(str(cluster.kubeconfig))  # type: ignore[no-untyped-call]
    finally:
        cluster.stop()


def test_every_kustomization_resource_exists() -> None:
    kinds = {d["kind"] for _, d in manifest_documents()}
    assert {"Namespace", "DaemonSet", "Deployment", "Service", "PodDisruptionBudget", "ConfigMap",
            "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "NetworkPolicy"} <= kinds
    assert "Secret" not in kinds   # named, never carried (deploy/helm/render-values.yaml)


def test_manifests_pass_server_side_dry_run(api: Any) -> None:
    from kubernetes import client, utils
    from kubernetes.client.exceptions import ApiException

    docs = manifest_documents()
    for _, doc in docs:
        if doc["kind"] == "Namespace":
            client.CoreV1Api(api).create_namespace(doc)  # type: ignore[arg-type]
    failures = []
    checked = 0
    for source, doc in docs:
        if doc["kind"] == "Namespace":
            continue
        try:
            utils.create_from_dict(api, doc, dry_run="All")  # type: ignore[no-untyped-call]
            checked += 1
        except (ApiException, utils.FailToCreateError) as e:
            failures.append(f"{source}: {doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not failures, "\n".join(failures)
    assert checked >= 10


def test_dry_run_catches_an_invalid_manifest(api: Any) -> None:
    """The check above can fail: an out-of-range container port is refused."""
    from kubernetes import utils

    (ds,) = [d for _, d in manifest_documents() if d["kind"] == "DaemonSet"]
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    with pytest.raises(utils.FailToCreateError):
        utils.create_from_dict(api, ds, dry_run="All")  # type: ignore[no-untyped-call]


def test_agent_is_not_privileged_and_explains_nothing_extra() -> None:
    (ds,) = [d for _, d in manifest_documents() if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    sc = agent["securityContext"]
    assert pod["hostPID"] is True
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the set measured in docs/security.md#agent-capabilities
    assert set(sc["capabilities"]["add"]) == {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"}
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert {"/sys/kernel/tracing", "/sys/fs/cgroup"} <= mounts
    # the host's kernel headers are opt-in (agent.hostKernelHeaders): the image carries Debian's
    assert "/lib/modules" not in mounts
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # no API token: nothing in the agent calls the API
    assert pod["automountServiceAccountToken"] is False
    # Cheap probes (no BPF compile), on the port the agent serves /metrics on.
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9465} in agent["ports"]
    assert "--metrics=0.0.0.0:9465" in agent["args"]
    # Sender identity: the node's key of the node-token Secret, the processor reads the same.
    assert "--node-token-file=/etc/otelguard/node-tokens/{node}" in agent["args"]
    assert "/etc/otelguard/node-tokens" in mounts


def test_processor_probes_use_the_health_endpoints() -> None:
    """The processor's /readyz and /healthz on its metrics port, the only HTTP port of the
    pipeline config (no OTLP/HTTP listener; processors/cli.py)."""
    from otelguard.config import load_yaml
    from otelguard.processors.config import build_pipeline_config

    (dep,) = [d for _, d in manifest_documents() if d["kind"] == "Deployment"
              and d["metadata"]["name"] == "otelguard-processor"]
    (proc,) = dep["spec"]["template"]["spec"]["containers"]
    assert proc["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert proc["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    (cm,) = [d for _, d in manifest_documents()
             if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "otelguard-processor"]
    service = build_pipeline_config(load_yaml(cm["data"]["pipeline.yaml"], "processor")).service
    assert service.listen_http is None and service.metrics == "0.0.0.0:9466"
    assert {"name": "metrics", "containerPort": 9466} in proc["ports"]


def test_processor_pipeline_configmap_loads() -> None:
    """The processor's ConfigMap is a valid pipeline for the service's own loader."""
    from otelguard.config import load_yaml
    from otelguard.processors.config import build_pipeline_config

    (cm,) = [d for _, d in manifest_documents()
             if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "otelguard-processor"]
    pipeline = build_pipeline_config(load_yaml(cm["data"]["pipeline.yaml"], "deploy/processor.yaml"))
    assert [p.type for p in pipeline.processors] == ["k8s_attributes", "falco_rules", "noise_control",
                                                    "incidents"]
    # the site rules come after the packaged ones: the stable set is loaded, not replaced
    from otelguard.processors.detection.loader import load_rules
    from otelguard.processors.detection.processor import rule_paths

    (detection,) = [p for p in pipeline.processors if p.type == "falco_rules"]
    assert detection.config.local_rules == ("/etc/otelguard/rules",)
    packaged = [p for p in rule_paths(detection.config) if not p.startswith("/etc/otelguard")]
    assert len(load_rules(packaged).rules) >= 20  # Falco's stable set alone has more
    assert pipeline.exporters == ("otlp:otelguard-collector.otelguard.svc:4317",)
    assert pipeline.service.identity.node_token_file == "/etc/otelguard/node-tokens"
