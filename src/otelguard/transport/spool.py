"""A bounded on-disk spool of serialized OTLP requests, replayed oldest first.

When the next hop stays down, :class:`~otelguard.transport.delivery.Delivery` writes each
request here as one file of raw protobuf named
``<seq>-<logs|traces>-<records>-<bytes>-<crc32>.pb``. A file counts as spooled only once it is
durable: written to a temp name, fsynced, renamed, and the directory fsynced (so a crash or power
loss after :meth:`Spool.put` returned True cannot lose it; a crash before leaves a ``.tmp`` that
the next start deletes, and the request was never acknowledged as spooled). Cost: two fsyncs per
spooled request, paid only while the next hop is down.

The spool survives agent restarts: it rescans its directory at start. Before a file is replayed
it is verified: its size and CRC32 must be what its name says, and it must parse into exactly
the records its name says. A file that fails (empty, truncated, overwritten, not ours) is moved
into ``quarantine/`` (bounded: the newest :data:`QUARANTINE_MAX_FILES` files within
``quarantine_max_bytes``, older ones deleted) and its records are counted in
``telemetry.dropped{stage="spool", reason="corrupt"}``; it is never sent, so it is never counted
as delivered. Files whose size is already wrong are quarantined at start.

It is bounded by bytes; a request that does not fit is refused (the spool stays a gap-free
prefix of the stream) and its records are counted in ``telemetry.dropped{stage="spool",
reason="full"}``; a failed write or fsync (disk full, EIO) likewise with reason
``disk_full``/``io_error``. Nothing is lost below the limit. A delivered file is unlinked without
an fsync: a crash right after a delivery may send it again (at-least-once, never at-most-once).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Optional

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard import telemetry
from otelguard.otlp.messages import count_records
from otelguard.transport.contract import TransportError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{12})-(logs|traces)-(\d+)-(\d+)-([0-9a-f]{8})\.pb$")
QUARANTINE = "quarantine"
QUARANTINE_MAX_FILES = 32
QUARANTINE_MAX_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    seq: int
    kind: str  # "logs" | "traces"
    records: int
    size: int  # bytes, as named
    crc32: int  # of the file's bytes, as named
    path: str

    @staticmethod
    def parse(path: str) -> Optional["SpoolEntry"]:
        m = _NAME.match(os.path.basename(path))
        if m is None:
            return None
        return SpoolEntry(int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)),
                          int(m.group(5), 16), path)

    def problem(self, data: bytes) -> str:
        """Why ``data`` is not the request this entry names ("" when it is)."""
        if len(data) != self.size:
            return f"{len(data)} bytes, named {self.size}"
        if zlib.crc32(data) != self.crc32:
            return "CRC32 mismatch"
        msg = ExportLogsServiceRequest() if self.kind == "logs" else ExportTraceServiceRequest()
        try:
            msg.ParseFromString(data)
        except (DecodeError, ValueError) as exc:
            return f"not an OTLP {self.kind} request: {exc}"
        found = count_records(msg)
        return "" if found == self.records else f"{found} records, named {self.records}"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, directory: str, max_bytes: int,
                 quarantine_max_bytes: int = QUARANTINE_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise TransportError(f"spool max_bytes must be > 0, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.quarantine_dir = os.path.join(directory, QUARANTINE)
        self.quarantine_max_bytes = quarantine_max_bytes
        try:
            existed = os.path.isdir(directory)
            os.makedirs(directory, exist_ok=True)
            if not existed:  # the new directory's own entry must be durable too
                fsync_dir(os.path.dirname(os.path.abspath(directory)))
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
            entry = SpoolEntry.parse(path)
            if entry is None:
                continue
            size = os.path.getsize(path)
            if size != entry.size:
                self._quarantine(entry, f"{size} bytes, named {entry.size}")
                continue
            found.append(entry)
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
        """Store one request durably; False (and counted as dropped) when it does not fit or the
        write or an fsync fails."""
        if self.bytes_used + len(data) > self.max_bytes:
            self._drop(records, "full", f"spool {self.directory} full "
                       f"({self.bytes_used}+{len(data)} > {self.max_bytes} bytes)")
            return False
        seq = self._next_seq
        self._next_seq += 1
        crc = zlib.crc32(data)
        path = os.path.join(self.directory, f"{seq:012d}-{kind}-{records}-{len(data)}-{crc:08x}.pb")
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(self.directory)
        except OSError as exc:
            for leftover in (tmp, path):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
            reason = "disk_full" if exc.errno == errno.ENOSPC else "io_error"
            self._drop(records, reason, f"spool write {path}: {exc}")
            return False
        self._entries.append(SpoolEntry(seq, kind, records, len(data), crc, path))
        self.bytes_used += len(data)
        return True

    def oldest(self) -> Optional[SpoolEntry]:
        return self._entries[0] if self._entries else None

    def read(self, entry: SpoolEntry) -> Optional[bytes]:
        """The oldest entry's request, verified (module doc). None when it failed verification:
        then it is quarantined, counted as dropped and no longer in the spool. An OSError (the
        file removed or unreadable behind our back) is the caller's to count."""
        with open(entry.path, "rb") as fh:
            data = fh.read()
        problem = entry.problem(data)
        if not problem:
            return data
        self._forget(entry)
        self._quarantine(entry, problem)
        return None

    def remove(self, entry: SpoolEntry) -> None:
        """Forget the oldest entry (after it was delivered, or dropped by the caller)."""
        self._forget(entry)
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            pass

    def quarantined(self) -> list[str]:
        """The quarantined files' paths, oldest first."""
        try:
            names = sorted(os.listdir(self.quarantine_dir))
        except FileNotFoundError:
            return []
        return [os.path.join(self.quarantine_dir, n) for n in names]

    # ------------------------------------------------------------------------------------------
    def _forget(self, entry: SpoolEntry) -> None:
        if not self._entries or self._entries[0].seq != entry.seq:
            raise TransportError(f"spool: remove out of order (seq {entry.seq})")
        self._entries.popleft()
        self.bytes_used -= entry.size

    def _quarantine(self, entry: SpoolEntry, problem: str) -> None:
        """Move a bad file aside (named by when, so the newest are kept), count its records."""
        self._drop(entry.records, "corrupt", f"spool {entry.path}: {problem}; quarantined")
        target = os.path.join(self.quarantine_dir,
                              f"{time.time_ns():020d}-{os.path.basename(entry.path)}")
        try:
            os.makedirs(self.quarantine_dir, exist_ok=True)
            os.replace(entry.path, target)
        except OSError as exc:
            log.error("spool: cannot quarantine %s (%s); deleting it", entry.path, exc)
            try:
                os.unlink(entry.path)
            except OSError:
                pass
        self._trim_quarantine()

    def _trim_quarantine(self) -> None:
        kept, total = 0, 0
        for path in reversed(self.quarantined()):  # newest first
            try:
                size = os.path.getsize(path)
                if kept < QUARANTINE_MAX_FILES and total + size <= self.quarantine_max_bytes:
                    kept, total = kept + 1, total + size
                else:
                    os.unlink(path)
            except OSError:
                pass

    def _drop(self, records: int, reason: str, message: str) -> None:
        telemetry.dropped.labels("spool", reason).inc(records)
        log.error("%s: %d records dropped", message, records)
