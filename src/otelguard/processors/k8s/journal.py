"""k8s_attributes' held Resources in a journal, so that a crash loses none it acknowledged.

A Resource the stage holds (its pod is not known yet) was taken from a request that is answered
OK right after; with ``service.state_dir`` set it is *live* in the journal from the moment it is
held (written ahead and fsynced before that answer: the request changed held state) until it is
*settled*: released into a batch that was forwarded, or whose loss was counted. One entry is one
change set: Resources held (``h``: id, due time as wall-clock seconds, signal ``l``/``s``, length
of its bytes) and ids settled (``s``), as processors/journal.py's ``pack`` with the held
Resources' serialized ``ResourceLogs``/``ResourceSpans`` back to back as the body. A compaction
snapshot is one entry holding every live Resource. A start re-holds every live one, held or
released but not yet settled alike: a duplicate downstream (same ``log.record.uid``), never a
loss. docs/architecture.md#failure-handling.

Cost per held Resource: one ``SerializeToString`` and its bytes kept until settled (at most
``max_held_batches`` held, plus those released and not yet forwarded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from otelguard.processors.journal import Journal, JournalWrite, pack, replay, unpack

ResourceItem = Union[ResourceLogs, ResourceSpans]


class _Live:
    __slots__ = ("due", "signal", "data")

    def __init__(self, due: float, signal: str, data: bytes) -> None:
        self.due = due
        self.signal = signal
        self.data = data


def _encode(held: list[tuple[int, _Live]], settled: list[int]) -> bytes:
    header = {"h": [[rid, e.due, e.signal, len(e.data)] for rid, e in held], "s": settled}
    return pack(header, b"".join(e.data for _, e in held))


class HoldJournal:
    """The live held Resources of one stage and the change set not yet written. Called under
    the stage's lock; :meth:`write` hands the change set to the pipeline (Pipeline.persist)."""

    def __init__(self, path: Path, compact_bytes: int) -> None:
        self.journal = Journal(path, compact_bytes)
        self._live: dict[int, _Live] = {}
        self._held: list[tuple[int, _Live]] = []
        self._settled: list[int] = []

    def recover(self, stage: str) -> list[tuple[int, float, ResourceItem]]:
        """Open the journal and return what it holds live, in hold order: (id, due time,
        Resource). A torn tail or damaged entry is counted (``stage``/``journal_torn``) and
        ignored. The journal is rewritten from that state."""
        replay(self.journal, stage, self._apply)
        out: list[tuple[int, float, ResourceItem]] = []
        for rid in sorted(self._live):
            e = self._live[rid]
            item = (ResourceLogs if e.signal == "l" else ResourceSpans).FromString(e.data)
            out.append((rid, e.due, item))
        self.journal.rewrite([self._snapshot()])
        return out

    def _apply(self, payload: bytes) -> None:
        header, body = unpack(payload)
        pos = 0
        for rid, due, signal, n in header["h"]:
            if signal not in ("l", "s") or pos + n > len(body):
                raise ValueError("held Resource out of range")
            self._live[int(rid)] = _Live(float(due), signal, body[pos:pos + n])
            pos += n
        for rid in header["s"]:
            self._live.pop(rid, None)

    def hold(self, rid: int, due: float, item: ResourceItem) -> None:
        e = _Live(due, "l" if isinstance(item, ResourceLogs) else "s", item.SerializeToString())
        self._live[rid] = e
        self._held.append((rid, e))

    def settle(self, rids: list[int]) -> None:
        for rid in rids:
            if self._live.pop(rid, None) is not None:
                self._settled.append(rid)

    @property
    def live(self) -> int:
        return len(self._live)

    def write(self) -> Optional[JournalWrite]:
        """The change set since the last call (None if nothing changed)."""
        if not self._held and not self._settled:
            return None
        held, settled = self._held, self._settled
        self._held, self._settled = [], []
        return self.journal.write_for(lambda: _encode(held, settled), self._snapshot)

    def _snapshot(self) -> bytes:
        return _encode(sorted(self._live.items()), [])

    def close(self) -> None:
        self.journal.close(self.write())
