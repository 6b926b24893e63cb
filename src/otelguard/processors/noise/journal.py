"""noise_control's held state as journal entries, and its recovery after a crash.

One entry is one change set of the stage (everything since the last persist), applied in this
order: throttles opened or grown (``t``: id, key text, suppressed count, first and last suppressed
time, the last suppressed record as evidence), throttles closed (``c``), records released
(``r``: start, stop and key space exhaustion records, each with its Resource and scope),
released records settled (``s``: forwarded, or counted as dropped), uids of detections that
passed (``p``) or were suppressed and counted (``x``). A compaction snapshot is one entry of the
same shape holding the whole live state. Encoding: ``u32 header length | JSON header |
ExportLogsServiceRequest`` whose ``resource_logs[i]`` carries the record a header item names by
index (processors/journal.py's ``pack``). docs/architecture.md#noise-control.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from otelguard.processors.journal import pack, unpack


@dataclass
class Throttle:
    """An open throttle as the journal knows it."""

    tid: int
    key: str
    suppressed: int
    first_ns: int
    last_ns: int
    evidence: tuple[ResourceLogs, ScopeLogs, LogRecord]


@dataclass
class ChangeSet:
    """What one entry says; the stage fills one between persists (see module doc)."""

    throttles: dict[int, Throttle] = field(default_factory=dict)  # by id, the latest state
    closed: list[int] = field(default_factory=list)
    released: list[tuple[int, tuple[ResourceLogs, ScopeLogs, LogRecord]]] = field(
        default_factory=list)
    settled: list[int] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.throttles or self.closed or self.released or self.settled
                    or self.passed or self.suppressed)


def _pack(req: ExportLogsServiceRequest, item: tuple[ResourceLogs, ScopeLogs, LogRecord]) -> int:
    resource, scope, record = item
    rl = req.resource_logs.add()
    rl.CopyFrom(resource)
    del rl.scope_logs[:]
    sl = rl.scope_logs.add()
    sl.CopyFrom(scope)
    del sl.log_records[:]
    sl.log_records.add().CopyFrom(record)
    return len(req.resource_logs) - 1


def _unpack(rl: ResourceLogs) -> tuple[ResourceLogs, ScopeLogs, LogRecord]:
    sl = rl.scope_logs[0]
    record = LogRecord()
    record.CopyFrom(sl.log_records[0])
    resource, scope = ResourceLogs(), ScopeLogs()
    resource.resource.CopyFrom(rl.resource)
    resource.schema_url = rl.schema_url
    scope.scope.CopyFrom(sl.scope)
    scope.schema_url = sl.schema_url
    return resource, scope, record


def encode(changes: ChangeSet) -> bytes:
    req = ExportLogsServiceRequest()
    header: dict[str, Any] = {
        "t": [[t.tid, t.key, t.suppressed, t.first_ns, t.last_ns, _pack(req, t.evidence)]
              for t in changes.throttles.values()],
        "c": changes.closed,
        "r": [[rid, _pack(req, item)] for rid, item in changes.released],
        "s": changes.settled, "p": changes.passed, "x": changes.suppressed,
    }
    return pack(header, req.SerializeToString())


class Recovered:
    """The state a journal replays to: open throttles, unsettled records, remembered uids."""

    def __init__(self) -> None:
        self.throttles: dict[int, Throttle] = {}
        self.released: dict[int, tuple[ResourceLogs, ScopeLogs, LogRecord]] = {}
        self.uids: OrderedDict[str, bool] = OrderedDict()
        self.max_id = 0

    def apply(self, payload: bytes) -> None:
        """Replay one entry; raises on one that passed its CRC but does not decode (counted by
        processors/journal.py's ``replay``)."""
        header, body = unpack(payload)
        rls = ExportLogsServiceRequest.FromString(body).resource_logs
        for tid, key, count, first, last, idx in header["t"]:
            self.throttles[tid] = Throttle(tid, key, count, first, last, _unpack(rls[idx]))
            self.max_id = max(self.max_id, tid)
        for tid in header["c"]:
            self.throttles.pop(tid, None)
        for rid, idx in header["r"]:
            self.released[rid] = _unpack(rls[idx])
            self.max_id = max(self.max_id, rid)
        for rid in header["s"]:
            self.released.pop(rid, None)
        for uid in header["p"]:
            self.uids[uid] = True
            self.uids.move_to_end(uid)
        for uid in header["x"]:
            self.uids[uid] = False
            self.uids.move_to_end(uid)
