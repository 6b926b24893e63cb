"""`otelguard processor` as users run it: a real process, config file, SIGTERM flushes and exits 0."""

from __future__ import annotations

import contextlib
import json
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2

from otelguard import semconv
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import attrs_dict, iter_log_records

from . import samples
from tests.support.endpoints import free_port, grpc_call, listening, post_proto
from tests.support.health import NAMES, grpc_health, http_get_json
from tests.support.metrics import sample, scrape
from tests.support.polling import wait_for

OTELGUARD = [sys.executable, "-m", "otelguard.cli"]


@contextlib.contextmanager
def _processor(args: list[str], log_path: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """``otelguard processor ARGS`` running; on leaving, SIGTERM must flush and exit 0."""
    log = log_path.open("wb")
    proc = subprocess.Popen(OTELGUARD + ["processor", "--insecure", *args], stdout=log,
                            stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_processor_command_end_to_end(tmp_path: Path) -> None:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    out = tmp_path / "out.jsonl"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        "processors:\n"
        "  - type: noise_control\n"
        "    config: {window_seconds: 3600, burst: 1}\n"
    )
    log = (tmp_path / "log.txt").open("wb")
    proc = subprocess.Popen(
        OTELGUARD + ["processor", "--insecure", "--config", str(cfg), "--listen",
                     f"127.0.0.1:{grpc_port}",
                     "--listen-http", f"127.0.0.1:{http_port}", "--export", f"jsonl:{out}",
                     "--metrics", f"127.0.0.1:{metrics_port}"],
        stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: listening(grpc_port) and listening(http_port), timeout=30,
                 what="processor listening")
        code, _, _ = grpc_call(f"127.0.0.1:{grpc_port}", samples.logs(2, 5).SerializeToString())
        assert code == grpc.StatusCode.OK
        assert post_proto(http_port, samples.logs(1).SerializeToString())[0] == 200
        metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        # 4 repeated detections throttled (counted in the stop record), not rejected
        assert sample("otelguard_processor_requests_total", metrics,
                      signal="logs", protocol="grpc", outcome="ok") == 1
        assert sample("otelguard_processor_requests_total", metrics,
                      signal="logs", protocol="http", outcome="ok") == 1
        assert sample("otelguard_processor_stage_records_in_total", metrics,
                      stage="noise_control") == 8
        assert sample("otelguard_pipeline_latency_seconds_count", metrics,
                      stage="noise_control") == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    records = [rec for line in out.read_text().splitlines()
               for _, _, rec in iter_log_records(jsoncodec.decode_logs(line))]
    # 2 + 1 events, the first detection, the throttle start, and its stop flushed at shutdown
    assert len(records) == 6
    counts = sorted(attrs_dict(r.attributes)[semconv.DETECTION_COUNT] for r in records
                    if r.event_name == semconv.EV_DETECTION)
    assert counts == [0, 1, 4]


def test_config_errors_exit_2_listing_all(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("processors:\n  - type: noise_control\n    config: {burst: x, windw: 1}\n"
                   "  - type: nope\n")
    started = time.monotonic()
    result = subprocess.run(OTELGUARD + ["processor", "--config", str(cfg), "--export",
                                         f"jsonl:{tmp_path / 'o.jsonl'}"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    text = result.stdout + result.stderr
    assert f"{cfg}:3: processors[0].config.burst: expected an integer" in text
    assert f"{cfg}:3: processors[0].config.windw: unknown key" in text
    assert f"{cfg}:4: processors[1].type: unknown processor type 'nope'" in text
    assert time.monotonic() - started < 60


def test_no_exporter_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(OTELGUARD + ["processor", "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no exporter" in result.stdout


def test_plaintext_listeners_need_insecure_said_explicitly(tmp_path: Path) -> None:
    args = ["processor", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
            "--export", f"jsonl:{tmp_path / 'o'}"]
    result = subprocess.run(OTELGUARD + args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout.strip().splitlines()[-1] == (
        "otelguard processor: service.tls: no TLS configured: set service.tls.cert_file and "
        "key_file (or service.tls.insecure: true for plaintext)")
    for flag in ("--export-ca", "--export-token-file"):
        assert flag in subprocess.run(OTELGUARD + ["processor", "--help"], capture_output=True,
                                      text=True, timeout=60).stdout


def test_an_insecure_listener_is_announced_loudly(tmp_path: Path) -> None:
    log_path = tmp_path / "log.txt"
    grpc_port = free_port()
    with _processor(["--listen", f"127.0.0.1:{grpc_port}", "--metrics", "127.0.0.1:0",
                     "--export", f"jsonl:{tmp_path / 'o'}"], log_path):
        wait_for(lambda: listening(grpc_port), timeout=30, what="processor listening")
    assert "WARNING otelguard.security: INSECURE service: plaintext" in log_path.read_text()


def test_refuses_pure_python_protobuf(tmp_path: Path) -> None:
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    result = subprocess.run(OTELGUARD + ["processor", "--export", f"jsonl:{tmp_path / 'o'}"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "not 'upb'" in result.stdout


def test_processor_command_serves_readyz_on_the_metrics_port(tmp_path: Path) -> None:
    """``otelguard processor`` as deploy/processor.yaml runs it: no OTLP/HTTP listener, so the
    probes ask the metrics port (docs/architecture.md#health); the gRPC port answers
    grpc.health.v1."""
    grpc_port, metrics_port = free_port(), free_port()
    with _processor(["--listen", f"127.0.0.1:{grpc_port}", "--export",
                     f"jsonl:{tmp_path / 'out.jsonl'}", "--metrics", f"127.0.0.1:{metrics_port}"],
                    tmp_path / "log.txt") as proc:
        def ready() -> bool:
            try:
                return http_get_json(metrics_port, "/readyz")[0] == 200
            except (OSError, http.client.HTTPException):
                return proc.poll() is not None
        wait_for(ready, timeout=30, what="/readyz 200 on the metrics port")
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        status, body = http_get_json(metrics_port, "/readyz")
        # the default pipeline (detection, noise control) has no stage that reports readiness;
        # the reloader's check always passes (it warns after a failed reload)
        assert [c["name"] for c in body["checks"]] == ["pipeline", "next_hop:jsonl#0",
                                                       "reload"], body
        assert http_get_json(metrics_port, "/healthz") == (200, {"status": "alive"})
        for name in NAMES:
            assert grpc_health(f"127.0.0.1:{grpc_port}", name) == \
                health_pb2.HealthCheckResponse.SERVING


def test_processor_exports_falco_alerts(tmp_path: Path) -> None:
    """Falco JSON exporters of the service's config: detections of its own falco_rules stage
    reach a falco-json file (filtered by min_priority) and a falcosidekick receiver."""
    from tests.support.sidekick import Sidekick

    sidekick = Sidekick()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: Shell exec\n  desc: t\n"
        "  condition: evt.type in (execve, execveat) and proc.exepath = /bin/sh\n"
        "  output: shell %proc.exepath pid=%proc.pid cmd=%proc.cmdline\n"
        "  priority: WARNING\n  tags: [shell, process]\n"
        "- rule: Shell exec note\n  desc: t\n"
        "  condition: evt.type in (execve, execveat) and proc.exepath = /bin/sh\n"
        "  output: note %proc.pid\n  priority: INFO\n  tags: [shell]\n")
    alerts = tmp_path / "alerts.json"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        "exporters:\n"
        f"  - falco-json:{alerts}?min_priority=notice\n"
        f"  - falcosidekick:{sidekick.url}?insecure=true&tags=process\n"
        "processors:\n"
        f"  - type: falco_rules\n    config: {{rules: [{rules}]}}\n")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    try:
        with _processor(["--config", str(cfg), "--listen", f"127.0.0.1:{grpc_port}",
                         "--listen-http", f"127.0.0.1:{http_port}",
                         "--metrics", f"127.0.0.1:{metrics_port}"], tmp_path / "log.txt"):
            wait_for(lambda: listening(http_port), timeout=30, what="processor listening")
            assert post_proto(http_port, samples.logs(2).SerializeToString())[0] == 200
            wait_for(lambda: alerts.exists() and len(alerts.read_text().splitlines()) == 2,
                     timeout=10, what="two alerts written")
    finally:
        sidekick.stop()
    written = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [(a["rule"], a["priority"], a["hostname"]) for a in written] == [
        ("Shell exec", "Warning", "node-1")] * 2
    assert [a["output_fields"]["proc.pid"] for a in written] == [1000, 1001]
    assert sidekick.rejected == []
    assert sorted(a["output_fields"]["proc.pid"] for a in sidekick.accepted) == [1000, 1001]
    assert {a["rule"] for a in sidekick.accepted} == {"Shell exec"}
