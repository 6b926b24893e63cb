"""``otelguard agent`` against a real OpenTelemetry Collector (issue 2): the receiving side is the
Go-built ``otelcol-otelguard``, not a test receiver that accepts anything. The Collector writes
what it received with its file exporter; the tests read that file.

- container activity reaches the Collector as log records and process spans under the
  container's Resource;
- spool and resume: the agent starts while nothing listens on the Collector's port, the
  container's records go to the spool, the Collector comes up on that port later and every
  record arrives exactly once (by ``log.record.uid``).

Root, the kernel and the Go-built Collector. The agent is scoped to ``/kubepods.slice`` so host
activity does not flood the Collector (or the spool) while the test runs.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as sc
from otelguard.otlp.messages import get_attr, iter_log_records
from tests.ebpf.containers import container
from tests.support.polling import wait_until
from tests.support.stack import Agent, Collector, Component

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

SCOPE = "/kubepods.slice"
# A real Collector that receives OTLP/gRPC and writes it to a file (the stack's file/tap is
# added by compose_collector_config to every pipeline); debug keeps the pipelines valid.
RECEIVER_CONFIG: dict[str, Any] = {
    "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "${env:OTELGUARD_COLLECTOR_OTLP_GRPC}"}}}},
    "exporters": {"debug": {"verbosity": "basic"}},
    "extensions": {"health_check": {"endpoint": "${env:OTELGUARD_COLLECTOR_HEALTH}"}},
    "service": {
        "extensions": ["health_check"],
        "telemetry": {"metrics": {"level": "none"}},
        "pipelines": {"logs": {"receivers": ["otlp"], "exporters": ["debug"]},
                      "traces": {"receivers": ["otlp"], "exporters": ["debug"]}},
    },
}


def receiving_collector(workdir: Path) -> Collector:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "receiver.yaml"
    config.write_text(yaml.safe_dump(RECEIVER_CONFIG, sort_keys=False))
    return Collector(workdir, [config])


def _value(v: dict[str, Any]) -> Any:
    return next(iter(v.values()), None)


def container_records(col: Collector, container_id: str) -> list[tuple[str, str]]:
    """(event_name, log.record.uid) of every record the Collector received for the container."""
    out = []
    for doc in col.tap_lines():
        for rl in doc.get("resourceLogs", []):
            res = {a["key"]: _value(a["value"]) for a in rl["resource"].get("attributes", [])}
            if res.get(sc.CONTAINER_ID) != container_id:
                continue
            for sl in rl.get("scopeLogs", []):
                for rec in sl.get("logRecords", []):
                    attrs = {a["key"]: _value(a["value"]) for a in rec.get("attributes", [])}
                    out.append((rec.get("eventName", ""), str(attrs.get(sc.LOG_RECORD_UID))))
    return out


def container_span_names(col: Collector, container_id: str) -> set[str]:
    names = set()
    for doc in col.tap_lines():
        for rs in doc.get("resourceSpans", []):
            res = {a["key"]: _value(a["value"]) for a in rs["resource"].get("attributes", [])}
            if res.get(sc.CONTAINER_ID) == container_id:
                names |= {sp["name"] for ss in rs.get("scopeSpans", []) for sp in ss.get("spans", [])}
    return names


def spooled_uids(spool: Path, container_id: str) -> Optional[list[str]]:
    """Record uids of the container in the spool's log requests; None while a file is half
    written (the agent writes, renames and replays them concurrently)."""
    uids = []
    try:
        for path in sorted(spool.glob("*.pb")):
            if "-logs-" in path.name:
                req = ExportLogsServiceRequest.FromString(path.read_bytes())
                uids += [str(get_attr(rec.attributes, sc.LOG_RECORD_UID)) for rl, _, rec in iter_log_records(req)
                         if get_attr(rl.resource.attributes, sc.CONTAINER_ID) == container_id]
    except (OSError, ValueError):
        return None
    return uids


@pytest.fixture
def stopper() -> Iterator[list[Component]]:
    """Components to stop at the end whatever happens (reverse order)."""
    started: list[Component] = []
    yield started
    for comp in reversed(started):
        comp.stop()


def test_agent_exports_container_activity_to_a_real_collector(tmp_path: Path,
                                                              stopper: list[Component]) -> None:
    col = receiving_collector(tmp_path / "otelcol")
    col.start()
    stopper.append(col)
    agent = Agent(tmp_path / "agent", col.otlp_grpc)
    agent.start()
    stopper.append(agent)
    with container() as c:
        # the sleep keeps the cgroup populated while the agent resolves its id; `exit` keeps the
        # shell from exec'ing its last command
        c.run(["/bin/sh", "-c", "/bin/cat /etc/hostname > /dev/null; /bin/sleep 1; exit 0"], check=True)
        assert wait_until(lambda: {"exec cat", "exec sleep"} <= container_span_names(col, c.container_id), 60), \
            (container_span_names(col, c.container_id), agent.log_tail())
    assert agent.terminate() == 0, agent.log_tail()
    records = container_records(col, c.container_id)
    events = collections.Counter(name for name, _ in records)
    assert events[sc.EV_PROCESS_EXEC] >= 3 and events[sc.EV_FILE_OPEN] >= 1, events
    uids = collections.Counter(uid for _, uid in records)
    assert "None" not in uids and max(uids.values()) == 1, uids.most_common(3)


def test_agent_spools_while_the_collector_is_down_and_delivers_exactly_once(
        tmp_path: Path, stopper: list[Component]) -> None:
    col = receiving_collector(tmp_path / "otelcol")          # ports chosen, nothing listening yet
    agent = Agent(tmp_path / "agent", col.otlp_grpc)
    agent.start()
    stopper.append(agent)
    with container() as c:
        c.run(["/bin/sh", "-c", "/bin/cat /etc/hostname > /dev/null; /bin/ls / > /dev/null; "
               "/bin/sleep 1; exit 0"], check=True)
        # the exec, open and exit records of the container's processes reach the spool
        def spooled() -> list[str]:
            return spooled_uids(agent.spool, c.container_id) or []
        assert wait_until(lambda: len(spooled()) >= 6, 60), (spooled(), agent.log_tail())
        time.sleep(1.0)                                        # let the last batch spool too
        want = spooled()
        col.start()                                            # the Collector comes up on that port
        stopper.append(col)
        assert wait_until(lambda: set(want) <= {u for _, u in container_records(col, c.container_id)}, 90), \
            (len(want), len(container_records(col, c.container_id)), agent.log_tail())
        assert wait_until(lambda: not any(agent.spool.glob("*.pb")), 30), sorted(agent.spool.iterdir())
    assert agent.terminate() == 0, agent.log_tail()
    got = collections.Counter(uid for _, uid in container_records(col, c.container_id))
    assert set(want) <= set(got)
    assert max(got.values()) == 1, [u for u, n in got.items() if n > 1][:5]   # nothing twice
