"""The Helm chart deploy/helm/otelguard with the real helm: lint, template with default and
non-default values, server-side dry run of every object on a real kube-apiserver (the
prometheus-operator kinds through minimal CRDs made here), lookups that reuse generated Secrets,
and the two generated artefacts kept current (deploy/ and the README's values table)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from cryptography import x509

from tests.support.helm import CHART, NAMESPACE, find, require_helm, run_helm, selects, template
from tests.support.kube import KubeCluster, start_cluster
from tests.support.polling import wait_until
from tests.support.prerequisites import require_kube_apiserver
from tests.support.stack import ROOT, collector_binary, validate_collector_config

pytestmark = pytest.mark.e2e

NON_DEFAULT: dict[str, Any] = {
    "clusterName": "lab-1",
    "agent": {"image": {"repository": "registry.example/agent", "tag": "dev", "pullPolicy": "Never"},
              "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "sec", "effect": "NoSchedule"}],
              "hostKernelHeaders": {"enabled": True}, "priorityClassName": ""},
    "processor": {"replicas": 3, "pdb": {"minAvailable": 2},
                  "image": {"repository": "registry.example/processor", "pullPolicy": "Never"},
                  "profiles": {"enabled": True, "config": {"learn_seconds": 7200}}},
    "collector": {"image": {"pullPolicy": "Never"}, "resources": {"limits": {"memory": "1Gi"}},
                  "config": {"processors": {"batch": {"timeout": "1s"}}}},
    "backends": {"loki": {"otlpUrl": "http://198.51.100.1:3100/otlp"},
                 "jaeger": {"otlpGrpcEndpoint": "198.51.100.1:14317",
                            "tls": {"insecure": False, "caSecret": "jaeger-ca"}}},
    "tls": {"collector": {"existingSecret": "my-collector-tls"}, "processor": {"existingSecret": "my-processor-tls"}},
    "tokens": {"agent": {"existingSecret": "my-agent-token"}, "processor": {"existingSecret": "my-processor-token"},
               "nodeTokens": {"existingSecret": "my-node-tokens"}},
    "networkPolicy": {"enabled": False},
    "monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                   "prometheusRule": {"enabled": True}, "labels": {"release": "prom"}},
}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    require_helm()


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj["spec"]["template"]["spec"])


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("DaemonSet", "Deployment")]


def test_lint_is_clean(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(NON_DEFAULT))
    for args in (["lint", str(CHART)], ["lint", "--strict", str(CHART)],
                 ["lint", "--strict", str(CHART), "--values", str(values)]):
        res = run_helm(*args)
        assert res.returncode == 0 and "[WARNING]" not in res.stdout, res.stdout + res.stderr


def test_lint_refuses_a_broken_chart(tmp_path: Path) -> None:
    """The lint above can fail: an unclosed action in a template."""
    chart = tmp_path / "otelguard"
    shutil.copytree(CHART, chart)
    agent = chart / "templates" / "agent.yaml"
    agent.write_text(agent.read_text().replace("{{ $a.metricsPort }}", "{{ $a.metricsPort ", 1))
    assert run_helm("lint", "--strict", str(chart)).returncode != 0


def test_default_values() -> None:
    docs = template()
    ds = find(docs, "DaemonSet", "otelguard-agent")
    proc = find(docs, "Deployment", "otelguard-processor")
    coll = find(docs, "Deployment", "otelguard-collector")
    images = {c["image"]: c["imagePullPolicy"] for w in workloads(docs) for c in pod_spec(w)["containers"]}
    assert images == {"ghcr.io/otelguard/otelguard-agent:0.1.0": "IfNotPresent",
                      "ghcr.io/otelguard/otelguard-processor:0.1.0": "IfNotPresent",
                      "ghcr.io/otelguard/otelcol-otelguard:0.1.0": "IfNotPresent"}
    # no API token in the agent, on the pod and on its own ServiceAccount
    agent_pod = pod_spec(ds)
    assert agent_pod["automountServiceAccountToken"] is False
    assert find(docs, "ServiceAccount", agent_pod["serviceAccountName"])["automountServiceAccountToken"] is False
    assert agent_pod["tolerations"] == [{"operator": "Exists"}]
    assert agent_pod["priorityClassName"] == "system-node-critical"
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
    mounts = {m["mountPath"] for m in agent_pod["containers"][0]["volumeMounts"]}
    assert {"/sys/kernel/tracing", "/sys/fs/cgroup"} <= mounts and "/lib/modules" not in mounts
    # no subPath anywhere: ConfigMaps and Secrets are updated in place by the kubelet
    for w in workloads(docs):
        for c in pod_spec(w)["containers"]:
            assert all("subPath" not in m for m in c["volumeMounts"]), (w["metadata"]["name"], c["volumeMounts"])
    proc_pod = pod_spec(proc)
    assert proc["spec"]["replicas"] == 2
    assert proc_pod["securityContext"]["runAsUser"] == 65532 and proc_pod["securityContext"]["runAsNonRoot"]
    (pc,) = proc_pod["containers"]
    assert pc["securityContext"]["readOnlyRootFilesystem"] is True
    assert pc["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pc["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    by_mount = {m["mountPath"]: m["name"] for m in pc["volumeMounts"]}
    volumes = {v["name"]: v for v in proc_pod["volumes"]}
    assert "--config=/etc/otelguard/pipeline/pipeline.yaml" in pc["args"]
    assert volumes[by_mount["/etc/otelguard/pipeline"]]["configMap"]["name"] == "otelguard-processor"
    assert volumes[by_mount["/etc/otelguard/rules"]]["configMap"]["name"] == "otelguard-rules"
    assert "emptyDir" in volumes[by_mount["/var/lib/otelguard/state"]]
    # PDBs select their Deployment's pods
    for dep in (proc, coll):
        pdb = find(docs, "PodDisruptionBudget", dep["metadata"]["name"])
        assert selects(pdb["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
        assert selects(dep["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    assert not [d for d in docs if d["kind"] in ("Namespace", "ServiceMonitor", "PodMonitor", "PrometheusRule")]


def test_network_policies_select_the_pods_they_mean() -> None:
    docs = template()
    labels = {name: w["spec"]["template"]["metadata"]["labels"] for w in workloads(docs)
              for name in [w["metadata"]["name"]]}
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == set(labels)

    def allowed(target: str, port: int) -> list[str]:
        """Which of our workloads may reach ``port`` of ``target`` (by pod selectors)."""
        pol = policies[target]
        assert selects(pol["podSelector"], labels[target]) and pol["policyTypes"] == ["Ingress"]
        assert not any(selects(pol["podSelector"], labels[o]) for o in labels if o != target)
        who = set()
        for rule in pol["ingress"]:
            if port in {p["port"] for p in rule["ports"]}:
                for peer in rule["from"]:
                    who |= {o for o in labels if "namespaceSelector" not in peer
                            and selects(peer["podSelector"], labels[o])}
        return sorted(who)

    assert allowed("otelguard-processor", 4317) == ["otelguard-collector"]
    assert allowed("otelguard-collector", 4319) == ["otelguard-agent"]
    assert allowed("otelguard-collector", 4317) == ["otelguard-processor"]
    assert allowed("otelguard-agent", 9465) == []
    # metrics ports from the configured scrapers (namespaceSelector + podSelector)
    for target, port in (("otelguard-processor", 9466), ("otelguard-collector", 8888), ("otelguard-agent", 9465)):
        (rule,) = [r for r in policies[target]["ingress"] if port in {p["port"] for p in r["ports"]}]
        assert rule["from"] == [{"namespaceSelector": {}, "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def test_generated_tls_and_tokens() -> None:
    docs = template()
    secrets = {d["metadata"]["name"]: {k: base64.b64decode(v) for k, v in (d.get("data") or {}).items()}
               for d in docs if d["kind"] == "Secret"}
    assert set(secrets) == {"otelguard-collector-tls", "otelguard-processor-tls", "otelguard-agent-token",
                            "otelguard-processor-token", "otelguard-node-tokens"}
    for component in ("collector", "processor"):
        s = secrets[f"otelguard-{component}-tls"]
        cert = x509.load_pem_x509_certificate(s["tls.crt"])
        ca = x509.load_pem_x509_certificate(s["ca.crt"])
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert f"otelguard-{component}.{NAMESPACE}.svc" in names
    assert len(secrets["otelguard-agent-token"]["token"]) == 48
    assert secrets["otelguard-agent-token"]["token"] != secrets["otelguard-processor-token"]["token"]
    assert secrets["otelguard-node-tokens"] == {}   # no cluster to list nodes in
    with_nodes = template({"tokens": {"nodeTokens": {"nodes": ["node-a", "node-b"]}}})
    assert set(find(with_nodes, "Secret", "otelguard-node-tokens")["data"]) == {"node-a", "node-b"}


def test_non_default_values() -> None:
    docs = template(NON_DEFAULT)
    images = {c["image"]: c["imagePullPolicy"] for w in workloads(docs) for c in pod_spec(w)["containers"]}
    assert images == {"registry.example/agent:dev": "Never", "registry.example/processor:0.1.0": "Never",
                      "ghcr.io/otelguard/otelcol-otelguard:0.1.0": "Never"}
    assert not [d for d in docs if d["kind"] in ("Secret", "NetworkPolicy")]
    proc = find(docs, "Deployment", "otelguard-processor")
    assert proc["spec"]["replicas"] == 3
    assert find(docs, "PodDisruptionBudget", "otelguard-processor")["spec"]["minAvailable"] == 2
    secret_names = {v["secret"]["secretName"] for w in workloads(docs) for v in pod_spec(w)["volumes"] if "secret" in v}
    assert secret_names == {"my-collector-tls", "my-processor-tls", "my-agent-token", "my-processor-token",
                            "my-node-tokens", "jaeger-ca"}
    agent = pod_spec(find(docs, "DaemonSet", "otelguard-agent"))
    assert agent["tolerations"] == NON_DEFAULT["agent"]["tolerations"] and "priorityClassName" not in agent
    host = {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
    assert {"/lib/modules", "/usr/src"} <= host
    (coll,) = pod_spec(find(docs, "Deployment", "otelguard-collector"))["containers"]
    env = {e["name"]: e.get("value") for e in coll["env"]}
    assert env["OTELGUARD_LOKI_OTLP_URL"] == "http://198.51.100.1:3100/otlp"
    assert env["OTELGUARD_JAEGER_OTLP_GRPC"] == "198.51.100.1:14317"
    assert env["OTELGUARD_CLUSTER_NAME"] == "lab-1"
    assert (env["OTELGUARD_COLLECTOR_MEMORY_LIMIT_MIB"], env["OTELGUARD_COLLECTOR_MEMORY_SPIKE_MIB"]) == ("819", "205")
    overrides = yaml.safe_load(find(docs, "ConfigMap", "otelguard-collector")["data"]["overrides.yaml"])
    assert overrides["exporters"]["otlp_grpc/jaeger"]["tls"] == {
        "insecure": False, "insecure_skip_verify": False, "ca_file": "/etc/otelguard/backends/jaeger/ca.crt"}
    assert "/etc/otelguard/backends/jaeger" in {m["mountPath"] for m in coll["volumeMounts"]}
    monitors = {(d["kind"], d["metadata"]["name"]) for d in docs if d["metadata"].get("labels", {}).get("release") == "prom"}
    assert monitors == {("ServiceMonitor", "otelguard-collector"), ("ServiceMonitor", "otelguard-processor"),
                        ("PodMonitor", "otelguard-agent"), ("PrometheusRule", "otelguard")}
    rules = yaml.safe_load((ROOT / "otel-config" / "prometheus" / "rules" / "otelguard.rules.yml").read_text())
    assert find(docs, "PrometheusRule", "otelguard")["spec"] == rules
    # every ServiceMonitor endpoint names a port its Service has
    for sm in (d for d in docs if d["kind"] == "ServiceMonitor"):
        svc = find(docs, "Service", sm["metadata"]["name"])
        assert selects(sm["spec"]["selector"], svc["metadata"]["labels"])
        assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}


def test_non_default_collector_config_validates(tmp_path: Path) -> None:
    """The Collector config the non-default values produce (backend TLS, collector.config
    merged last) is what the built Collector accepts, and says what the values said."""
    from tests.support.prerequisites import require_file

    require_file(collector_binary(), "run `bash scripts/stack/build.sh otelcol`")
    docs = template(NON_DEFAULT)
    cm = find(docs, "ConfigMap", "otelguard-collector")
    (container,) = pod_spec(find(docs, "Deployment", "otelguard-collector"))["containers"]
    paths = []
    for arg in container["args"]:
        name = Path(arg.removeprefix("--config=")).name
        (tmp_path / name).write_text(cm["data"][name])
        paths.append(tmp_path / name)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    res = validate_collector_config(paths, env)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([str(collector_binary()), "print-config", "--mode", "unredacted", "--format", "json",
                          *[f"--config={p}" for p in paths]], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    assert cfg["processors"]["batch"]["timeout"] == 1e9
    jaeger = cfg["exporters"]["otlp_grpc/jaeger"]
    assert jaeger["endpoint"] == "198.51.100.1:14317"
    assert jaeger["tls"].get("insecure", False) is False and jaeger["tls"]["ca_file"] == "/etc/otelguard/backends/jaeger/ca.crt"
    assert cfg["processors"]["resource/cluster"]["attributes"][0]["value"] == "lab-1"


def _stages(docs: list[dict[str, Any]]) -> list[Any]:
    from otelguard.config import load_yaml
    from otelguard.processors.config import build_pipeline_config

    text = find(docs, "ConfigMap", "otelguard-processor")["data"]["pipeline.yaml"]
    return list(build_pipeline_config(load_yaml(text, "pipeline.yaml")).processors)


def test_profiles_are_opt_in_after_falco_rules_with_a_minimal_role() -> None:
    """processor.profiles: off by default (no stage, no Role); on, the stage follows falco_rules
    with the kube store in the release namespace, and the Role grants only the store's verbs."""
    default = template()
    assert [p.type for p in _stages(default)] == ["k8s_attributes", "falco_rules",
                                                   "noise_control", "incidents"]
    assert not [d for d in default if d["kind"] in ("Role", "RoleBinding")]
    docs = template(NON_DEFAULT)
    stages = _stages(docs)
    assert [p.type for p in stages] == ["k8s_attributes", "falco_rules", "profiles",
                                        "noise_control", "incidents"]
    (profiles,) = [p for p in stages if p.type == "profiles"]
    assert profiles.config.store.kind == "kube" and profiles.config.store.namespace == NAMESPACE
    assert profiles.config.learn_seconds == 7200
    role = find(docs, "Role", "otelguard-profiles")
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("workloadprofiles",), ("get", "list", "watch", "create", "patch")),
        (("workloadprofiles/status",), ("patch",))}
    binding = find(docs, "RoleBinding", "otelguard-profiles")
    proc = find(docs, "Deployment", "otelguard-processor")
    assert binding["subjects"][0]["name"] == pod_spec(proc)["serviceAccountName"]
    approver = find(docs, "ClusterRole", "otelguard-profile-approver")
    assert {"workloadprofiles/status"} == {r for rule in approver["rules"]
                                           for r in rule["resources"]
                                           if set(rule["verbs"]) & {"update", "patch"}}
    on_disk = template({"processor": {"profiles": {"enabled": True, "store": "dir"}}})
    assert [p.config.store.kind for p in _stages(on_disk) if p.type == "profiles"] == ["dir"]
    assert not [d for d in on_disk if d["kind"] == "Role"]
    with pytest.raises(AssertionError, match="no falco_rules stage"):
        template({"processor": {"profiles": {"enabled": True},
                                "stages": [{"type": "noise_control", "name": "noise"}]}})
    crds = [d for d in template({}, "--include-crds") if d["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "responserequests.otelguard.dev", "workloadprofiles.otelguard.dev"]


RESPONSE_POLICY = """\
apiVersion: otelguard.dev/v1alpha1
kind: ResponsePolicy
metadata: {name: isolate-shadow-readers}
spec:
  mode: approve
  match: {rules: ["Read sensitive file*"]}
  actions: [{action: isolate_pod}, {action: block_peer}]
"""


def _caps(spec: dict[str, Any]) -> set[str]:
    return set(spec["containers"][0]["securityContext"]["capabilities"]["add"])


def _mount(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (m,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == name]
    return dict(m)


def test_response_is_opt_in_and_grants_each_part_only_its_own() -> None:
    """response.enabled: the stage (last, execute: cluster, kube requests in the release
    namespace, the policies ConfigMap), the processor as the responder (which keeps the enricher's
    role), the agent with --respond, a token bound to a Role on ResponseRequests alone, and only
    the capabilities and mounts of the enabled node actions (docs/security.md#response-on-the-node)."""
    from otelguard.response.policy import load_policies

    default = template()
    assert "response" not in [p.type for p in _stages(default)]
    assert pod_spec(find(default, "Deployment", "otelguard-processor"))["serviceAccountName"] == \
        "otelguard-k8s-enricher"
    agent = pod_spec(find(default, "DaemonSet", "otelguard-agent"))
    assert agent["automountServiceAccountToken"] is False
    assert not [a for a in agent["containers"][0]["args"] if a.startswith("--respond")]
    assert _caps(agent) == {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"}
    assert _mount(agent, "cgroup")["readOnly"] is True

    docs = template({"response": {"enabled": True, "policies": RESPONSE_POLICY,
                                  "config": {"tick_seconds": 0.5}}})
    (stage,) = [p for p in _stages(docs) if p.type == "response"]
    assert [p.type for p in _stages(docs)][-1] == "response"
    assert (stage.config.requests, stage.config.namespace, stage.config.execute,
            stage.config.policies, stage.config.tick_seconds) == (
        "kube", NAMESPACE, "cluster", ("/etc/otelguard/policies",), 0.5)
    proc = pod_spec(find(docs, "Deployment", "otelguard-processor"))
    assert proc["serviceAccountName"] == "otelguard-responder"
    assert _mount(proc, "response-policies")["mountPath"] == "/etc/otelguard/policies"
    policies = find(docs, "ConfigMap", "otelguard-response-policies")["data"]["policies.yaml"]
    assert policies == RESPONSE_POLICY
    enricher = find(docs, "ClusterRoleBinding", "otelguard-k8s-enricher")
    assert {s["name"] for s in enricher["subjects"]} == {"otelguard-k8s-enricher",
                                                         "otelguard-responder"}
    agent = pod_spec(find(docs, "DaemonSet", "otelguard-agent"))
    args = agent["containers"][0]["args"]
    assert {"--respond", f"--respond-namespace={NAMESPACE}",
            "--respond-state-dir=/var/lib/otelguard/response"} <= set(args)
    assert agent["automountServiceAccountToken"] is True
    assert agent["serviceAccountName"] == "otelguard-agent"
    assert _caps(agent) == {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN",
                            "NET_ADMIN", "KILL"}
    assert "readOnly" not in _mount(agent, "cgroup")
    assert _mount(agent, "response")["mountPath"] == "/var/lib/otelguard/response"
    role = find(docs, "Role", "otelguard-agent-responder")
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
        (("responserequests",), ("get", "list")),
        (("responserequests/status",), ("update", "patch"))}
    binding = find(docs, "RoleBinding", "otelguard-agent-responder")
    assert [s["name"] for s in binding["subjects"]] == ["otelguard-agent"]

    # the default policies text is comments only: the stage loads it and proposes nothing
    from tempfile import TemporaryDirectory
    with TemporaryDirectory() as tmp:
        text = find(template({"response": {"enabled": True}}), "ConfigMap",
                    "otelguard-response-policies")["data"]["policies.yaml"]
        Path(tmp, "policies.yaml").write_text(text)
        assert load_policies([tmp]).policies == ()
        Path(tmp, "policies.yaml").write_text(policies)
        assert [p.name for p in load_policies([tmp]).policies] == ["isolate-shadow-readers"]

    # only block_peer: no KILL, the cgroup mount stays read-only
    agent = pod_spec(find(template({"response": {"enabled": True, "nodeActions": ["block_peer"]}}),
                          "DaemonSet", "otelguard-agent"))
    assert _caps(agent) - {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"} == {"SYS_ADMIN",
                                                                                   "NET_ADMIN"}
    assert _mount(agent, "cgroup")["readOnly"] is True
    # no node actions: the processor responds, the agent stays without a token
    docs = template({"response": {"enabled": True, "nodeActions": []}})
    assert pod_spec(find(docs, "DaemonSet", "otelguard-agent"))["automountServiceAccountToken"] is False
    assert not [d for d in docs if d["metadata"]["name"] == "otelguard-agent-responder"]
    # the agent on the enricher's account: that account is the one bound
    docs = template({"response": {"enabled": True}, "agent": {"kubernetesApiAccess": True}})
    binding = find(docs, "RoleBinding", "otelguard-agent-responder")
    assert [s["name"] for s in binding["subjects"]] == ["otelguard-k8s-enricher"]
    # with the profile store: its Role follows the processor to the responder's account
    docs = template({"response": {"enabled": True}, "processor": {"profiles": {"enabled": True}}})
    assert find(docs, "RoleBinding", "otelguard-profiles")["subjects"][0]["name"] == \
        "otelguard-responder"
    with pytest.raises(AssertionError, match='unknown node action "reboot"'):
        template({"response": {"enabled": True, "nodeActions": ["reboot"]}})


def test_agent_api_access_is_opt_in() -> None:
    agent = pod_spec(find(template({"agent": {"kubernetesApiAccess": True}}), "DaemonSet", "otelguard-agent"))
    assert agent["automountServiceAccountToken"] is True
    assert agent["serviceAccountName"] == "otelguard-k8s-enricher"


def _agent_file(docs: list[dict[str, Any]], tmp_path: Path) -> tuple[dict[str, Any], Any]:
    """The agent's DaemonSet pod and its config file as the agent loads it."""
    from otelguard.agent import load_agent_config

    agent = pod_spec(find(docs, "DaemonSet", "otelguard-agent"))
    (c,) = agent["containers"]
    assert "--config=/etc/otelguard/agent/agent.yaml" in c["args"]
    by_mount = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in agent["volumes"]}
    cm = volumes[by_mount["/etc/otelguard/agent"]]["configMap"]["name"]
    path = tmp_path / "agent.yaml"
    path.write_text(find(docs, "ConfigMap", cm)["data"]["agent.yaml"])
    return agent, load_agent_config(str(path))  # unknown keys would be errors


def test_agent_reads_the_processors_rules(tmp_path: Path) -> None:
    """The agent's kernel read filter follows the rules the processor loads: the same rules
    ConfigMap mounted at the processor's path, named in sensor.read_rules after the packaged
    rules (the falco_rules stage runs them: its `rules` is empty)."""
    docs = template({"agent": {"config": {"sensor": {"queue_size": 1024}}}})
    agent, cfg = _agent_file(docs, tmp_path)
    (c,) = agent["containers"]
    rules_mount = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/otelguard/rules"]
    assert rules_mount and rules_mount[0]["readOnly"] is True
    volumes = {v["name"]: v for v in agent["volumes"]}
    assert volumes[rules_mount[0]["name"]]["configMap"]["name"] == "otelguard-rules"
    proc = pod_spec(find(docs, "Deployment", "otelguard-processor"))
    (pc,) = proc["containers"]
    pvol = {v["name"]: v for v in proc["volumes"]}
    assert [pvol[m["name"]]["configMap"]["name"] for m in pc["volumeMounts"]
            if m["mountPath"] == "/etc/otelguard/rules"] == ["otelguard-rules"]
    stage = yaml.safe_load(find(docs, "ConfigMap", "otelguard-processor")["data"]["pipeline.yaml"])
    (falco,) = [p for p in stage["processors"] if p["type"] == "falco_rules"]
    assert "rules" not in falco["config"]
    assert cfg.sensor.read_rules == tuple(falco["config"]["local_rules"]) == ("/etc/otelguard/rules",)
    assert cfg.sensor.read_rules_packaged is True
    assert cfg.sensor.queue_size == 1024  # agent.config is kept beside the chart's keys
    # the pod template rolls when the file changes (the agent reads it at start)
    plain = template()
    assert (find(plain, "DaemonSet", "otelguard-agent")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/agent-config"]
            != find(docs, "DaemonSet", "otelguard-agent")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/agent-config"])


def test_agent_rules_follow_the_processor_stage_and_can_be_off(tmp_path: Path) -> None:
    stages = [{"type": "falco_rules", "name": "detection",
               "config": {"rules": ["/etc/otelguard/rules/site.yaml"],
                          "local_rules": ["/etc/otelguard/rules"]}}]
    _agent, cfg = _agent_file(template({"processor": {"stages": stages}}), tmp_path)
    assert cfg.sensor.read_rules_packaged is False  # the processor does not run them either
    off, cfg = _agent_file(template({"agent": {"readRules": {"enabled": False}}}), tmp_path)
    assert cfg.sensor.read_rules == () and cfg.sensor.read_rules_packaged is False
    assert all(m["mountPath"] != "/etc/otelguard/rules" for m in off["containers"][0]["volumeMounts"])
    assert all(v["name"] != "rules" for v in off["volumes"])


def test_risk_is_opt_in_before_incidents_and_widens_the_agents_filter(tmp_path: Path) -> None:
    """risk.enabled: a risk stage right before incidents (stories cite its findings) with the
    chosen analysers, on the processor's account that may watch what reach reads; the agents'
    read filter holds every prefix the stage asks for (RiskStage.read_path_prefixes(), what
    `otelguard run` adds); packages, which needs the node's /proc, is refused
    (docs/risk.md#in-the-chart)."""
    from otelguard.processors import registry

    default = template()
    assert "risk" not in [p.type for p in _stages(default)]
    _agent, cfg = _agent_file(default, tmp_path)
    assert cfg.sensor.probe.read_path_prefixes is None
    docs = template({"risk": {"enabled": True, "config": {"grants": {"learning_seconds": 3600}}}})
    stages = _stages(docs)
    assert [p.type for p in stages] == ["k8s_attributes", "falco_rules", "noise_control", "risk",
                                        "incidents"]
    (spec,) = [p for p in stages if p.type == "risk"]
    assert spec.config.analysers == ("grants", "reach")
    assert spec.config.grants.learning_seconds == 3600
    _agent, cfg = _agent_file(docs, tmp_path)
    wanted = registry.create("risk", spec.config).read_path_prefixes()  # type: ignore[attr-defined]
    have = cfg.sensor.probe.read_path_prefixes
    assert wanted and set(wanted) <= set(have)
    # reach lists and watches namespaces, Services and EndpointSlices as the processor
    role = find(docs, "ClusterRole", "otelguard-k8s-enricher")
    granted = {(res, v) for r in role["rules"] for res in r["resources"] for v in r["verbs"]}
    assert {(res, v) for res in ("namespaces", "services", "endpointslices")
            for v in ("list", "watch")} <= granted
    proc = pod_spec(find(docs, "Deployment", "otelguard-processor"))
    bound = find(docs, "ClusterRoleBinding", "otelguard-k8s-enricher")["subjects"]
    assert proc["serviceAccountName"] in [s["name"] for s in bound]
    # the agent's own prefixes stay; one already covered is not added twice; only reach: none
    own = template({"risk": {"enabled": True, "config": {"grants": {"read_prefixes": ["/srv/"]}}},
                    "agent": {"config": {"sensor": {"probe": {"read_path_prefixes": ["/srv/"]}}}}})
    spec = next(p for p in _stages(own) if p.type == "risk")
    _agent, cfg = _agent_file(own, tmp_path)
    assert cfg.sensor.probe.read_path_prefixes == (
        "/srv/", "/var/run/secrets/kubernetes.io/serviceaccount/",
        "/run/secrets/kubernetes.io/serviceaccount/")
    assert set(registry.create("risk", spec.config).read_path_prefixes()) <= set(  # type: ignore[attr-defined]
        cfg.sensor.probe.read_path_prefixes)
    _agent, cfg = _agent_file(template({"risk": {"enabled": True, "analysers": ["reach"]}}),
                              tmp_path)
    assert cfg.sensor.probe.read_path_prefixes is None
    # without an incidents stage: last (before response)
    alone = template({"risk": {"enabled": True}, "response": {"enabled": True},
                      "processor": {"stages": [{"type": "k8s_attributes", "name": "k8s",
                                                "config": {"mode": "gateway"}}]}})
    assert [p.type for p in _stages(alone)] == ["k8s_attributes", "risk", "response"]
    with pytest.raises(AssertionError, match="packages resolves paths through the node"):
        template({"risk": {"enabled": True, "analysers": ["packages", "grants"]}})
    with pytest.raises(AssertionError, match='unknown analyser "grant"'):
        template({"risk": {"enabled": True, "analysers": ["grant"]}})


def test_deploy_is_the_rendered_chart() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "render_deploy.py"), "--check"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"deploy/ is stale; run python3 scripts/render_deploy.py\n{res.stdout}{res.stderr}"


def _repo_copy(tmp_path: Path) -> Path:
    """The parts of the repository the two generators read, copied."""
    for part in ("scripts", "deploy", "otel-config"):
        shutil.copytree(ROOT / part, tmp_path / part)
    for crd in (Path("src/otelguard/processors/profiles/crd.yaml"),  # the chart's crds/ copies
                Path("src/otelguard/response/crd.yaml")):
        (tmp_path / crd).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / crd, tmp_path / crd)
    return tmp_path


def test_render_check_catches_drift(tmp_path: Path) -> None:
    """The check above can fail: a chart edit not rendered, and a source not copied."""
    root = _repo_copy(tmp_path)
    proc = root / "deploy" / "helm" / "otelguard" / "templates" / "processor.yaml"
    proc.write_text(proc.read_text().replace("periodSeconds: 5", "periodSeconds: 7"))
    res = subprocess.run([sys.executable, str(root / "scripts" / "render_deploy.py"), "--check"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 1 and res.stdout.strip() == "stale: deploy/processor.yaml", res.stdout + res.stderr
    backends = root / "otel-config" / "collector" / "backends.yaml"
    backends.write_text(backends.read_text() + "# edited\n")
    res = subprocess.run([sys.executable, str(root / "scripts" / "render_deploy.py"), "--check"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 1 and "stale: deploy/helm/otelguard/files/collector/backends.yaml" in res.stdout


def test_values_table_is_current(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "helm_values_doc.py")
    res = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # ... and can fail: a changed default, an undocumented value
    chart = tmp_path / "otelguard"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("replicas: 2", "replicas: 5", 1))
    res = subprocess.run([sys.executable, script, "--check", "--chart", str(chart)], capture_output=True, text=True)
    assert res.returncode == 1 and "stale" in res.stdout
    values.write_text(values.read_text() + "surprise: 1\n")
    res = subprocess.run([sys.executable, script, "--check", "--chart", str(chart)], capture_output=True, text=True)
    assert res.returncode == 1 and "surprise" in res.stdout


# --- against a real kube-apiserver ---------------------------------------------------------

def _crd(kind: str, plural: str) -> dict[str, Any]:
    """A minimal CRD for a prometheus-operator kind: the real group/version/names, spec left
    open (the operator's full schema is not vendored here)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
    }


MONITORING = {"ServiceMonitor": "servicemonitors", "PodMonitor": "podmonitors", "PrometheusRule": "prometheusrules"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, Any]]:
    from kubernetes import client, config

    require_kube_apiserver()
    kc = start_cluster(tmp_path_factory.mktemp("kube-helm"))
    try:
        api = config.new_client_from_config(str(kc.kubeconfig))  # type: ignore[no-untyped-call]
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})  # type: ignore[arg-type]
        ext = client.ApiextensionsV1Api(api)
        for kind, plural in MONITORING.items():
            ext.create_custom_resource_definition(_crd(kind, plural))  # type: ignore[arg-type]

        def established() -> bool:
            return all(any(c.type == "Established" and c.status == "True"
                           for c in (ext.read_custom_resource_definition(f"{p}.monitoring.coreos.com").status.conditions or []))
                       for p in MONITORING.values())
        assert wait_until(established, timeout=30), "the monitoring CRDs never became Established within 30 s"
        yield kc, api
    finally:
        kc.stop()


def _dry_run(api: Any, doc: dict[str, Any]) -> None:
    from kubernetes import client, utils

    if doc["kind"] in MONITORING:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "monitoring.coreos.com", "v1", doc["metadata"]["namespace"], MONITORING[doc["kind"]], doc, dry_run="All")
    else:
        utils.create_from_dict(api, doc, dry_run="All")  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT, {"response": {"enabled": True}}],
                         ids=["default", "non-default", "response"])
def test_every_object_passes_server_side_dry_run(cluster: tuple[KubeCluster, Any], values: dict[str, Any]) -> None:
    from kubernetes import utils
    from kubernetes.client.exceptions import ApiException

    _, api = cluster
    docs = template(values)
    failures = []
    for doc in docs:
        try:
            _dry_run(api, doc)
        except (ApiException, utils.FailToCreateError) as e:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {e}")
    assert not failures, "\n".join(failures)
    kinds = {d["kind"] for d in docs}
    assert {"DaemonSet", "Deployment", "Service", "ConfigMap", "ClusterRole"} <= kinds
    if values.get("monitoring"):
        assert set(MONITORING) <= kinds


def test_dry_run_refuses_a_bad_object(cluster: tuple[KubeCluster, Any]) -> None:
    """The dry run can fail, for a CRD-backed kind too (its spec must be an object)."""
    from kubernetes.client.exceptions import ApiException

    _, api = cluster
    docs = template(NON_DEFAULT)
    rule = find(docs, "PrometheusRule", "otelguard")
    rule["spec"] = "groups"
    with pytest.raises(ApiException):
        _dry_run(api, rule)


def test_install_reuses_existing_secrets_and_tokens_each_node(cluster: tuple[KubeCluster, Any]) -> None:
    """``lookup`` against the real API server: Secrets that exist are reused as they are (an
    upgrade keeps certificates and tokens), a node gets a token, an existing key is kept."""
    from kubernetes import client

    kc, api = cluster
    core = client.CoreV1Api(api)
    core.create_node({"metadata": {"name": "node-helm-1"}})  # type: ignore[arg-type]
    core.create_node({"metadata": {"name": "node-helm-2"}})  # type: ignore[arg-type]
    first = [d for d in template() if d["kind"] == "Secret"]
    keep = find(first, "Secret", "otelguard-collector-tls")
    keep_token = find(first, "Secret", "otelguard-agent-token")
    node_tokens = {"metadata": {"name": "otelguard-node-tokens"}, "data": {"node-helm-1": base64.b64encode(b"kept").decode()}}
    for obj in (keep, keep_token, node_tokens):
        core.create_namespaced_secret(NAMESPACE, obj)  # type: ignore[arg-type]
    try:
        again = [d for d in template({}, "--dry-run=server", "--kubeconfig", str(kc.kubeconfig)) if d["kind"] == "Secret"]
    finally:
        for name in ("otelguard-collector-tls", "otelguard-agent-token", "otelguard-node-tokens"):
            core.delete_namespaced_secret(name, NAMESPACE)
    assert find(again, "Secret", "otelguard-collector-tls")["data"] == keep["data"]
    assert find(again, "Secret", "otelguard-agent-token")["data"] == keep_token["data"]
    assert find(again, "Secret", "otelguard-processor-tls")["data"] != find(first, "Secret", "otelguard-processor-tls")["data"]
    nodes = find(again, "Secret", "otelguard-node-tokens")["data"]
    assert set(nodes) == {"node-helm-1", "node-helm-2"}
    assert base64.b64decode(nodes["node-helm-1"]) == b"kept" and len(base64.b64decode(nodes["node-helm-2"])) == 48
