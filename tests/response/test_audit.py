"""The audit chain: a record is hashed over a canonical form that survives Loki's text
round trip; verify finds a deleted, an edited, a re-hashed and a reordered record and says
where (docs/response.md#audit)."""

from __future__ import annotations

import json
from pathlib import Path

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.response.audit import (
    AuditRecord, digest, from_loki, read_jsonl, to_resource_logs, verify,
)
from otelguard.response.request import State
from otelguard.response.store import LocalStore
from tests.support.response import MarkerAction, planned_request


def _chain(tmp_path: Path, n: int = 4) -> LocalStore:
    store = LocalStore(tmp_path / "store", clock=lambda: 1700000000.25)
    action = MarkerAction(tmp_path / "marks")
    for i in range(n):
        req, _ = store.create(planned_request(action, trigger_uid=f"d{i}", pod=f"p{i}"),
                              by="policy:p", reason="matched detection Read sensitive file")
        store.transition(req.id, State.REJECTED if i % 2 else State.APPROVED, by="alice",
                         reason="looked at it\nsecond line, ünïcode")
    return store


def test_a_clean_chain_verifies_and_survives_the_loki_text_form(tmp_path: Path) -> None:
    store = _chain(tmp_path)
    records = read_jsonl(store.audit_path)
    assert [r.seq for r in records] == list(range(1, 9))
    assert verify(records).ok
    # as Loki returns them: every value text, keys with "_", in reverse time order
    loki = [from_loki({k.replace(".", "_"): (json.dumps(v) if isinstance(v, bool) else str(v))
                       for k, v in r.attributes.items()}, r.body) for r in reversed(records)]
    assert verify(loki).ok and verify(loki).chains == {store.chain: (1, 8)}
    # and the OTLP record carries the stream, the event name and the detection's trace
    rl = to_resource_logs(records[:1])
    assert {kv.key: kv.value.string_value for kv in rl.resource.attributes}[S.STREAM] == "audit"
    rec = rl.scope_logs[0].log_records[0]
    assert rec.event_name == S.EV_RESPONSE_AUDIT
    assert rec.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"


def _write(path: Path, records: list[AuditRecord]) -> None:
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))


def test_verify_reports_the_first_break_precisely(tmp_path: Path, capsys: object) -> None:
    store = _chain(tmp_path)
    records = read_jsonl(store.audit_path)
    f = tmp_path / "audit.jsonl"

    _write(f, records[:3] + records[4:])  # seq 4 deleted
    result = verify(read_jsonl(f))
    assert result.problems[0].startswith(f"chain {store.chain}: seq 4 missing (between seq 3 "
                                         f"({f}:3) and seq 5 ({f}:4))")

    edited = [*records]
    attrs = dict(edited[5].attributes)
    attrs[S.RESPONSE_ACTOR] = "mallory"
    edited[5] = AuditRecord(attrs, edited[5].body, edited[5].trace_id)
    _write(f, edited)
    result = verify(read_jsonl(f))
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"chain {store.chain} seq 6 ({f}:6): record edited")

    attrs[S.AUDIT_HASH] = digest(attrs, edited[5].body)  # re-hashed: the next link breaks
    edited[5] = AuditRecord(attrs, edited[5].body, edited[5].trace_id)
    _write(f, edited)
    result = verify(read_jsonl(f))
    assert result.problems == [
        f"chain {store.chain} seq 7 ({f}:7): prev_hash {records[5].hash[:16]}… is not seq 6's "
        f"hash {attrs[S.AUDIT_HASH][:16]}…"]

    _write(f, list(reversed(records)) + records[:1])  # order and an identical duplicate: fine
    assert verify(read_jsonl(f)).ok

    assert main(["audit", "verify", str(store.audit_path)]) == 0
    _write(f, records[:3] + records[4:])
    assert main(["audit", "verify", str(f)]) == 1
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "OK: every record matches its hash" in out
    assert f"BROKEN: first break: chain {store.chain}: seq 4 missing" in out
