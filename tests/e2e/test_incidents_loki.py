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
from tests.support.incidents import attack, latest, trace
from tests.support.polling import wait_until
from tests.support.stack import Collector, Loki

pytestmark = pytest.mark.e2e


def test_incidents_are_listed_and_shown_from_loki_with_their_evidence(
        loki: Loki, backends_collector: Collector, capsys: pytest.CaptureFixture[str]) -> None:
    ns = f"inc-{secrets.token_hex(4)}"
    batches = attack(ns)
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
