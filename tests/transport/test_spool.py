"""The spool on disk: durable before acknowledged, damaged files quarantined and counted, never
counted as delivered; replay counts exactly what the endpoint accepted."""

from __future__ import annotations

import errno
import os
import random
import zlib
from pathlib import Path
from typing import Callable

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard.transport import Delivery, InMemoryTransport, Spool
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.spool import QUARANTINE_MAX_FILES, SpoolEntry
from otelguard.transport.security import INSECURE_CLIENT
from tests.transport.receivers import GrpcReceiver
from tests.transport.batches import FAST, batches as _batches, dropped as _dropped


def _spooled(directory: Path, count: int) -> tuple[Spool, list[tuple[bytes, int]]]:
    """A spool holding ``count`` real requests, written by a Delivery whose endpoint is down."""
    t = InMemoryTransport()
    t.fail()
    spool = Spool(str(directory), 10**7)
    d = Delivery(t, spool, FAST, sleep=lambda s: None)
    batches = _batches(count)
    for data, n in batches:
        assert d.send_logs(data, n)
    assert len(spool) == count and len(list(directory.glob("*-logs-*.pb"))) == count
    return spool, batches


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.pb"))


def _named(directory: Path, seq: int, records: int, data: bytes) -> Path:
    """A file named as the spool names its files, with ``data``'s true size and CRC32."""
    path = directory / f"{seq:012d}-logs-{records}-{len(data)}-{zlib.crc32(data):08x}.pb"
    path.write_bytes(data)
    return path


# --- durability ---------------------------------------------------------------------------------

def test_a_request_counts_as_spooled_only_after_file_and_directory_are_fsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(str(tmp_path / "spool"), 10**6)
    steps: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        steps.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        steps.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    data, n = _batches(1)[0]
    assert spool.put("logs", data, n)
    entry = spool.oldest()
    assert entry is not None
    assert steps == [("fsync", entry.path + ".tmp"), ("rename", entry.path),
                     ("fsync", str(tmp_path / "spool"))]


@pytest.mark.parametrize("failing_fsync", [1, 2], ids=["file", "directory"])
def test_a_failed_fsync_is_a_counted_drop_and_leaves_nothing_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_fsync: int) -> None:
    spool = Spool(str(tmp_path), 10**6)
    calls = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_fsync:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    before = _dropped("spool", "io_error")
    data, n = _batches(1)[0]
    assert not spool.put("logs", data, n)
    assert _dropped("spool", "io_error") == before + n
    assert len(spool) == 0 and spool.bytes_used == 0 and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert spool.put("logs", data, n) and len(Spool(str(tmp_path), 10**6)) == 1


# --- damaged files ------------------------------------------------------------------------------

def _truncate_at(fraction: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * fraction)])
    return damage


def _overwrite_with_random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(7).randbytes(path.stat().st_size))


def _one_record_short(path: Path) -> None:
    """A valid request, correctly sized and checksummed, holding fewer records than its name."""
    entry = SpoolEntry.parse(str(path))
    assert entry is not None
    req = ExportLogsServiceRequest.FromString(path.read_bytes())
    del req.resource_logs[-1].scope_logs[-1].log_records[-1]
    path.unlink()
    _named(path.parent, entry.seq, entry.records, req.SerializeToString())


def _empty_but_named_empty(path: Path) -> None:
    """An empty file whose name claims records and the size/CRC32 of nothing (CRC32 of b"" is 0)."""
    entry = SpoolEntry.parse(str(path))
    assert entry is not None
    path.unlink()
    _named(path.parent, entry.seq, entry.records, b"")


DAMAGE = {
    "empty": _truncate_at(0.0),
    "truncated_1_byte": lambda p: p.write_bytes(p.read_bytes()[:1]),
    "truncated_half": _truncate_at(0.5),
    "truncated_last_byte": lambda p: p.write_bytes(p.read_bytes()[:-1]),
    "random_bytes": _overwrite_with_random_bytes,
    "fewer_records_than_named": _one_record_short,
    "empty_named_as_empty": _empty_but_named_empty,
}
RENAMING = {"fewer_records_than_named", "empty_named_as_empty"}  # found by the next start's scan
CASES = [(damage, restart) for damage in sorted(DAMAGE) for restart in (False, True)
         if restart or damage not in RENAMING]


@pytest.mark.parametrize("damage, restart", CASES,
                         ids=[f"{d}-{'after_restart' if r else 'while_running'}" for d, r in CASES])
def test_a_damaged_file_is_quarantined_counted_and_never_delivered(
        tmp_path: Path, damage: str, restart: bool) -> None:
    spool, batches = _spooled(tmp_path, 3)
    victim = _entries(tmp_path)[1]
    original = victim.read_bytes()
    DAMAGE[damage](victim)
    before = _dropped("spool", "corrupt")
    if restart:
        spool = Spool(str(tmp_path), 10**7)
    t = InMemoryTransport()
    d = Delivery(t, spool, FAST)
    delivered = d.replay()
    intact = batches[0][1] + batches[2][1]
    assert delivered == intact == t.log_record_count() == d.stats.replayed_records
    assert _dropped("spool", "corrupt") == before + batches[1][1]
    assert len(spool) == 0 and spool.bytes_used == 0 and _entries(tmp_path) == []
    quarantined = spool.quarantined()
    assert len(quarantined) == 1 and Path(quarantined[0]).read_bytes() != original


def test_replay_counts_what_a_real_receiver_got_when_files_are_damaged(tmp_path: Path) -> None:
    """The measured defect: an empty and a truncated file counted as delivered."""
    _, batches = _spooled(tmp_path, 6)
    files = _entries(tmp_path)
    _truncate_at(0.0)(files[1])
    _truncate_at(0.3)(files[2])
    _overwrite_with_random_bytes(files[4])
    _empty_but_named_empty(files[5])
    before = _dropped("spool", "corrupt")
    spool = Spool(str(tmp_path), 10**7)  # the agent restarts
    receiver = GrpcReceiver().start()
    d = Delivery(OtlpGrpcTransport(receiver.endpoint, timeout_s=10,
                                   tls=INSECURE_CLIENT), spool, FAST)
    try:
        delivered = d.replay()
    finally:
        d.shutdown()
        receiver.stop()
    assert delivered == receiver.log_records() == batches[0][1] + batches[3][1]
    assert _dropped("spool", "corrupt") == before + sum(n for _, n in batches[1:3] + batches[4:])
    assert len(spool.quarantined()) == 4 and _entries(tmp_path) == []


def test_replay_subtracts_partial_success_rejections_and_counts_them(tmp_path: Path) -> None:
    spool, batches = _spooled(tmp_path, 3)
    receiver = GrpcReceiver().start()
    receiver.reject = 2
    before = _dropped("export", "rejected")
    d = Delivery(OtlpGrpcTransport(receiver.endpoint, timeout_s=10,
                                   tls=INSECURE_CLIENT), spool, FAST)
    try:
        delivered = d.replay()
        sent = d.send_logs(*_batches(1)[0])  # a live send after the replay counts the same way
    finally:
        d.shutdown()
        receiver.stop()
    total = sum(n for _, n in batches)
    assert delivered == d.stats.replayed_records == total - 3 * 2
    assert sent and d.stats.sent_records == batches[0][1] - 2
    assert _dropped("export", "rejected") == before + 4 * 2
    assert receiver.log_records() - 4 * 2 == delivered + d.stats.sent_records


def test_the_quarantine_is_bounded_by_files_and_bytes(tmp_path: Path) -> None:
    rnd = random.Random(3)
    for seq in range(1, QUARANTINE_MAX_FILES + 9):
        path = _named(tmp_path, seq, 5, rnd.randbytes(100))
        path.rename(path.with_name(path.name.replace("-100-", "-101-")))  # named a byte longer
    before = _dropped("spool", "corrupt")
    spool = Spool(str(tmp_path), 10**7)
    assert len(spool) == 0 and _dropped("spool", "corrupt") == before + 5 * (QUARANTINE_MAX_FILES + 8)
    assert len(spool.quarantined()) == QUARANTINE_MAX_FILES
    for seq in range(100, 110):
        _named(tmp_path, seq, 5, b"x" * 100).write_bytes(b"x" * 99)
    small = Spool(str(tmp_path), 10**7, quarantine_max_bytes=450)
    kept = small.quarantined()
    assert len(kept) == 4 and sum(os.path.getsize(p) for p in kept) <= 450
    assert all(os.path.getsize(p) == 99 for p in kept)  # the newest: those just quarantined
