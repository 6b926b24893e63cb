"""scripts/stack/start.sh and stop.sh (make stack / make stack-stop), run on free ports.

The whole local stack comes up and reports ready, data flows through it, and stop.sh leaves
none of its processes behind."""

from __future__ import annotations

import os
import subprocess
import urllib.parse
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from tests.e2e.scenario import Scenario
from tests.support.polling import wait_until
from tests.support.stack import ROOT, get_json, http_get
from tests.support.endpoints import free_ports

pytestmark = pytest.mark.e2e




def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_start_and_stop_the_local_stack(tmp_path: Path) -> None:
    p = free_ports(14)
    env = {
        **os.environ,
        "OTELGUARD_STACK_RUN": str(tmp_path / "run"), "OTELGUARD_STACK_KUBE": "0",
        "LOKI_HTTP_PORT": str(p[0]), "LOKI_GRPC_PORT": str(p[1]),
        "JAEGER_OTLP_GRPC": f"127.0.0.1:{p[2]}", "JAEGER_OTLP_HTTP": f"127.0.0.1:{p[3]}",
        "JAEGER_QUERY_HTTP": f"127.0.0.1:{p[4]}", "JAEGER_QUERY_GRPC": f"127.0.0.1:{p[5]}",
        "JAEGER_TELEMETRY_PORT": str(p[6]),
        "OTELGUARD_COLLECTOR_OTLP_GRPC": f"127.0.0.1:{p[7]}", "OTELGUARD_COLLECTOR_OTLP_HTTP": f"127.0.0.1:{p[8]}",
        "OTELGUARD_COLLECTOR_PROMETHEUS": f"127.0.0.1:{p[9]}", "OTELGUARD_COLLECTOR_TELEMETRY_PORT": str(p[10]),
        "OTELGUARD_COLLECTOR_HEALTH": f"127.0.0.1:{p[11]}", "OTELGUARD_PROMETHEUS_PORT": str(p[12]),
        "OTELGUARD_LOKI_OTLP_URL": f"http://127.0.0.1:{p[0]}/otlp", "OTELGUARD_JAEGER_OTLP_GRPC": f"127.0.0.1:{p[2]}",
    }
    run = tmp_path / "run"
    try:
        res = subprocess.run(["bash", str(ROOT / "scripts/stack/start.sh")], env=env, capture_output=True,
                             text=True, timeout=240)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"http://127.0.0.1:{p[0]}" in res.stdout and "up (backends mode)" in res.stdout
        pids = {f.stem: int(f.read_text()) for f in run.glob("*.pid")}
        assert set(pids) == {"loki", "jaeger", "otelcol", "prometheus"}
        assert all(alive(pid) for pid in pids.values())

        # data flows: a detection sent to the Collector reaches Loki
        s = Scenario()
        with grpc.insecure_channel(env["OTELGUARD_COLLECTOR_OTLP_GRPC"]) as ch:
            LogsServiceStub(ch).Export(s.logs(), timeout=10)  # type: ignore[no-untyped-call]
        q = urllib.parse.urlencode({"query": f'{{k8s_namespace_name="{s.namespace}"}}', "limit": "10"})
        url = f"http://127.0.0.1:{p[0]}/loki/api/v1/query_range?{q}"
        assert wait_until(lambda: len(get_json(url)["data"]["result"]) > 0, 30)
        # Prometheus scrapes the Collector from the target files start.sh wrote
        up = f"http://127.0.0.1:{p[12]}/api/v1/query?query=up%7Bjob%3D%22otelcol%22%7D"
        assert wait_until(lambda: [r["value"][1] for r in get_json(up)["data"]["result"]] == ["1"], 60)
    finally:
        stop = subprocess.run(["bash", str(ROOT / "scripts/stack/stop.sh")], env=env, capture_output=True,
                              text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert not list(run.glob("*.pid"))
    assert wait_until(lambda: not any(alive(pid) for pid in pids.values()), 10)
    assert http_get(f"http://127.0.0.1:{p[0]}/ready", 1)[0] == 0
