"""The exporter's output through the REAL OpenTelemetry Collector (otelcol-otelguard).

Our OTLP/gRPC and OTLP/HTTP transports send the agent's requests (hand-encoded bytes) to the
Collector's otlp receiver; its file exporter ("tap") writes what it exported. We check that
every record and span arrived intact, and that otlp.jsoncodec reads the file exporter's JSON and
writes it back byte-for-byte equivalent (same object).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from otelguard.otlp import jsoncodec
from otelguard import semconv as sc
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import attrs_dict, iter_log_records, iter_spans
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.otlp_http import OtlpHttpTransport
from otelguard.transport.security import INSECURE_CLIENT
from tests.exporter.scenario import shell_session

pytestmark = pytest.mark.e2e

NODE = NodeIdentity("node-e2e", "host-e2e", "0123456789abcdef")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Any]:
    from tests.support.stack import BACKENDS_CONFIG, Collector, StackError, collector_binary

    try:
        collector_binary()
    except StackError as exc:
        pytest.fail(f"Collector binary missing (scripts/stack/build.sh otelcol): {exc}")
    col = Collector(tmp_path / "col", [BACKENDS_CONFIG]).start()
    yield col
    col.stop()


def _wait_tap(col: Any, want_logs: int, want_spans: int) -> tuple[list[Any], list[Any], list[str]]:
    from tests.support.polling import wait_until

    def counts() -> tuple[int, int]:
        logs = spans = 0
        for line in _tap_text(col):
            req = jsoncodec.decode_line(line)
            if hasattr(req, "resource_logs"):
                logs += sum(1 for _ in iter_log_records(req))
            else:
                spans += sum(1 for _ in iter_spans(req))
        return logs, spans

    wait_until(lambda: counts() >= (want_logs, want_spans), timeout=20)
    lines = _tap_text(col)
    reqs = [jsoncodec.decode_line(line) for line in lines]
    return ([r for r in reqs if hasattr(r, "resource_logs")],
            [r for r in reqs if hasattr(r, "resource_spans")], lines)


def _tap_text(col: Any) -> list[str]:
    lines: list[str] = col.tap_text()
    return lines


def _build() -> tuple[bytes, Any, int]:
    b = OtlpBuilder(NODE, clock=lambda: 1_763_900_001_000_000_000)
    logs = b.logs_bytes(shell_session())
    traces = b.shutdown_traces()
    assert traces is not None
    return logs, traces, len(shell_session())


def _check_arrived(sent_logs: bytes, sent_traces: Any, logs: list[Any], traces: list[Any]) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    sent = ExportLogsServiceRequest.FromString(sent_logs)
    got = {(r.time_unix_nano, r.event_name, r.span_id): (rl, r)
           for req in logs for rl, _, r in iter_log_records(req)}
    assert len(got) == sum(1 for _ in iter_log_records(sent))
    for rl, _, rec in iter_log_records(sent):
        got_rl, got_rec = got[(rec.time_unix_nano, rec.event_name, rec.span_id)]
        want = attrs_dict(rec.attributes)
        have = attrs_dict(got_rec.attributes)
        have.pop("event_name", None)  # added by the Collector config for Loki < 3.8
        assert have == want
        assert (got_rec.body, got_rec.trace_id, got_rec.severity_number) == (
            rec.body, rec.trace_id, rec.severity_number)
        res_want, res_have = attrs_dict(rl.resource.attributes), attrs_dict(got_rl.resource.attributes)
        assert res_have.items() >= res_want.items()
    sent_spans = {s.span_id: s for _, s in iter_spans(sent_traces)}
    got_spans = {s.span_id: s for req in traces for _, s in iter_spans(req)}
    assert got_spans.keys() == sent_spans.keys()
    for span_id, span in sent_spans.items():
        got = got_spans[span_id]
        if not got.status.code and not got.status.message:
            got.ClearField("status")  # pdata writes an empty status; same meaning
        assert got == span


def test_grpc_to_the_real_collector(collector: Any) -> None:
    logs, traces, _ = _build()
    t = OtlpGrpcTransport(collector.otlp_grpc, timeout_s=10, tls=INSECURE_CLIENT)
    assert t.export_logs(logs).ok
    assert t.export_traces(traces).ok
    t.shutdown()
    got_logs, got_traces, lines = _wait_tap(collector, len(shell_session()), 7)
    _check_arrived(logs, traces, got_logs, got_traces)


def test_http_to_the_real_collector(collector: Any) -> None:
    logs, traces, _ = _build()
    t = OtlpHttpTransport(collector.otlp_http, timeout_s=10, tls=INSECURE_CLIENT)
    r1, r2 = t.export_logs(logs), t.export_traces(traces)
    assert r1.ok and r2.ok, (r1, r2)
    t.shutdown()
    got_logs, got_traces, _ = _wait_tap(collector, len(shell_session()), 7)
    _check_arrived(logs, traces, got_logs, got_traces)


def test_otlpjson_matches_the_collector_file_exporter(collector: Any) -> None:
    logs, traces, _ = _build()
    t = OtlpGrpcTransport(collector.otlp_grpc, timeout_s=10, tls=INSECURE_CLIENT)
    assert t.export_logs(logs).ok and t.export_traces(traces).ok
    t.shutdown()
    _, _, lines = _wait_tap(collector, len(shell_session()), 7)
    assert lines
    for line in lines:
        assert jsoncodec.to_dict(jsoncodec.decode_line(line)) == json.loads(line)
    assert any(sc.EV_PROCESS_EXEC in line for line in lines)


def test_process_tree_lands_in_jaeger_as_one_trace(tmp_path: Path) -> None:
    """Spans -> Collector (backends.yaml) -> real Jaeger: the shell session is one trace with
    curl under bash and its connection under curl; the cron job is its own trace."""
    from tests.support.polling import wait_until
    from tests.support.stack import (
        BACKENDS_CONFIG, Collector, Jaeger, StackError, backends_env, binary,
    )

    try:
        binary("jaeger", "jaeger")
    except StackError as exc:
        pytest.fail(f"Jaeger binary missing (scripts/stack/build.sh jaeger): {exc}")
    jaeger = Jaeger(tmp_path / "jaeger").start()
    col = Collector(tmp_path / "col", [BACKENDS_CONFIG], backends_env(jaeger=jaeger)).start()
    try:
        _, traces, _ = _build()
        t = OtlpGrpcTransport(col.otlp_grpc, timeout_s=10, tls=INSECURE_CLIENT)
        assert t.export_traces(traces).ok
        t.shutdown()
        sent = {s.name: s for _, s in iter_spans(traces)}
        bash = sent["exec bash"]
        got: list[Any] = []

        def stored() -> bool:
            got[:] = [s for rs in jaeger.trace(bash.trace_id.hex())
                      for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]
            return len(got) >= 4

        assert wait_until(stored, timeout=30), got
        by_name = {s["name"]: s for s in got}
        assert set(by_name) == {"exec bash", "exec curl", "connect 10.0.0.7:443", "connect 10.0.0.7:8443"}
        assert by_name["exec curl"]["parentSpanId"] == bash.span_id.hex()
        assert by_name["connect 10.0.0.7:443"]["parentSpanId"] == sent["exec curl"].span_id.hex()
        job = sent["exec sh"]
        assert wait_until(lambda: bool(jaeger.trace(job.trace_id.hex())), timeout=30)
    finally:
        col.stop()
        jaeger.stop()
