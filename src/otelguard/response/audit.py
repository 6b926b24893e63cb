"""The audit chain: every request transition as one hash-chained OTel LogRecord
(docs/response.md#audit; keys: docs/architecture.md#attribute-schema).

A record's attributes are strings, integers and booleans only, and the hash covers their text
form, so the same record read back from a local file or from Loki (structured metadata comes
back as text, ``.`` written ``_``) hashes the same. The canonical form is the JSON of
``{"attributes": {key: text, ...} (sorted, without the hash itself), "body": body}``, compact,
UTF-8; ``otelguard.audit.hash`` is its SHA-256 and ``otelguard.audit.prev_hash`` the previous
record's hash (64 zeros for the first), so a deleted record leaves a gap in ``seq`` and a broken
link, and an edited one no longer matches its hash. What the chain cannot show by itself is a cut
tail: the head's seq is exported as ``otelguard_response_audit_seq`` so a chain that ends before
the last seq Prometheus saw is visible too.

The records go to their own stream (``otelguard.stream=audit``), carry the triggering trace's id
(so Jaeger and Loki link them to the detection), and are written by the store under its lock,
which is what makes the chain a single sequence across the pipeline and the CLI.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, SeverityNumber

import otelguard
from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs
from otelguard.response.request import NEW, ResponseRequest, Transition

GENESIS = "0" * 64
MAX_TEXT = 2000  # a reason or outcome longer than this is cut (records stay Loki-sized)
# Every attribute an audit record may carry, hashed or not (the hash itself is not)
KEYS = (S.AUDIT_CHAIN, S.AUDIT_SEQ, S.AUDIT_PREV_HASH, S.AUDIT_HASH, S.AUDIT_TIME,
        S.RESPONSE_REQUEST_ID, S.RESPONSE_STATE_FROM, S.RESPONSE_STATE_TO, S.RESPONSE_ACTOR,
        S.RESPONSE_REASON, S.RESPONSE_POLICY_NAME, S.RESPONSE_POLICY_REVISION, S.RESPONSE_MODE,
        S.RESPONSE_DRY_RUN, S.RESPONSE_ACTIONS, S.RESPONSE_CHANGES_HASH, S.RESPONSE_TARGET,
        S.RESPONSE_TRIGGER_UID, S.RESPONSE_OUTCOME, S.INCIDENT_ID, S.K8S_NAMESPACE_NAME,
        S.K8S_NODE_NAME)


@dataclass(frozen=True)
class AuditRecord:
    """One transition as the chain holds it; ``where`` says where it was read (messages)."""

    attributes: Mapping[str, Union[str, int, bool]]
    body: str
    trace_id: str = ""  # hex; not hashed (a backend may drop it)
    where: str = ""

    @property
    def seq(self) -> int:
        try:
            return int(self.attributes.get(S.AUDIT_SEQ, 0))
        except (TypeError, ValueError):
            return 0

    @property
    def chain(self) -> str:
        return str(self.attributes.get(S.AUDIT_CHAIN, ""))

    @property
    def hash(self) -> str:
        return str(self.attributes.get(S.AUDIT_HASH, ""))

    @property
    def prev_hash(self) -> str:
        return str(self.attributes.get(S.AUDIT_PREV_HASH, ""))

    def to_json(self) -> dict[str, Any]:
        return {"attributes": dict(self.attributes), "body": self.body, "trace_id": self.trace_id}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def canonical(attributes: Mapping[str, Any], body: str) -> bytes:
    """The bytes a record's hash is taken over (see the module docstring)."""
    attrs = {k: _text(v) for k, v in sorted(attributes.items()) if k != S.AUDIT_HASH}
    return json.dumps({"attributes": attrs, "body": body}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False).encode()


def digest(attributes: Mapping[str, Any], body: str) -> str:
    return hashlib.sha256(canonical(attributes, body)).hexdigest()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def outcome_text(req: ResponseRequest) -> str:
    """What the steps did, one clause each (for Done, Failed, Reverted)."""
    parts = []
    for s in req.steps:
        if s.reverted is not None:
            parts.append(f"{s.action}: reverted: {s.reverted.message}")
        elif s.outcome is not None:
            parts.append(f"{s.action}: {'ok' if s.outcome.ok else 'failed'}: "
                         f"{s.outcome.message}")
        elif s.error:
            parts.append(f"{s.action}: error: {s.error}")
    return "; ".join(parts)


def record_for(req: ResponseRequest, tr: Transition, *, chain: str, seq: int,
               prev_hash: str) -> AuditRecord:
    """The chained record of transition ``tr`` of ``req``."""
    attrs: dict[str, Union[str, int, bool]] = {
        S.AUDIT_CHAIN: chain, S.AUDIT_SEQ: seq, S.AUDIT_PREV_HASH: prev_hash,
        S.AUDIT_TIME: iso(tr.at), S.RESPONSE_REQUEST_ID: req.id, S.RESPONSE_STATE_FROM: tr.frm,
        S.RESPONSE_STATE_TO: tr.to, S.RESPONSE_ACTOR: tr.by, S.RESPONSE_REASON: _cut(tr.reason),
        S.RESPONSE_POLICY_NAME: req.policy, S.RESPONSE_POLICY_REVISION: req.policy_revision,
        S.RESPONSE_MODE: req.mode, S.RESPONSE_DRY_RUN: req.dry_run,
        S.RESPONSE_ACTIONS: ",".join(s.action for s in req.steps),
        S.RESPONSE_CHANGES_HASH: req.changes_hash,
        S.RESPONSE_TARGET: req.steps[0].change.summary if req.steps else "",
        S.RESPONSE_TRIGGER_UID: req.trigger.uid, S.INCIDENT_ID: req.trigger.incident_id,
        S.K8S_NAMESPACE_NAME: req.target.namespace or "", S.K8S_NODE_NAME: req.node,
    }
    if tr.to in ("Done", "Failed", "Reverted"):
        attrs[S.RESPONSE_OUTCOME] = _cut(outcome_text(req))
    attrs = {k: v for k, v in attrs.items() if v != ""}
    by = f" by {tr.by}" if tr.by else ""
    why = f": {tr.reason}" if tr.reason else ""
    what = "proposed" if tr.frm == NEW else f"{tr.frm} -> {tr.to}"
    body = _cut(f"{req.id} {what}{by}{why} [{req.policy}: "
                f"{req.steps[0].change.summary if req.steps else 'no change'}]")
    attrs[S.AUDIT_HASH] = digest(attrs, body)
    trace = req.trigger.trace_ids[0] if req.trigger.trace_ids else ""
    return AuditRecord(attrs, body, trace)


def to_resource_logs(records: Iterable[AuditRecord], resource: Optional[Mapping[str, Any]] = None
                     ) -> ResourceLogs:
    """The records as one ResourceLogs on the audit stream (scope ``otelguard.processors``)."""
    rl = ResourceLogs(schema_url=S.SEMCONV_SCHEMA_URL)
    res = {k: v for k, v in (resource or {}).items() if k != S.STREAM}
    res[S.STREAM] = S.STREAM_AUDIT
    set_attrs(rl.resource.attributes, res)
    sl = rl.scope_logs.add()
    sl.scope.name = S.SCOPE_PROCESSORS
    sl.scope.version = otelguard.__version__
    for r in records:
        rec = sl.log_records.add()
        at = str(r.attributes.get(S.AUDIT_TIME, ""))
        try:
            rec.time_unix_nano = int(datetime.fromisoformat(at.replace("Z", "+00:00"))
                                     .timestamp() * 1e9)
        except ValueError:
            rec.time_unix_nano = time.time_ns()
        rec.observed_time_unix_nano = time.time_ns()
        rec.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
        rec.severity_text = "INFO"
        rec.event_name = S.EV_RESPONSE_AUDIT
        rec.body.string_value = r.body
        if r.trace_id:
            rec.trace_id = bytes.fromhex(r.trace_id)
        set_attrs(rec.attributes, dict(r.attributes))
    return rl


# --- verification ------------------------------------------------------------------------------

@dataclass
class Verification:
    """The result of :func:`verify`: ``problems`` in chain order, the first one first."""

    records: int = 0
    chains: dict[str, tuple[int, int]] = field(default_factory=dict)  # chain -> (first, last) seq
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(records: Iterable[AuditRecord], complete: bool = True) -> Verification:
    """Check every chain in ``records`` (any order; identical duplicates, as a backend may
    deliver twice, count once): each record hashes to its ``hash``, seqs follow one another
    without a gap, and each ``prev_hash`` is the previous record's hash. ``complete``: the
    records are the whole chain (a local file), so it must start at seq 1; otherwise (a time
    range read from Loki) a chain is checked from its first record, with a note."""
    out = Verification()
    by_chain: dict[str, dict[int, AuditRecord]] = {}
    for r in records:
        out.records += 1
        seqs = by_chain.setdefault(r.chain, {})
        seen = seqs.get(r.seq)
        if seen is None:
            seqs[r.seq] = r
        elif seen.hash != r.hash or seen.body != r.body or \
                dict(seen.attributes) != dict(r.attributes):
            out.problems.append(f"chain {r.chain} seq {r.seq}: two different records "
                                f"({_at(seen)} and {_at(r)})")
    for chain, seqs in sorted(by_chain.items()):
        order = sorted(seqs)
        out.chains[chain] = (order[0], order[-1])
        if order[0] != 1 and complete:
            out.problems.append(f"chain {chain}: seqs 1..{order[0] - 1} missing (before seq "
                                f"{order[0]}{_at(seqs[order[0]], ' ')})")
        elif order[0] != 1:
            out.notes.append(f"chain {chain} starts at seq {order[0]} (earlier records are "
                             f"outside what was read, or missing)")
        prev: Optional[AuditRecord] = None
        for seq in order:
            r = seqs[seq]
            want = digest(r.attributes, r.body)
            if want != r.hash:
                out.problems.append(f"chain {chain} seq {seq}{_at(r, ' ')}: record edited: its "
                                    f"content hashes to {want[:16]}…, it says {r.hash[:16]}…")
            if prev is None:
                if seq == 1 and r.prev_hash != GENESIS:
                    out.problems.append(f"chain {chain} seq 1{_at(r, ' ')}: prev_hash is not "
                                        f"the genesis value")
            elif seq != prev.seq + 1:
                missing = (f"seq {prev.seq + 1}" if seq == prev.seq + 2
                           else f"seqs {prev.seq + 1}..{seq - 1}")
                out.problems.append(f"chain {chain}: {missing} missing (between seq {prev.seq}"
                                    f"{_at(prev, ' ')} and seq {seq}{_at(r, ' ')})")
            elif r.prev_hash != prev.hash:
                out.problems.append(f"chain {chain} seq {seq}{_at(r, ' ')}: prev_hash "
                                    f"{r.prev_hash[:16]}… is not seq {prev.seq}'s hash "
                                    f"{prev.hash[:16]}…")
            prev = r
    return out


def _at(r: AuditRecord, lead: str = "") -> str:
    return f"{lead}({r.where})" if r.where else ""


def read_jsonl(path: Union[str, Path]) -> list[AuditRecord]:
    """The records of a local audit file (one JSON object per line, as the store writes);
    a line that is not a record is kept as an empty record so the chain shows the break."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                d = json.loads(line)
                out.append(AuditRecord(dict(d["attributes"]), str(d["body"]),
                                       str(d.get("trace_id", "")), where))
            except (ValueError, KeyError, TypeError):
                out.append(AuditRecord({}, line.rstrip("\n"), "", where))
    return out


def from_loki(labels: Mapping[str, str], line: str, where: str = "") -> AuditRecord:
    """A record from a Loki entry: structured metadata keys have ``.`` written ``_``."""
    attrs = {k: labels[k.replace(".", "_")] for k in KEYS if k.replace(".", "_") in labels}
    return AuditRecord(attrs, line, labels.get("trace_id", ""), where)


def report(result: Verification) -> str:
    """What ``otelguard audit verify`` prints."""
    lines = [f"{result.records} record(s), {len(result.chains)} chain(s)"]
    for chain, (first, last) in sorted(result.chains.items()):
        lines.append(f"  chain {chain}: seq {first}..{last}")
    lines += [f"note: {n}" for n in result.notes]
    if result.ok:
        lines.append("OK: every record matches its hash and links to the one before")
    else:
        lines.append(f"BROKEN: first break: {result.problems[0]}")
        lines += [f"  also: {p}" for p in result.problems[1:]]
    return "\n".join(lines)
