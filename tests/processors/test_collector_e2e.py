"""The service and a REAL OpenTelemetry Collector (our ocb build), both directions, on loopback.

* service -> Collector: the service forwards over OTLP/gRPC to the Collector's otlp receiver,
  whose file exporter writes OTLP JSON lines that the test reads back.
* Collector -> service: the Collector's otlp_grpc and otlp_http exporters (gzip by default) send
  to the service, which forwards to an in-memory sink.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest
import yaml

from otelguard import semconv
from otelguard.otlp import jsoncodec
from otelguard.processors.noise import Config as NoiseConfig
from otelguard.processors.noise import NoiseControl
from otelguard.otlp.messages import attrs_dict, iter_log_records, iter_spans
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT

from . import samples
from tests.support.endpoints import free_port, grpc_call, listening
from tests.support.polling import wait_for

from .service_fixtures import running_service

pytestmark = pytest.mark.e2e

CACHE = Path(os.environ.get("OTELGUARD_CACHE", Path.home() / ".cache" / "otelguard"))
OTELCOL = CACHE / "otelcol" / "otelcol-otelguard"


@contextlib.contextmanager
def collector(config: dict[str, object], tmp: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    if not OTELCOL.exists():
        pytest.fail(f"{OTELCOL} missing: run `make stack-build` (scripts/stack/build.sh otelcol)")
    cfg = tmp / "otelcol.yaml"
    cfg.write_text(yaml.safe_dump(config))
    log = (tmp / "otelcol.log").open("wb")
    proc = subprocess.Popen([str(OTELCOL), f"--config={cfg}"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("collector did not start:\n"
                                     + (tmp / "otelcol.log").read_text()[-3000:])
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _base(receiver_port: int) -> dict[str, object]:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{receiver_port}"}}}},
        # no self-metrics listener: parallel test runs would fight over :8888
        "service": {"telemetry": {"metrics": {"level": "none"}}, "pipelines": {}},
    }


def test_service_forwards_to_collector_file_exporter(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "collector-out.jsonl"
    config = _base(port)
    config["exporters"] = {"file": {"path": str(out), "flush_interval": "100ms"}}
    config["service"]["pipelines"] = {  # type: ignore[index]
        "logs": {"receivers": ["otlp"], "exporters": ["file"]},
        "traces": {"receivers": ["otlp"], "exporters": ["file"]},
    }
    with collector(config, tmp_path, port):
        target = OtlpGrpcTransport(f"127.0.0.1:{port}", timeout_s=10, tls=INSECURE_CLIENT)
        noise = NoiseControl(NoiseConfig(window_seconds=0.3, burst=1))
        with running_service([("noise_control", noise)], exporters=[("otlp#0", target)]) as run:
            code, _, _ = grpc_call(run.grpc_endpoint, samples.logs(3, 4).SerializeToString())
            assert code == grpc.StatusCode.OK
            code, _, _ = grpc_call(run.grpc_endpoint, samples.traces(2).SerializeToString(),
                                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            assert code == grpc.StatusCode.OK

            def records() -> tuple[list[dict[str, object]], int]:
                logs: list[dict[str, object]] = []
                spans = 0
                if not out.exists():
                    return logs, 0
                for line in out.read_text().splitlines():
                    req = jsoncodec.decode_line(line)
                    if hasattr(req, "resource_logs"):
                        logs += [{"event": r.event_name, **attrs_dict(r.attributes)}
                                 for _, _, r in iter_log_records(req)]  # type: ignore[arg-type]
                    else:
                        spans += sum(1 for _ in iter_spans(req))  # type: ignore[arg-type]
                return logs, spans

            # 3 events + first detection at once; the throttle start, and its stop counting the
            # 3 repeats after the window
            wait_for(lambda: len(records()[0]) == 6 and records()[1] == 2, timeout=20,
                     what="6 log records and 2 spans in the collector's file")
            logs, _ = records()
            counts = sorted(r[semconv.DETECTION_COUNT] for r in logs
                            if r["event"] == semconv.EV_DETECTION)  # type: ignore[type-var]
            assert counts == [0, 1, 3]


def test_collector_exporters_send_to_service(tmp_path: Path) -> None:
    port = free_port()
    with running_service() as run:
        config = _base(port)
        config["exporters"] = {
            "otlp_grpc": {"endpoint": run.grpc_endpoint, "tls": {"insecure": True}},
            "otlp_http": {"endpoint": run.http_url},
        }
        config["service"]["pipelines"] = {  # type: ignore[index]
            "logs": {"receivers": ["otlp"], "exporters": ["otlp_grpc"]},
            "traces": {"receivers": ["otlp"], "exporters": ["otlp_http"]},
        }
        with collector(config, tmp_path, port):
            client = OtlpGrpcTransport(f"127.0.0.1:{port}", timeout_s=10, tls=INSECURE_CLIENT)
            try:
                assert client.export_logs(samples.logs(6)).ok
                assert client.export_traces(samples.traces(4)).ok
            finally:
                client.shutdown()
            wait_for(lambda: run.sink.log_record_count() == 6 and run.sink.span_count() == 4,
                     timeout=20, what="6 records (otlp_grpc) and 4 spans (otlp_http) at the sink")
        res = attrs_dict(run.sink.logs[0].resource_logs[0].resource.attributes)
        assert res[semconv.CONTAINER_ID] == samples.CONTAINER
