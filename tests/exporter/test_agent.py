"""``otelguard agent`` end to end on the real kernel: sensor -> exporter -> a real OTLP/gRPC
receiver; a process in a kubepods-shaped cgroup shows up as records and spans under its
container's Resource; SIGTERM flushes and exits 0; the endpoint being down fills the spool,
which a restarted agent replays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as sc
from otelguard.otlp.messages import attrs_dict, get_attr, iter_log_records, iter_spans
from tests.ebpf.containers import container
from tests.support.metrics import scrape, total
from tests.support.polling import wait_until
from tests.transport.receivers import GrpcReceiver, free_port

pytestmark = pytest.mark.kernel

OTELGUARD = Path(sys.executable).parent / "otelguard"
SH = os.path.basename(os.path.realpath("/bin/sh"))  # dash on Debian




def _agent(endpoint: str, spool: Path, metrics_port: int,
           config: Path | None = None) -> "subprocess.Popen[bytes]":
    extra = ["--config", str(config)] if config is not None else []
    return subprocess.Popen(
        [str(OTELGUARD), "agent", "--otlp-endpoint", endpoint, "--otlp-insecure",
         "--spool-dir", str(spool),
         "--spool-max-bytes", str(64 * 1024 * 1024), "--metrics", f"127.0.0.1:{metrics_port}",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "OTELGUARD_NODE_NAME": "kernel-test-node"},
    )


def _container_records(receiver: GrpcReceiver, cid: str) -> list[tuple[Any, Any]]:
    out = []
    for req in list(receiver.logs):
        for rl, _, rec in iter_log_records(req):
            if get_attr(rl.resource.attributes, sc.CONTAINER_ID) == cid:
                out.append((rl, rec))
    return out


def _diagnose(receiver: GrpcReceiver, needle: str, proc: "subprocess.Popen[bytes]") -> str:
    """Where did the records mentioning ``needle`` land (which resource), and agent stats."""
    lines = []
    for req in list(receiver.logs):
        for rl, _, rec in iter_log_records(req):
            if needle in str(rec.attributes):
                lines.append(f"{rec.event_name} resource={attrs_dict(rl.resource.attributes)}")
    return "records mentioning the marker: " + ("; ".join(lines[:5]) or "none")


def _stop(proc: "subprocess.Popen[bytes]") -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return -9, err.decode(errors="replace")
    return proc.returncode, err.decode(errors="replace")


def test_agent_exports_container_activity_and_exits_cleanly(tmp_path: Path) -> None:
    receiver = GrpcReceiver().start()
    metrics_port = free_port()
    proc = _agent(receiver.endpoint, tmp_path / "spool", metrics_port)
    try:
        assert wait_until(lambda: bool(receiver.logs) or proc.poll() is not None, 120, interval=0.2), "no records at all"
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        with container() as c:
            marker = tmp_path / "marker.txt"
            # the sleep keeps the cgroup populated a moment (the sensor resolves cgroup ids
            # to paths lazily); `exit` keeps the shell from exec'ing its last command
            c.run(["/bin/sh", "-c", f"echo hi > {marker}; /bin/cat {marker}; /bin/sleep 1; exit 0"],
                  check=True)
            seen = wait_until(lambda: any(rec.event_name == sc.EV_PROCESS_EXEC
                                     for _, rec in _container_records(receiver, c.container_id)), 30, interval=0.2)
            assert seen, _diagnose(receiver, str(marker), proc)
            # a TCP connection from the container to the receiver's port: a CLIENT child span
            c.run([sys.executable, "-c", "import socket, sys; "
                   f"s = socket.create_connection(('127.0.0.1', {receiver.port})); s.close()"],
                  check=True)
            conn_name = f"connect 127.0.0.1:{receiver.port}"
            assert wait_until(lambda: any(span.name == conn_name for req in list(receiver.traces)
                                     for _, span in iter_spans(req)), 30, interval=0.2), "no connection span"
            metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
            assert total("otelguard_events_total", metrics, event_name=sc.EV_PROCESS_EXEC) > 0
            code, err = _stop(proc)
            assert code == 0, err[-3000:]
            records = _container_records(receiver, c.container_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        receiver.stop()
    rl, _ = records[0]
    res = attrs_dict(rl.resource.attributes)
    assert res[sc.K8S_POD_UID] == c.pod_uid and res[sc.K8S_NODE_NAME] == "kernel-test-node"
    assert res[sc.OS_TYPE] == "linux" and sc.HOST_PROCESS not in res
    execs = [rec for _, rec in records if rec.event_name == sc.EV_PROCESS_EXEC]
    exes = {get_attr(r.attributes, sc.PROCESS_EXECUTABLE_NAME) for r in execs}
    assert {SH, "cat"} <= exes, exes
    assert all(len(r.trace_id) == 16 and len(r.span_id) == 8 for r in execs)
    writes = [rec for _, rec in records if rec.event_name == sc.EV_FILE_OPEN
              and get_attr(rec.attributes, sc.FILE_PATH) == str(marker)]
    assert writes, "the redirect's open of the marker file"
    # spans: one per process image in the container; cat's parent is the shell that forked it
    spans = {span.span_id: span for req in receiver.traces for rs, span in iter_spans(req)
             if get_attr(rs.resource.attributes, sc.CONTAINER_ID) == c.container_id}
    (cat,) = [s for s in spans.values() if s.name == "exec cat"]
    sh = spans[cat.parent_span_id]
    assert sh.name == f"exec {SH}" and cat.trace_id == sh.trace_id
    assert get_attr(sh.attributes, sc.PROCESS_PID) == get_attr(cat.attributes, sc.PROCESS_PARENT_PID)
    assert cat.end_time_unix_nano >= cat.start_time_unix_nano
    assert get_attr(cat.attributes, sc.SPAN_END_REASON) == "exit"
    assert get_attr(sh.attributes, sc.SPAN_END_REASON) == "exit"
    # the shell was started by a long-lived host process: a new trace, linked to its parent
    assert sh.parent_span_id == b"" and len(sh.links) == 1
    (conn,) = [s for s in spans.values() if s.name == f"connect 127.0.0.1:{receiver.port}"]
    owner = spans[conn.parent_span_id]
    assert conn.kind == 3 and owner.name.startswith("exec python") and conn.trace_id == owner.trace_id
    assert get_attr(conn.attributes, sc.SPAN_END_REASON) == "close"
    assert conn.end_time_unix_nano > conn.start_time_unix_nano and conn.status.code == 0


def test_agent_spools_while_the_endpoint_is_down_and_replays_after_restart(tmp_path: Path) -> None:
    """Scoped to the kubepods cgroups (a config file, as a DaemonSet would), so the host's own
    activity (a build running beside the suite) cannot fill the bounded spool first."""
    port = free_port()
    spool = tmp_path / "spool"
    config = tmp_path / "agent.yaml"
    config.write_text("sensor:\n  cgroup_scope: [/kubepods.slice, /kubepods]\n")
    metrics = free_port()
    proc = _agent(f"127.0.0.1:{port}", spool, metrics, config)
    try:
        with container() as c:
            def spooled_after_a_run() -> bool:
                if proc.poll() is not None:
                    return True
                c.run(["/bin/true"], check=True)  # until the probes are attached and flushed
                return any(spool.glob("*.pb"))

            assert wait_until(spooled_after_a_run, 120, interval=0.2), "nothing spooled while the endpoint was down"
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            # the pile-up is visible: the spool's gauges count what waits on disk
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
            gauges = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                      if line.startswith(("otelguard_spool_requests ", "otelguard_spool_bytes "))}
            assert gauges["otelguard_spool_requests"] >= 1 and gauges["otelguard_spool_bytes"] > 0, gauges
            time.sleep(1.5)  # a flush interval or two
            code, err = _stop(proc)
        assert code == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    spooled = sorted(spool.glob("*.pb"))
    assert spooled, "nothing spooled while the endpoint was down"
    # what the spool holds for our container, by record uid (the sensor sets one per record)
    want = []
    for path in spooled:
        if "-logs-" in path.name:
            req = ExportLogsServiceRequest.FromString(path.read_bytes())
            want += [get_attr(rec.attributes, sc.LOG_RECORD_UID) for rl, _, rec in iter_log_records(req)
                     if get_attr(rl.resource.attributes, sc.CONTAINER_ID) == c.container_id]
    assert want, "the container's records were not spooled"
    receiver = GrpcReceiver(port).start()
    proc = _agent(receiver.endpoint, spool, free_port(), config)
    try:
        assert wait_until(lambda: not any(p.exists() for p in spooled), 120, interval=0.2)
        code, err = _stop(proc)
        assert code == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        receiver.stop()
    got = [get_attr(rec.attributes, sc.LOG_RECORD_UID)
           for _, rec in _container_records(receiver, c.container_id)]
    assert sorted(map(str, got)) == sorted(map(str, want))  # every spooled record, exactly once
