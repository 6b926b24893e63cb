"""Ring readers on the real kernel (ebpf/ringbuf.py): every record arrives in order and intact
through BCC's callback, the native reader and the mmap reader, across the ring's wrap-around;
discarded records are skipped; what the kernel could not reserve is counted, never lost
silently; a waiting reader wakes on the next record; the Sensor runs on each reader."""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable

import pytest

from otelguard.ebpf.errors import SensorError
from otelguard.ebpf.loader import SELFTEST_MAGIC, RingSelftest
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.ringbuf import (
    BPF_MAP_TYPE_RINGBUF, RingError, RingReader, native_available, open_reader, resolve_kind,
    ring_info,
)
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from tests.ebpf.containers import container
from tests.support.metrics import sample

pytestmark = pytest.mark.kernel

NATIVE = pytest.param("native", marks=pytest.mark.skipif(
    not native_available(), reason="otelguard_native not built (make setup needs cargo)"))
KINDS = [NATIVE, "python"]
RECORD = 200  # + 8 header: 4096 is no multiple of 208, so records wrap around the ring's end


def _check(records: list[bytes], seqs: range) -> None:
    """Each record is the program's: magic, the expected sequence number, the fill bytes."""
    assert [int.from_bytes(r[8:16], "little") for r in records] == list(seqs)
    for r, n in zip(records, seqs):
        assert len(r) == RECORD
        assert int.from_bytes(r[:8], "little") == SELFTEST_MAGIC
        assert r[16] == r[RECORD - 1] == n & 0xFF


def _drain_all(reader: RingReader, out: list[bytes]) -> None:
    while batch := reader.drain(64, 0):
        out.extend(batch)


@pytest.mark.parametrize("kind", KINDS)
def test_every_record_arrives_in_order_across_wrap_around(kind: str) -> None:
    n = 5000  # ~250 trips around a 4-page ring, read in batches of at most 64
    with RingSelftest(pages=4, record_size=RECORD) as prog:
        assert ring_info(prog.ring_fd).map_type == BPF_MAP_TYPE_RINGBUF
        reader = open_reader(prog.ring_fd, kind)  # type: ignore[arg-type]
        got: list[bytes] = []
        try:
            for _ in range(n // 50):
                prog.trigger(50)  # 50 x 208 B fit in 16 KiB: the kernel never has to drop
                _drain_all(reader, got)
            assert reader.records == n and reader.discarded == 0
        finally:
            reader.close()
        assert prog.kernel_drops() == 0
    _check(got, range(n))


def test_bcc_callback_gets_the_same_records() -> None:
    """The baseline the readers replace, on the same program and pattern."""
    n = 5000
    got: list[bytes] = []

    def cb(_ctx: Any, data: int, size: int) -> None:
        got.append(ctypes.string_at(data, size))

    with RingSelftest(pages=4, record_size=RECORD) as prog:
        prog.open_callback(cb)
        for _ in range(n // 50):
            prog.trigger(50)
            prog.poll(0)
        assert prog.kernel_drops() == 0
    _check(got, range(n))


@pytest.mark.parametrize("kind", KINDS)
def test_discarded_records_are_skipped(kind: str) -> None:
    with RingSelftest(pages=4, record_size=RECORD, discard_odd=True) as prog:
        reader = open_reader(prog.ring_fd, kind)  # type: ignore[arg-type]
        got: list[bytes] = []
        try:
            for _ in range(20):
                prog.trigger(50)
                _drain_all(reader, got)
            assert (reader.records, reader.discarded) == (500, 500)
        finally:
            reader.close()
    _check(got, range(0, 1000, 2))


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_ring_counts_kernel_drops_and_loses_nothing_silently(kind: str) -> None:
    n = 1000  # a 1-page ring holds 19 records of 208 B: the rest cannot be reserved
    with RingSelftest(pages=1, record_size=RECORD) as prog:
        reader = open_reader(prog.ring_fd, kind)  # type: ignore[arg-type]
        got: list[bytes] = []
        try:
            prog.trigger(n)  # the reader lags: nothing drained meanwhile
            _drain_all(reader, got)
            drops = prog.kernel_drops()
            assert drops > 0 and len(got) + drops == n
            _check(got, range(len(got)))  # the first ones, in order; the rest counted
            prog.trigger(10)  # space again once consumed
            _drain_all(reader, got)
        finally:
            reader.close()
        assert prog.kernel_drops() == drops
    assert [int.from_bytes(r[8:16], "little") for r in got[-10:]] == list(range(n, n + 10))


@pytest.mark.parametrize("kind", KINDS)
def test_a_waiting_reader_wakes_on_the_next_record(kind: str) -> None:
    with RingSelftest(pages=1) as prog:
        reader = open_reader(prog.ring_fd, kind)  # type: ignore[arg-type]
        got: list[bytes] = []
        waited: list[float] = []

        def wait() -> None:
            t0 = time.monotonic()
            got.extend(reader.drain(16, 10_000))
            waited.append(time.monotonic() - t0)

        try:
            assert reader.drain(16, 50) == []  # an empty ring: the timeout, then nothing
            t = threading.Thread(target=wait)
            t.start()
            time.sleep(0.3)
            prog.trigger(1)
            t.join(5)
        finally:
            reader.close()
    assert len(got) == 1 and 0.2 < waited[0] < 5.0  # woken by the record, not the 10 s timeout


def test_a_map_that_is_not_a_ring_is_refused() -> None:
    with RingSelftest() as prog:
        seq_fd = prog.objects.maps["og_selftest_seq"]
        with pytest.raises(RingError, match="not a ring buffer"):
            open_reader(seq_fd, "python")
    with open("/dev/null") as f, pytest.raises(RingError, match="not a BPF map"):
        ring_info(f.fileno())


def test_native_reader_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "otelguard_native", None)  # as if not built
    with RingSelftest() as prog, pytest.raises(RingError, match="make setup"):
        open_reader(prog.ring_fd, "native")


BURST = """
import os
p = "/tmp/og-burst-%d" % os.getpid()
for _ in range(COUNT):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
os.unlink(p)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_sensor_on_each_reader_ships_every_open_or_counts_it(kind: str) -> None:
    """The agent's own path, scoped to one fake container: its 2,000 opens reach the queue as
    events through the reader; with a 1-page ring and a burst of 20,000 some cannot, and each of
    those is in the kernel_ring drop counter. The kernel's dedup of identical opens is off:
    this test is about the reader passing every record, one per open."""
    with container() as c:
        cfg = SensorConfig(probes=("file",), ring_reader=kind,  # type: ignore[arg-type]
                           cgroup_scope=(c.rel_path,), probe=ProbeConfig(dedup_window_ms=0))
        with Sensor(cfg) as s:
            assert s.status.ring_reader == kind
            c.run([sys.executable, "-c", BURST.replace("COUNT", "2000")], timeout=60)
            mine = _opens(s, c.container_id, lambda got: got >= 2000, 20.0)
            assert mine == 2000 and s.stats()["kernel_drops"] == 0
    before = sample("otelguard_dropped_total", stage="kernel_ring", reason="ringbuf_full")
    with container() as c:
        tiny = replace(cfg, probe=ProbeConfig(ringbuf_pages=1, dedup_window_ms=0), queue_size=100_000,
                       cgroup_scope=(c.rel_path,))
        with Sensor(tiny) as s:
            c.run([sys.executable, "-c", BURST.replace("COUNT", "20000")], timeout=60)
            time.sleep(1.2)  # kernel drops are moved into telemetry once a second
            got = _opens(s, c.container_id, lambda _: False, 1.0)
            stats = s.stats()
    assert stats["kernel_drops"] > 0
    # the interpreter's own records (not counted in got) may be among the drops
    assert got < 20000 and got + stats["kernel_drops"] >= 20000
    after = sample("otelguard_dropped_total", stage="kernel_ring", reason="ringbuf_full")
    assert after - before >= stats["kernel_drops"]


def _opens(s: Sensor, container_id: str, enough: Callable[[int], bool], within_s: float) -> int:
    """The BURST's file.open events drained within ``within_s`` or until ``enough``."""
    got = 0
    deadline = time.monotonic() + within_s
    while not enough(got) and time.monotonic() < deadline:
        got += sum(1 for e in s.drain(100_000, 0.1)
                   if e.container_id == container_id and e.name == "otelguard.file.open"
                   and str(e.get("file.path", "")).startswith("/tmp/og-burst-"))
    return got


def test_sensor_refuses_native_when_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for explicitly, a missing extension is an error; ``auto`` falls back to python."""
    monkeypatch.setitem(sys.modules, "otelguard_native", None)
    assert resolve_kind("auto") == "python" and resolve_kind("bcc") == "bcc"
    with pytest.raises(SensorError, match="make setup"):
        Sensor(SensorConfig(probes=("process",), ring_reader="native")).start()
