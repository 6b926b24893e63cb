"""The agent's hot path without the kernel: a file-open record -> Event -> OTLP logs bytes.

Records shaped exactly like ``bench/syscall_loop.c``'s (an openat O_WRONLY by this process, in
this process's cgroup) go through the real ``FileProbe.decode`` with a real sensor
``EventContext`` (process table, cgroup cache, clock), then ``OtlpBuilder.logs_bytes`` in
batches of 512. CPU time of this thread, best of ``--repeat`` passes.

Baseline in the same run: the same events with their process part merged into one flat dict
(``ev.attrs = dict(ev.attrs)``: what the exporter got before the sensor handed over a shared
``ProcessAttrs``), so the ratio is what encoding the process block once per process buys.
Ring readers (``--readers``, root: a real BPF ring buffer): the step before decode, taking
records out of the kernel's ring buffer, for each reader side by side. A tiny program of our own
(loader.RingSelftest) fills the ring with ``--events`` records of the generator record's size
(one ``getppid()`` each, not timed), then the reader empties it (timed, thread CPU): BCC's
``ring_buffer_poll`` with a per-record Python callback (``string_at``, as the sensor's; the
baseline), the native reader's and the mmap reader's batch ``drain`` (ebpf/ringbuf.py). The
reader cost is added to decode + encode for a kernel -> bytes figure per reader.
Native lane (ebpf/lane.py, when the extension is built): the same records through the lane, as
the sensor with ``native_lane`` on hands them over (the process registered by the exporter from
one record first), and the lane's runs through the same builder: record -> bytes side by side
with the Python path's decode + encode, and a check that both requests are byte for byte equal.
Run: ``.venv/bin/python -m bench.hot_path`` (``--quick``, ``--events N``, ``--profile``,
``--readers bcc,native,python``). Needs /proc and cgroup v2 (root and BPF for ``--readers``).
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import time
from typing import Callable, Optional

from bench.common import open_record
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.events import Event
from otelguard.ebpf.file import FileProbe
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.proctable import ProcessTable
from otelguard.ebpf.sensor import EventContext
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity

NODE = NodeIdentity("node-1", "host-1", "0123456789abcdef0123456789abcdef")
BATCH = 512


def best_cpu_us(fn: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        n = fn()
        best = min(best, (time.thread_time() - t0) / n)
    return best * 1e6


def reader_costs(kinds: list[str], n: int, record_size: int, repeat: int) -> dict[str, float]:
    """Thread-CPU µs per record to take ``n`` records out of a full ring, per reader kind."""
    import ctypes
    from typing import Any

    from otelguard.ebpf.loader import RingSelftest
    from otelguard.ebpf.ringbuf import open_reader

    size = (record_size + 7) // 8 * 8
    pages = 1
    while pages * 4096 < n * (size + 8):
        pages *= 2
    got: list[bytes] = []

    def callback(_ctx: Any, data: int, length: int) -> None:
        got.append(ctypes.string_at(data, length))

    out: dict[str, float] = {}
    with RingSelftest(pages=pages, record_size=size) as prog:
        prog.open_callback(callback)
        for kind in kinds:
            reader = None if kind == "bcc" else open_reader(prog.ring_fd, kind)  # type: ignore[arg-type]
            best = float("inf")
            for _ in range(repeat):
                got.clear()
                prog.trigger(n)
                t0 = time.thread_time()
                if reader is None:
                    prog.poll(0)
                else:
                    while batch := reader.drain(4096, 0):
                        got.extend(batch)
                best = min(best, (time.thread_time() - t0) / n)
                if len(got) != n or prog.kernel_drops():
                    raise SystemExit(f"reader {kind}: {len(got)} of {n} records, "
                                     f"{prog.kernel_drops()} kernel drops")
            if reader is not None:
                reader.close()
            out[kind] = best * 1e6
    return out


def lane_cost(ctx: EventContext, raw: bytes, n: int, repeat: int) -> Optional[float]:
    """Thread-CPU µs per record, record -> OTLP bytes through the native lane (None: not
    built). Run after the Python path's figures: it takes over the context's uid counter."""
    from otelguard.ebpf.lane import FastLane, lane_available
    from otelguard.ebpf.sensor import ATTRS_TTL_NS

    if not lane_available():
        return None
    lane = FastLane(ctx.uid_prefix, ctx.probe_config, ATTRS_TTL_NS, 1024)
    ctx.lane, ctx.next_seq, ctx.table.changed = lane, lane.next_seq, lane.forget
    builder = OtlpBuilder(NODE, clock=lambda: 1, lane=lane)
    probe = FileProbe()
    first = probe.decode(20, raw, ctx)
    assert first is not None
    builder.logs_bytes([first])  # the exporter registers the process
    lane.set_offset(ctx.clock.to_wall_ns(0))
    # the lane's request equals the Python path's, uid numbers replayed
    seq = lane.next_seq()
    check = builder.logs_bytes(lane.process([raw] * 4, 1))
    ctx.next_seq, builder.lane = itertools.count(seq + 1).__next__, None
    expected = builder.logs_bytes([e for e in (probe.decode(20, raw, ctx) for _ in range(4))
                                   if e is not None])
    if check != expected:
        raise SystemExit("native lane: its request differs from the Python path's")
    ctx.next_seq, builder.lane = lane.next_seq, lane
    batch = [raw] * BATCH

    def run() -> int:
        lane.set_offset(ctx.clock.to_wall_ns(0))
        batches = range(0, n, BATCH)
        for _ in batches:
            items: list[object] = list(lane.process(batch, 1))
            if any(isinstance(i, bytes) for i in items):  # aged out (2 s): as the sensor does,
                items = [probe.decode(20, i, ctx) if isinstance(i, bytes) else i for i in items]
            builder.logs_bytes(items)  # type: ignore[arg-type]  # Events and LaneRuns
        return len(batches) * BATCH

    return best_cpu_us(run, repeat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10k events, 3 passes")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--readers", default="",
                    help="comma-separated ring readers to time (bcc,native,python; root); the "
                         "first is the baseline")
    args = ap.parse_args()
    if args.quick:
        args.events, args.repeat = 10_000, 3
    n: int = args.events
    clock = KernelClock()
    ctx = EventContext(ProcessTable(clock), CgroupResolver(), clock, ProbeConfig())
    raw = open_record("/tmp/otelguard-bench/file.dat")
    probe = FileProbe()
    events: list[Event] = []

    def decode() -> int:
        events.clear()
        for _ in range(n):
            ev = probe.decode(20, raw, ctx)
            assert ev is not None
            events.append(ev)
        return n

    def encode(evs: list[Event]) -> Callable[[], int]:
        builder = OtlpBuilder(NODE)

        def run() -> int:
            for i in range(0, n, BATCH):
                builder.logs_bytes(evs[i:i + BATCH])
            return n
        return run

    decode_us = best_cpu_us(decode, args.repeat)
    shared = list(events)
    decode()
    flat = list(events)
    for ev in flat:
        ev.attrs = dict(ev.attrs)  # process part merged in: the exporter's input before
    size = len(OtlpBuilder(NODE).logs_bytes(shared[:BATCH])) / BATCH
    enc_shared = best_cpu_us(encode(shared), args.repeat)
    enc_flat = best_cpu_us(encode(flat), args.repeat)
    total, total_flat = decode_us + enc_shared, decode_us + enc_flat
    print(f"events={n} batch={BATCH} record ~{size:,.0f} B; thread CPU, best of {args.repeat}")
    print(f"  decode + event context      {decode_us:6.2f} us/event")
    print(f"  OTLP bytes, process part    {enc_shared:6.2f} us/event")
    print(f"  OTLP bytes, flat attrs      {enc_flat:6.2f} us/event  (baseline)"
          f"  -> process part x{enc_flat / enc_shared:4.2f}")
    print(f"  record -> bytes             {total:6.2f} us/event = {1e6 / total:,.0f} events/s/core"
          f"  (flat: {1e6 / total_flat:,.0f}/s, x{total_flat / total:4.2f})")
    lane_us = lane_cost(ctx, raw, n, args.repeat)
    if lane_us is not None:
        print(f"  native lane: record -> bytes {lane_us:6.2f} us/event = "
              f"{1e6 / lane_us:,.0f} events/s/core  (Python path {total:.2f} us: "
              f"x{total / lane_us:4.1f}); requests byte-identical")
    readers: dict[str, float] = {}
    if args.readers:
        kinds = args.readers.split(",")
        readers = reader_costs(kinds, n, len(raw), args.repeat)
        base = readers[kinds[0]]
        print(f"ring -> records ({n} records of {len(raw)} B from a full ring; thread CPU, "
              f"best of {args.repeat}):")
        for kind, us in readers.items():
            print(f"  reader {kind:<8}             {us:6.2f} us/record  (x{base / us:5.2f} vs "
                  f"{kinds[0]}) -> ring -> bytes {us + total:6.2f} us/event = "
                  f"{1e6 / (us + total):,.0f} events/s/core")
    from bench.common import summary_line

    print(summary_line("hot_path", {
        "events": n, "bytes_per_event": round(size), "decode_us": round(decode_us, 2),
        "encode_us": round(enc_shared, 2), "encode_flat_us": round(enc_flat, 2),
        "events_per_core": round(1e6 / total), "vs_flat": round(total_flat / total, 2),
        "us_per_event": round(total, 3),  # record -> OTLP bytes (bench/aims.py)
        "reader_us": {k: round(v, 3) for k, v in readers.items()},
        "lane_us_per_event": round(lane_us, 3) if lane_us is not None else None,
        "lane_vs_python": round(total / lane_us, 2) if lane_us else None,
    }))
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(decode)
        prof.runcall(encode(list(events)))
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
