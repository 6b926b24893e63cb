"""What ``otelguard run``'s status line costs, and what `rich` would cost instead.

1. The agent's hot path (bench/hot_path.py's decode + OTLP encode of file-open records) timed
   in wall-clock time with and without a live status line drawing on a terminal stand-in
   (``Terminal(live=True)`` over an in-memory stream), alternated pass by pass in one run,
   best of ``--repeat``. The status runs at 20 Hz (20x the default rate) so that a cost would
   show; ratio = with / without.
2. One status draw (sample the counters, render, write), with otelguard's counters populated
   as after a busy run (40 event names, 200 detection label sets).
3. A detection line: our renderer + terminal write vs `rich` printing the same text
   (``Console(force_terminal=True).print``), and the import time of each, when `rich` is
   importable (it is not a dependency: put it on PYTHONPATH to compare).

Run: ``.venv/bin/python -m bench.console_status`` (``--quick``).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from typing import Callable

from bench.common import open_record, summary_line
from otelguard import semconv as S
from otelguard import telemetry
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.file import FileProbe
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.proctable import ProcessTable
from otelguard.ebpf.sensor import EventContext
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import attrs_dict
from otelguard.status import StatusLine
from otelguard.transport.console import render_record
from otelguard.transport.terminal import Terminal

NODE = NodeIdentity("node-1", "host-1", "0123456789abcdef0123456789abcdef")
BATCH = 512


def hot_path(n: int) -> Callable[[], float]:
    clock = KernelClock()
    ctx = EventContext(ProcessTable(clock), CgroupResolver(), clock, ProbeConfig())
    raw = open_record("/tmp/otelguard-bench/file.dat")
    probe = FileProbe()
    builder = OtlpBuilder(NODE)

    def run() -> float:
        t0 = time.perf_counter()
        evs = [probe.decode(20, raw, ctx) for _ in range(n)]
        for i in range(0, n, BATCH):
            builder.logs_bytes(evs[i:i + BATCH])  # type: ignore[arg-type]
        return (time.perf_counter() - t0) / n * 1e6
    return run


def populate() -> None:
    for i in range(40):
        telemetry.events.labels(f"otelguard.event.{i}").inc(1000 + i)
    for i in range(200):
        telemetry.detections.labels(f"rule {i % 50}", ("CRITICAL", "WARNING", "NOTICE")[i % 3],
                                    "execution", f"ns{i % 7}", f"w{i}").inc()
    for i in range(10):
        telemetry.dropped.labels(f"stage{i}", "full").inc(i)


def import_ms(module: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", f"import time; t=time.perf_counter(); "
                              f"import {module}; print(time.perf_counter()-t)"],
                             capture_output=True, text=True, check=True)
        best = min(best, float(out.stdout) * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10k events, 3 passes")
    args = ap.parse_args()
    if args.quick:
        args.events, args.repeat = 10_000, 3
    populate()
    run = hot_path(args.events)
    run()  # warm the process table and caches
    off, on = float("inf"), float("inf")
    for _ in range(args.repeat):
        off = min(off, run())
        status = StatusLine(Terminal(io.StringIO(), live=True), interval_s=0.05)
        status.start()
        try:
            on = min(on, run())
        finally:
            status.stop()
    print(f"hot path (decode + encode), wall, best of {args.repeat}: without status "
          f"{off:.2f} us/event, with a 20 Hz live status {on:.2f} us/event -> x{on / off:.3f}")

    terminal = Terminal(io.StringIO(), live=True)
    line = StatusLine(terminal, interval_s=1.0)
    draws = 500
    t0 = time.perf_counter()
    for _ in range(draws):
        line.draw()
    draw_us = (time.perf_counter() - t0) / draws * 1e6
    print(f"one status draw (sample + render + write): {draw_us:.0f} us "
          f"= {draw_us / 1e4:.3f}% of a core at the default 1 Hz")

    from tests.support.incidents import batch, detection, event, pod, trace

    raw = event(S.EV_FILE_OPEN, 201, trace("t"), attrs={S.FILE_PATH: "/etc/shadow"})
    req = batch(pod(), [raw], [detection(raw, "Read sensitive file untrusted", 21,
                                         "credential_access", "T1555")])
    rl = req.resource_logs[-1]
    res, rec = attrs_dict(rl.resource.attributes), rl.scope_logs[0].log_records[0]
    lines = 2000
    t0 = time.perf_counter()
    for _ in range(lines):
        terminal.write(render_record(res, rec, colour=True) + "\n")
    ours_us = (time.perf_counter() - t0) / lines * 1e6
    ours_import = import_ms("otelguard.transport.console", args.repeat)
    result = {"events": args.events, "hot_path_us": round(off, 3),
              "hot_path_with_status_us": round(on, 3), "with_status_ratio": round(on / off, 3),
              "status_draw_us": round(draw_us, 1), "detection_line_us": round(ours_us, 1),
              "console_import_ms": round(ours_import, 1)}
    print(f"detection line, ours: {ours_us:.1f} us; import otelguard.transport.console "
          f"{ours_import:.0f} ms")
    try:
        from rich.console import Console
        from rich.text import Text
    except ImportError:
        print("rich: not importable (not a dependency); PYTHONPATH=<dir with rich> to compare")
    else:
        console = Console(file=io.StringIO(), force_terminal=True, width=160)
        plain = render_record(res, rec, colour=False)
        t0 = time.perf_counter()
        for _ in range(lines):
            console.print(Text(plain, style="bold red"))
        rich_us = (time.perf_counter() - t0) / lines * 1e6
        rich_import = import_ms("rich.console", args.repeat)
        print(f"detection line, rich: {rich_us:.1f} us (x{rich_us / ours_us:.1f}); "
              f"import rich.console {rich_import:.0f} ms")
        result.update(rich_line_us=round(rich_us, 1), rich_import_ms=round(rich_import, 1))
    print(summary_line("console_status", result))


if __name__ == "__main__":
    main()
