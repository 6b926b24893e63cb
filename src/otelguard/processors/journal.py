"""An append-only journal file of framed entries, for stages whose held state must survive a crash.

The service writes a stage's changes here and fsyncs them before it acknowledges the request that
caused them or forwards anything that depends on them (docs/architecture.md#failure-handling), so
a restart finds every held record it acknowledged. A frame is ``length (u32) | crc32 (u32) |
payload``; a write torn by a crash leaves a frame that is short or fails its CRC: reading stops
there, the bad tail is counted (``torn``) and cut off, never a reason not to start. The file is
rewritten from the stage's live state (temp name, fsync, rename, directory fsync) when it grew past
its compaction size, so it stays about the size of the state it holds.

Two stages keep one journal file each (``<state_dir>/<stage name>.journal``): noise_control
(noise/journal.py) and k8s_attributes (k8s/journal.py). Both write entries of the shape
``u32 header length | JSON header | protobuf body`` (:func:`pack`), replay them through
:func:`replay`, and hand the pipeline a :class:`JournalWrite` from :meth:`Journal.write_for`.

Costs: one ``write`` + ``fsync`` per persisted change set (~0.1-10 ms depending on the disk),
shared by the requests that were waiting for it.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from otelguard import telemetry
from otelguard.config import fsync_dir, write_durably

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_LEN = struct.Struct("<I")
MAX_ENTRY_BYTES = 256 * 1024 * 1024  # a length beyond this is a torn or garbage frame


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def parse(data: bytes) -> tuple[list[bytes], int]:
    """Entries of a journal image, and the offset where the valid prefix ends."""
    entries: list[bytes] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length > MAX_ENTRY_BYTES or end > len(data):
            break
        payload = data[pos + _HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break
        entries.append(payload)
        pos = end
    return entries, pos


def pack(header: Any, body: bytes) -> bytes:
    """One entry: ``u32 header length | JSON header | body``."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head + body


def unpack(payload: bytes) -> tuple[Any, bytes]:
    """The JSON header and the body of an entry made by :func:`pack`."""
    (n,) = _LEN.unpack_from(payload)
    return json.loads(payload[_LEN.size:_LEN.size + n]), payload[_LEN.size + n:]


def replay(journal: Journal, stage: str, apply: Callable[[bytes], None]) -> int:
    """Open ``journal`` and hand each valid entry to ``apply``; an entry that passed its CRC but
    makes ``apply`` raise, and a torn tail, are counted in
    ``otelguard_dropped_total{stage, reason="journal_torn"}`` (entries) and logged, never a
    reason not to start. Returns that count."""
    bad = 0
    for payload in journal.open():
        try:
            apply(payload)
        except Exception:  # noqa: BLE001 - a foreign or damaged entry never stops a start
            bad += 1
    torn = (1 if journal.torn_bytes else 0) + bad
    if torn:
        telemetry.dropped.labels(stage, "journal_torn").inc(torn)
        log.warning("%s: ignored %d damaged journal entr(ies) (%d bytes torn at the tail): "
                    "a write a crash cut short, never acknowledged", journal.path, torn,
                    journal.torn_bytes)
    return torn


class Journal:
    """One journal file. Not thread-safe: the pipeline serialises its writers (Pipeline.persist)."""

    def __init__(self, path: Path, compact_bytes: int) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.torn_bytes = 0
        self._file: Optional[int] = None
        self._size = 0
        self._snapshot_size = 0

    def open(self) -> list[bytes]:
        """Read the valid entries, cut a torn tail off, and open the file for appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        entries, valid = parse(data)
        self.torn_bytes = len(data) - valid
        self._file = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        if self.torn_bytes:
            os.ftruncate(self._file, valid)
            os.fsync(self._file)
        os.lseek(self._file, valid, os.SEEK_SET)
        self._size = valid
        return entries

    @property
    def size(self) -> int:
        return self._size

    def wants_compaction(self) -> bool:
        """Grown past the compaction size and past twice the last rewrite (no thrashing when
        the live state itself is large)."""
        return self._size > max(self.compact_bytes, 2 * self._snapshot_size)

    def append(self, payloads: Iterable[bytes]) -> None:
        """Append entries and fsync: durable when this returns."""
        assert self._file is not None, "journal not open"
        data = b"".join(frame(p) for p in payloads)
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._file, view)
            view = view[written:]
        os.fsync(self._file)
        self._size += len(data)

    def rewrite(self, payloads: Iterable[bytes]) -> None:
        """Replace the whole journal with ``payloads`` atomically (a crash leaves old or new)."""
        assert self._file is not None, "journal not open"
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(frame(p) for p in payloads)
        write_durably(tmp, data, os.O_CREAT | os.O_TRUNC)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        os.close(self._file)
        self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = self._snapshot_size = len(data)

    def write_for(self, changes: Callable[[], bytes],
                  snapshot: Callable[[], bytes]) -> JournalWrite:
        """The next write of a stage with pending changes: its change set appended, or its
        whole live state when the file grew past its compaction size."""
        if self.wants_compaction():
            return JournalWrite(self, [snapshot()], rewrite=True)
        return JournalWrite(self, [changes()], rewrite=False)

    def close(self, last: Optional["JournalWrite"] = None) -> None:
        """Close the file; ``last``, a stage's pending write at shutdown, is written first."""
        if last is not None:
            last.run()
        if self._file is not None:
            os.close(self._file)
            self._file = None


class JournalWrite:
    """Entries a stage handed over under the pipeline's lock, written (and fsynced) outside it."""

    __slots__ = ("journal", "payloads", "rewrite")

    def __init__(self, journal: Journal, payloads: list[bytes], rewrite: bool) -> None:
        self.journal = journal
        self.payloads = payloads
        self.rewrite = rewrite

    def run(self) -> None:
        if self.rewrite:
            self.journal.rewrite(self.payloads)
        else:
            self.journal.append(self.payloads)


class StateDirOnly:
    """The journal protocol of a stage that holds no records but keeps files of its own under
    ``<state_dir>/<stage name>/`` (profiles, risk): no request ever waits for it, and without a
    configured directory its ``_directory`` becomes that one."""

    state_version = 0
    _directory: Optional[Path] = None

    def open_state(self, path: Path, compact_bytes: int) -> None:
        if self._directory is None:
            self._directory = path.parent / path.stem

    def journal_write(self) -> Optional[JournalWrite]:
        return None

    def settle(self, drains: int) -> None:
        pass
