"""``otelguard audit verify --loki URL`` against a real Loki fed through the real Collector
(backends.yaml's logs/audit route): audit records keep their hash through Loki's text round
trip, a chain with a record that never arrived and one with an edited record are each reported
at the precise record, and a clean chain beside them is not (docs/response.md#audit)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.response.audit import AuditRecord, read_jsonl, to_resource_logs
from otelguard.response.request import State
from otelguard.response.store import LocalStore
from tests.support.polling import wait_until
from tests.support.response import MarkerAction, planned_request
from tests.support.stack import Collector, Loki

pytestmark = pytest.mark.e2e


def _chain(tmp: Path, name: str) -> tuple[str, list[AuditRecord]]:
    store = LocalStore(tmp / name)
    action = MarkerAction(tmp / f"marks-{name}")
    for i in range(3):
        req, _ = store.create(planned_request(action, trigger_uid=f"{name}-{i}", pod=f"p{i}"),
                              by="policy:p", reason="matched detection Read sensitive file")
        store.transition(req.id, State.APPROVED if i != 1 else State.REJECTED, by="alice",
                         reason="looked: ünïcode, \"quotes\"\nand a second line")
    return store.chain, read_jsonl(store.audit_path)


def test_the_chain_verifies_from_loki_and_breaks_are_found(
        tmp_path: Path, loki: Loki, backends_collector: Collector,
        capsys: pytest.CaptureFixture[str]) -> None:
    clean, records = _chain(tmp_path, "clean")
    gap, with_gap = _chain(tmp_path, "gap")
    edited, to_edit = _chain(tmp_path, "edited")
    attrs = dict(to_edit[3].attributes)
    attrs[S.RESPONSE_ACTOR] = "mallory"
    to_edit[3] = dataclasses.replace(to_edit[3], attributes=attrs)
    sent = [records, with_gap[:2] + with_gap[3:], to_edit]
    with grpc.insecure_channel(backends_collector.otlp_grpc) as channel:
        for chain in sent:
            req = ExportLogsServiceRequest()
            req.resource_logs.append(to_resource_logs(chain))
            LogsServiceStub(channel).Export(req, timeout=10)  # type: ignore[no-untyped-call]
    want = sum(len(c) for c in sent)

    def arrived() -> int:
        streams = loki.query_range('{otelguard_stream="audit"}', limit=5000)["result"]
        chains = {clean, gap, edited}
        return sum(1 for s in streams for _ in s["values"]
                   if s["stream"].get("otelguard_audit_chain") in chains)

    assert wait_until(lambda: arrived() == want, 60), f"{arrived()} of {want} audit records in Loki"
    code = main(["audit", "verify", "--loki", loki.url, "--since", "1h"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"chain {clean}: seq 1..6" in out
    assert f"chain {gap}: seq 3 missing (between seq 2 (loki " in out
    assert f"chain {edited} seq 4 (loki " in out and "record edited" in out
    assert clean not in "".join(line for line in out.splitlines()
                                if "BROKEN" in line or "also:" in line)
