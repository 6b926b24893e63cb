"""The OTel SDK's environment variables, honoured where SDK users expect them: the agent's
endpoint (OTEL_EXPORTER_OTLP_ENDPOINT), its export headers (OTEL_EXPORTER_OTLP_HEADERS) and
attributes added to every Resource it sends (OTEL_RESOURCE_ATTRIBUTES). The end-to-end case
runs the real agent on the real kernel against a real OTLP/gRPC receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from otelguard import semconv as sc
from otelguard.exporter.mapping import resource_attrs
from otelguard.exporter.settings import (
    NodeIdentity, key_value_list, node_identity, otlp_endpoint, otlp_headers,
    resource_attributes,
)
from otelguard.otlp.messages import attrs_dict, iter_log_records
from tests.support.polling import wait_until
from tests.transport.receivers import GrpcReceiver, free_port

OTELGUARD = Path(sys.executable).parent / "otelguard"


def test_key_value_lists_as_the_sdk_reads_them() -> None:
    assert key_value_list(" a=1 , b=x%2Cy,broken, c = two%20words ,=v") == (
        ("a", "1"), ("b", "x,y"), ("c", "two words"))
    assert otlp_headers({"OTEL_EXPORTER_OTLP_HEADERS": "X-Tenant=team%20a"}) == (
        ("x-tenant", "team a"),)


@pytest.mark.parametrize("value, expected", [
    ("http://collector:4317", "collector:4317"),
    ("https://collector.example:4443/", "collector.example:4443"),
    ("collector:9000", "collector:9000"),
    ("http://collector", "collector:4317"),
    ("http://[::1]:4317", "[::1]:4317"),
    ("", None),
])
def test_endpoint(value: str, expected: str) -> None:
    assert otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": value}) == expected


def test_resource_attributes_never_override_and_skip_workload_keys() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES":
           "k8s.cluster.name=prod-eu,service.name=oops,host.name=spoof,container.id=x"}
    assert resource_attributes(env) == (("k8s.cluster.name", "prod-eu"), ("host.name", "spoof"))
    node = node_identity(env, machine_id_path="/nonexistent")
    attrs = dict(resource_attrs(("", ""), node))
    assert attrs[sc.K8S_CLUSTER_NAME] == "prod-eu"
    assert attrs[sc.HOST_NAME] == node.host_name  # the sensor's own value wins
    assert attrs[sc.SERVICE_NAME] == "host"  # the fixed host name, not the environment's "oops"
    assert dict(resource_attrs(("", ""), NodeIdentity("n", "h", ""))).get(
        sc.K8S_CLUSTER_NAME) is None


@pytest.mark.kernel
def test_agent_uses_the_otel_environment(tmp_path: Path) -> None:
    receiver = GrpcReceiver().start()
    env = {**os.environ,
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
           "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=team%20a",
           "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=prod-eu,deployment.environment.name=ci"}
    proc = subprocess.Popen(
        [str(OTELGUARD), "agent", "--otlp-insecure", "--spool-dir", str(tmp_path / "spool"),
         "--metrics", f"127.0.0.1:{free_port()}", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: receiver.log_records() > 0 or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        receiver.stop()
    assert proc.returncode == 0, err.decode()
    assert all(m.get("x-tenant") == "team a" for m in receiver.metadata)
    resources = [attrs_dict(rl.resource.attributes) for req in receiver.logs
                 for rl, _, _ in iter_log_records(req)]
    assert resources and all(r.get(sc.K8S_CLUSTER_NAME) == "prod-eu" for r in resources)
    assert all(r.get("deployment.environment.name") == "ci" for r in resources)
    json_lines = [line for line in err.decode().splitlines() if line.startswith("{")]
    assert json_lines, err.decode()  # --log-format json: the agent's own lines are JSON
