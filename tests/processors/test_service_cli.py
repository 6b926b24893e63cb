"""`otelguard processor` as users run it: a real process, config file, SIGTERM flushes and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from prometheus_client.parser import text_string_to_metric_families

from otelguard import semconv
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import attrs_dict, iter_log_records

from . import samples
from .service_fixtures import wait_for
from .test_collector_e2e import _free_port, _listening
from .test_service_errors import _grpc_call, _proto

OTELGUARD = [sys.executable, "-m", "otelguard.cli"]


def _sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels}")


def test_processor_command_end_to_end(tmp_path: Path) -> None:
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    out = tmp_path / "out.jsonl"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        "processors:\n"
        "  - type: noise_control\n"
        "    config: {window_seconds: 3600, burst: 1}\n"
    )
    log = (tmp_path / "log.txt").open("wb")
    proc = subprocess.Popen(
        OTELGUARD + ["processor", "--config", str(cfg), "--listen", f"127.0.0.1:{grpc_port}",
                     "--listen-http", f"127.0.0.1:{http_port}", "--export", f"jsonl:{out}",
                     "--metrics", f"127.0.0.1:{metrics_port}"],
        stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: _listening(grpc_port) and _listening(http_port), timeout=30,
                 what="processor listening")
        code, _, _ = _grpc_call(f"127.0.0.1:{grpc_port}", samples.logs(2, 5).SerializeToString())
        assert code == grpc.StatusCode.OK
        assert _proto(http_port, samples.logs(1).SerializeToString())[0] == 200
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                         timeout=10).read().decode()
        # 4 repeated detections throttled (counted in the stop record), not rejected
        assert _sample(metrics, "otelguard_processor_requests_total",
                       signal="logs", protocol="grpc", outcome="ok") == 1
        assert _sample(metrics, "otelguard_processor_requests_total",
                       signal="logs", protocol="http", outcome="ok") == 1
        assert _sample(metrics, "otelguard_processor_stage_records_in_total",
                       stage="noise_control") == 8
        assert _sample(metrics, "otelguard_pipeline_latency_seconds_count",
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


def test_refuses_pure_python_protobuf(tmp_path: Path) -> None:
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    result = subprocess.run(OTELGUARD + ["processor", "--export", f"jsonl:{tmp_path / 'o'}"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "not 'upb'" in result.stdout
