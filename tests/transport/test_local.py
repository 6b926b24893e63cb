"""JSON lines, console and the spec parser."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard.otlp import jsoncodec
from otelguard import semconv as sc
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import set_attrs
from otelguard.transport import SpecError, Transport, parse_spec
from otelguard.transport.console import ConsoleTransport
from otelguard.transport.jsonlines import JsonLinesTransport
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.otlp_http import OtlpHttpTransport
from otelguard.transport.security import INSECURE_CLIENT
from tests.support.metrics import sample
from tests.exporter.scenario import shell_session

NODE = NodeIdentity("n", "h", "i")


def _logs() -> ExportLogsServiceRequest:
    return OtlpBuilder(NODE, clock=lambda: 1).logs(shell_session())


def test_jsonl_writes_one_request_per_line_and_flushes_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "out.jsonl"
    t = JsonLinesTransport(str(path), flush_interval_s=0.2)
    req = _logs()
    assert t.export_logs(req).ok
    b = OtlpBuilder(NODE, clock=lambda: 1)
    b.logs(shell_session())
    traces = b.shutdown_traces()
    assert t.export_traces(traces.SerializeToString()).ok
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and path.read_text().count("\n") < 2:
        time.sleep(0.05)
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # flushed by the timer, before shutdown
    assert jsoncodec.decode_line(lines[0]) == req and jsoncodec.decode_line(lines[1]) == traces
    t.shutdown()
    assert not t.export_logs(req).ok


def _disk_full() -> float:
    return sample("otelguard_dropped_total", stage="export", reason="disk_full")


def test_jsonl_disk_full_is_a_clear_counted_drop() -> None:
    before = _disk_full()
    t = JsonLinesTransport("/dev/full", flush_interval_s=60)
    req = _logs()
    for _ in range(200):  # more than the 64 KiB buffer: the write itself fails
        result = t.export_logs(req)
        if not result.ok:
            break
    else:
        result = t.flush() or result
    assert not result.ok and result.reason == "disk_full" and "disk full" in result.error
    t.shutdown()
    after = _disk_full()
    assert after > before  # records acknowledged into the buffer and then lost are counted too


def test_console_lines_and_detection_highlight() -> None:
    req = _logs()
    det = req.resource_logs[0].scope_logs[0].log_records.add()
    det.CopyFrom(req.resource_logs[0].scope_logs[0].log_records[2])
    det.event_name = sc.EV_DETECTION
    det.body.string_value = "Outbound connection by curl"
    set_attrs(det.attributes, {sc.SECURITY_RULE_NAME: "Unexpected outbound connection",
                               sc.SECURITY_RULE_PRIORITY: "CRITICAL",
                               sc.THREAT_TACTIC_NAME: ["command_and_control"]})
    out = io.StringIO()
    t = ConsoleTransport(out, colour=False)
    assert t.export_logs(req.SerializeToString()).ok
    lines = out.getvalue().splitlines()
    assert len(lines) == sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    assert "process.exec" in lines[0] and "ctr=3f3f3f3f3f3f pod=0d6c9a4e" in lines[0]
    assert "bash[100]" in lines[0]
    assert "path=/etc/ssl/certs/ca.pem" in lines[3]
    assert any("address=10.0.0.7" in line and "port=443" in line for line in lines)
    det_line = next(line for line in lines if line.startswith(lines[0][:12]) and "!!" in line)
    assert "!! CRITICAL Unexpected outbound connection" in det_line
    assert "[command_and_control]" in det_line and "curl[101]" in det_line
    assert any(line.split()[1:2] == ["file.open"] and "host" in line and "EACCES" in line
               for line in lines)
    coloured = io.StringIO()
    ConsoleTransport(coloured, colour=True, detections_only=True).export_logs(req)
    assert coloured.getvalue().count("\n") == 1 and "\x1b[1;31m" in coloured.getvalue()


def test_spec_parser(tmp_path: Path) -> None:
    assert isinstance(parse_spec("console"), ConsoleTransport)
    j = parse_spec(f"jsonl:{tmp_path}/x.jsonl")
    assert isinstance(j, JsonLinesTransport)
    j.shutdown()
    assert isinstance(parse_spec("otlp:127.0.0.1:4317", tls=INSECURE_CLIENT), OtlpGrpcTransport)
    assert isinstance(parse_spec("otlphttp:http://127.0.0.1:4318", tls=INSECURE_CLIENT),
                      OtlpHttpTransport)
    with pytest.raises(SpecError, match=r"exporter\.tls\.ca_file"):  # plaintext only if said
        parse_spec("otlp:127.0.0.1:4317")
    for bad in ["", "jsonl:", "otlp:host", "otlp:host:99999", "otlphttp:ftp://x", "kafka:x", "console:x"]:
        with pytest.raises(SpecError):
            parse_spec(bad)
    for t in (InMemoryTransport(), ConsoleTransport(),
              OtlpGrpcTransport("127.0.0.1:1", tls=INSECURE_CLIENT)):
        assert isinstance(t, Transport)  # structural conformance to the protocol


def test_jsonl_output_is_plain_json() -> None:
    line = jsoncodec.encode(_logs())
    host = json.loads(line)["resourceLogs"][1]["resource"]["attributes"]
    assert {"key": sc.HOST_PROCESS, "value": {"boolValue": True}} in host, host


def test_jsonl_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The output names processes, paths and users of the whole host: not for other local users,
    whatever the umask (docs/security.md)."""
    import os
    import stat

    from otelguard.transport.jsonlines import JsonLinesTransport

    old = os.umask(0o022)
    try:
        t = JsonLinesTransport(str(tmp_path / "out.jsonl"))
        t.shutdown()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o600
