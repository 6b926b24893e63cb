"""A bounded on-disk spool of serialized OTLP requests, replayed oldest first.

When the next hop stays down, :class:`~otelguard.transport.delivery.Delivery` writes each
request here as one file (``<seq>-<logs|traces>-<records>.pb``, written to a temp name and
renamed, so a crash never leaves half a request under a real name). The spool survives agent
restarts: it rescans its directory at start. It is bounded by bytes; a request that does not fit
is refused (the spool stays a gap-free prefix of the stream) and its records are counted in
``telemetry.dropped{stage="spool", reason="full"}``; a failed write (disk full) likewise with
reason ``disk_full``/``io_error``. Nothing is lost below the limit. No fsync: the spool protects
against a down endpoint, not against power loss.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from typing import Optional

from otelguard import telemetry
from otelguard.transport.contract import TransportError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{12})-(logs|traces)-(\d+)\.pb$")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    kind: str  # "logs" | "traces"
    records: int
    size: int
    path: str

    def read(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()


class Spool:
    def __init__(self, directory: str, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise TransportError(f"spool max_bytes must be > 0, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"spool: cannot create {directory!r}: {exc}") from exc
        self._entries: deque[SpoolEntry] = deque()
        self.bytes_used = 0
        found = []
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)  # an interrupted write: never acknowledged as spooled
                continue
            m = _NAME.match(name)
            if m:
                found.append(SpoolEntry(int(m.group(1)), m.group(2), int(m.group(3)),
                                        os.path.getsize(path), path))
        for entry in sorted(found, key=lambda e: e.seq):
            self._entries.append(entry)
            self.bytes_used += entry.size
        self._next_seq = (found and max(e.seq for e in found) + 1) or 1

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def records(self) -> int:
        return sum(e.records for e in self._entries)

    def put(self, kind: str, data: bytes, records: int) -> bool:
        """Store one request; False (and counted as dropped) when it does not fit or fails."""
        if self.bytes_used + len(data) > self.max_bytes:
            self._drop(records, "full", f"spool {self.directory} full "
                       f"({self.bytes_used}+{len(data)} > {self.max_bytes} bytes)")
            return False
        seq = self._next_seq
        self._next_seq += 1
        path = os.path.join(self.directory, f"{seq:012d}-{kind}-{records}.pb")
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            reason = "disk_full" if exc.errno == errno.ENOSPC else "io_error"
            self._drop(records, reason, f"spool write {path}: {exc}")
            return False
        self._entries.append(SpoolEntry(seq, kind, records, len(data), path))
        self.bytes_used += len(data)
        return True

    def oldest(self) -> Optional[SpoolEntry]:
        return self._entries[0] if self._entries else None

    def remove(self, entry: SpoolEntry) -> None:
        """Forget the oldest entry (after it was delivered, or dropped by the caller)."""
        if not self._entries or self._entries[0].seq != entry.seq:
            raise TransportError(f"spool: remove out of order (seq {entry.seq})")
        self._entries.popleft()
        self.bytes_used -= entry.size
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass

    def _drop(self, records: int, reason: str, message: str) -> None:
        telemetry.dropped.labels("spool", reason).inc(records)
        log.error("%s: %d records dropped", message, records)
