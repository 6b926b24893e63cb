"""``otelguard incidents --loki URL`` against a real Loki fed through the real Collector
(backends.yaml): incident records travel in their own stream, and every evidence uid their
stories cite resolves to a record in Loki (docs/incidents.md#reading-incidents-from-loki)."""

from __future__ import annotations

import re
import secrets

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.processors import registry
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.stage import Batch
from tests.support.incidents import batch, detection, event, latest, pod, trace
from tests.support.polling import wait_until
from tests.support.stack import Collector, Loki

pytestmark = pytest.mark.e2e


def _attack(ns: str) -> list[Batch]:
    """A shell reads /etc/shadow, then nc connects out, through noise_control and incidents."""
    pipeline = Pipeline([(n, registry.create(n)) for n in ("noise_control", "incidents")])
    pipeline.start()
    res, tr = pod(name="web-7d9f-abcde", ns=ns), trace(ns)
    cat = event(S.EV_FILE_OPEN, 201, tr, ppid=200, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/bin/cat", S.PROCESS_COMMAND_LINE: "cat /etc/shadow",
        S.FILE_PATH: "/etc/shadow", S.FILE_OPEN_FLAGS: "O_RDONLY"})
    nc = event(S.EV_NETWORK_CONNECT, 202, tr, ppid=200, t=10**9, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc", S.NETWORK_PEER_ADDRESS: "203.0.113.9",
        S.NETWORK_PEER_PORT: 4444})
    out = [pipeline.process(batch(res, [cat], [detection(
        cat, "Read sensitive file untrusted", 13, "credential_access", "T1555")])).batch,
           pipeline.process(batch(res, [nc], [detection(
               nc, "Outbound connection to C2", 17, "command_and_control", "T1071")])).batch]
    return out + pipeline.shutdown()


def test_incidents_are_listed_and_shown_from_loki_with_their_evidence(
        loki: Loki, backends_collector: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    ns = f"inc-{secrets.token_hex(4)}"
    batches = _attack(ns)
    (iid, _), = latest(batches).items()
    with grpc.insecure_channel(backends_collector.otlp_grpc) as channel:
        for b in batches:
            LogsServiceStub(channel).Export(b, timeout=10)  # type: ignore[no-untyped-call]
    q = f'{{otelguard_stream="incident", k8s_namespace_name="{ns}"}}'
    assert wait_until(lambda: loki.query_range(q)["result"], 60), "no incident stream in Loki"
    streams = loki.query_range(q)["result"]
    assert {s["stream"]["otelguard_stream"] for s in streams} == {"incident"}
    assert all(s["stream"]["event_name"] == S.EV_INCIDENT for s in streams)
    detections = loki.query_range(f'{{otelguard_stream="detection", k8s_namespace_name="{ns}"}}')
    assert wait_until(lambda: len(loki.query_range(
        f'{{otelguard_stream=~"event|detection", k8s_namespace_name="{ns}"}}')["result"]) >= 2,
        30), detections

    assert main(["incidents", "--loki", loki.url, "--since", "1h"]) == 0
    listing = capsys.readouterr().out
    assert re.search(rf"^{iid[:8]}\s+CRITICAL\s+open\s+v1\s", listing, re.M), listing
    assert "T1555,T1071" in listing

    def shown() -> str:
        assert main(["incidents", "--loki", loki.url, "--id", iid[:8]]) == 0
        return capsys.readouterr().out

    assert wait_until(lambda: shown().count(" found ") == 2, 30), shown()
    text = shown()
    assert "INCIDENT CRITICAL v1 open" in text and "read /etc/shadow" in text
    assert "connected to 203.0.113.9:4444" in text and "MISSING" not in text
    assert f"otelguard.incident.link.trace: http://127.0.0.1:16686/trace/{trace(ns).hex()}" in text
    assert main(["incidents", "--loki", loki.url, "--id", "ffffffff-none"]) == 1
