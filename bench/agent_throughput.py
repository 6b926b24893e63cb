"""Agent throughput: shipped events per second per core, kernel -> OTLP bytes, and where drops begin.

A rate-controlled generator (bench/syscall_loop.c ``rate``: open(O_WRONLY)+close of a temp file,
each one a shipped ``otelguard.file.open`` event) runs at increasing rates against the real
agent in this process: Sensor (all probes, default config but the per-cgroup budget off: one
process drives every rate, so the budget would cap it) -> queue -> BatchExporter ->
OtlpBuilder.logs_bytes -> a counting sink (``--consumer run`` adds the ``otelguard run``
pipeline). For each step: the generator's achieved rate, events consumed per second, the
agent's CPU (whole process, and the poll + export threads by their CPU clocks), the drops by
stage (``telemetry.dropped``: kernel_ring = ring buffer full, user_queue = queue full). Events
of other processes on the machine are consumed too and counted; the generator's share is shown.

Rates rise x1.6 from ``--start`` until a step is not sustained (a drop, or a backlog that took
more than 0.5 s to drain: the queue hid a deficit); if the first step already fails, rates halve
down to 1000/s. The full mode then bisects once between the last sustained and the first failing
rate. The baseline measured side by side is the
generator alone with no agent loaded (its achievable rate), so the table shows how close the
agent's ceiling is to what the workload can produce. Finally the consumer threads are profiled
with cProfile at the highest drop-free rate (a fresh agent, profiler hooked into its threads at
their start): time in ring-buffer decode, process-table/event context, queue hand-off, OTLP
build (span ids, record encoding) and delivery, and the top functions by own time.

``--workloads opens,mix`` runs the sweep once per workload: ``opens`` is the generator above;
``mix`` is the agent-shaped mix (bench/syscall_loop.c ``mix``: of every 64 operations one fork +
exec + exit, 6 loopback TCP connects, 5 DNS queries, 52 opens), whose records are all kinds the
sensor ships (process, network, DNS, state changes, file). Its rates are operations per second,
its figures records consumed; the mix is slower to generate than opens (an exec costs ~1 ms), so
a sweep stops where the generator reaches less than 80 % of the rate asked (generator-bound: the
agent's figure is taken at the highest rate the generator made).

The generator repeats one open of one path, which the file probe's in-kernel deduplication
counts instead of sending within its window (1 s by default; see ebpf/file.py): with the
default config only about one record per second reaches the agent. ``--dedup-ms 0`` sends
every open, which is what measures the agent; ``--lanes off,on`` sweeps the sensor with its
native lane off and on (ebpf/lane.py) side by side, and each step shows the lane's share.

Run: ``.venv/bin/python -m bench.agent_throughput`` (``--quick`` for seconds, ``--step-s``,
``--start``, ``--max-rate``, ``--no-profile``, ``--lanes``, ``--dedup-ms``, ``--workloads``). Needs
root. Ends
with ``BENCH_SUMMARY {json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import io
import pstats
import queue
import sys
import tempfile
import threading
import time
import typing
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any, Callable, Optional

from bench import aims
from bench.common import (
    CONSUMERS, AgentUnderTest, BenchError, isolated_cgroup, kernel_drop_counts, machine_line,
    open_record, run_loop, summary_line,
)
from otelguard.ebpf.ringbuf import ReaderKind

AIM_PER_CORE = aims.EVENTS_PER_S_PER_CORE
GROWTH = 1.6
MAX_BACKLOG_S = 0.5
MIN_RATE = 1000.0
GENERATOR_BOUND = 0.8  # a step whose generator made less than this share of the rate asked
# bench/syscall_loop.c modes by workload name
WORKLOADS = {"opens": "rate", "mix": "mix"}


@dataclass(frozen=True)
class Step:
    target_per_s: float
    generated: int  # opens the generator made
    generated_per_s: float
    consumed: int  # events the exporter took (all processes)
    wall_s: float  # from generator start until the backlog was drained
    consumed_per_s: float
    process_cpu_s: float
    consumer_cpu_s: float  # poll + export threads
    kernel_drops: int
    queue_drops: int
    log_bytes: int
    backlog_s: Optional[float]  # how long the queue took to empty after the generator stopped
    lane_events: int = 0  # consumed records the native lane encoded

    @property
    def drops(self) -> int:
        return self.kernel_drops + self.queue_drops

    @property
    def generator_bound(self) -> bool:
        """The generator could not make the rate asked: higher rates measure nothing more."""
        return self.generated_per_s < GENERATOR_BOUND * self.target_per_s

    @property
    def sustained(self) -> bool:
        """No drop, and the consumer was never more than ~half a second behind: the queue did
        not merely absorb a rate the consumer cannot keep up with."""
        return not self.drops and self.backlog_s is not None and self.backlog_s <= MAX_BACKLOG_S

    @property
    def per_core(self) -> float:
        return self.consumed / self.process_cpu_s if self.process_cpu_s > 0 else 0.0

    @property
    def per_core_threads(self) -> float:
        return self.consumed / self.consumer_cpu_s if self.consumer_cpu_s > 0 else 0.0

    @property
    def cores(self) -> float:
        return self.process_cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def _drop_total(counts: dict[str, float], stage: str) -> float:
    return sum(v for k, v in counts.items() if k.startswith(stage + "/"))


def run_step(agent: AgentUnderTest, path: str, rate: float, seconds: float,
             mode: str = "rate") -> Step:
    agent.wait_drained(10.0)
    time.sleep(1.05)  # kernel drops are moved into telemetry once a second by the poll thread
    drops0 = kernel_drop_counts()
    c0 = agent.counters()
    t0 = time.monotonic()
    loop = run_loop([mode, path, f"{rate:.0f}", f"{seconds}"], timeout_s=seconds + 60)
    t_gen = time.monotonic()
    backlog = agent.wait_drained(30.0)
    wall = (t_gen - t0) + (backlog if backlog is not None else time.monotonic() - t_gen)
    c1 = agent.counters()
    time.sleep(1.05)
    drops1 = kernel_drop_counts()
    d = c1.minus(c0)
    kernel = _drop_total(drops1, "kernel_ring") - _drop_total(drops0, "kernel_ring")
    queue_ = _drop_total(drops1, "user_queue") - _drop_total(drops0, "user_queue")
    return Step(target_per_s=rate, generated=loop.iterations, generated_per_s=loop.per_s,
                consumed=d.exported, wall_s=wall, consumed_per_s=d.exported / wall,
                process_cpu_s=d.cpu_s, consumer_cpu_s=d.consumer_cpu_s,
                kernel_drops=int(kernel), queue_drops=int(queue_), log_bytes=d.log_bytes,
                backlog_s=backlog, lane_events=d.lane_events)


def print_step(s: Step) -> None:
    print(f"  target {s.target_per_s:>9,.0f}/s  generated {s.generated_per_s:>9,.0f}/s  "
          f"consumed {s.consumed_per_s:>9,.0f}/s  cpu {s.cores:4.2f} cores  "
          f"per core {s.per_core:>9,.0f}/s (threads {s.per_core_threads:>9,.0f}/s)  "
          f"drops kernel {s.kernel_drops} queue {s.queue_drops}  backlog "
          + (f"{s.backlog_s:.2f} s" if s.backlog_s is not None else "not drained")
          + f"  {s.log_bytes / max(1, s.consumed):,.0f} B/event"
          + (f"  lane {100 * s.lane_events / s.consumed:.0f} %" if s.lane_events and s.consumed
             else "")
          + ("" if s.sustained else "  (not sustained)")
          + ("  (generator-bound)" if s.generator_bound else ""), flush=True)


def sweep(agent: AgentUnderTest, path: str, start: float, max_rate: float, seconds: float,
          bisect: bool, mode: str = "rate") -> list[Step]:
    steps: list[Step] = []
    rate = start
    good: Optional[float] = None
    bad: Optional[float] = None
    while rate <= max_rate:
        s = run_step(agent, path, rate, seconds, mode)
        print_step(s)
        steps.append(s)
        if not s.sustained:
            bad = rate
            break
        good = rate
        if s.generator_bound:  # the agent kept up with all the generator could make
            return steps
        rate *= GROWTH
    rate = start / 2
    while good is None and rate >= MIN_RATE:  # the start was already too fast: step down
        s = run_step(agent, path, rate, seconds, mode)
        print_step(s)
        steps.append(s)
        if s.sustained:
            good = rate
        else:
            bad = rate
        rate /= 2
    if bisect and good is not None and bad is not None:
        mid = (good + bad) / 2
        s = run_step(agent, path, mid, seconds, mode)
        print_step(s)
        steps.append(s)
    return steps


def fixed_rates(agent: AgentUnderTest, path: str, rates: list[float],
                seconds: float, mode: str = "rate") -> list[Step]:
    steps = []
    for rate in rates:
        steps.append(run_step(agent, path, rate, seconds, mode))
        print_step(steps[-1])
    return steps


# --- profiling the consumer threads ---------------------------------------------------------------

class ThreadProfiles:
    """cProfile in every thread started while installed (threading.setprofile): the first
    profile event of a new thread swaps the hook for a per-thread cProfile.Profile."""

    def __init__(self) -> None:
        self.profiles: dict[str, cProfile.Profile] = {}
        self._lock = threading.Lock()

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(None)
        prof = cProfile.Profile()  # wall clock (cheap); waits show as ring_buffer_poll / acquire
        with self._lock:
            self.profiles[threading.current_thread().name] = prof
        prof.enable()

    def install(self) -> None:
        threading.setprofile(self._hook)

    def uninstall(self) -> None:
        threading.setprofile(None)

    def stats(self) -> pstats.Stats:
        """Call after the profiled threads ended."""
        st: Optional[pstats.Stats] = None
        for prof in self.profiles.values():
            prof.create_stats()
            if st is None:
                st = pstats.Stats(prof, stream=io.StringIO())
            else:
                st.add(prof)
        if st is None:
            raise BenchError("no consumer thread was profiled")
        return st


# (label, file suffix, function) whose inclusive time is shown; the file suffix keeps names
# like "decode" from matching other modules.
PROFILE_PARTS = (
    ("ring buffer callback (BCC reader: all of decode + enqueue)", "ebpf/sensor.py", "_on_record"),
    ("ring reader batch drain (native/python reader)", "ebpf/ringbuf.py", "drain"),
    ("native lane: ring -> items (encoded runs + raw)", "ebpf/lane.py", "drain"),
    ("decode + enqueue of records", "ebpf/sensor.py", "_on_batch"),
    ("  probe decode (file.py, incl. event context)", "ebpf/file.py", "decode"),
    ("    event context: process table + attrs", "ebpf/sensor.py", "make_event"),
    ("      process attributes", "ebpf/sensor.py", "_process_attrs"),
    ("    path resolution", "ebpf/sensor.py", "resolve_path"),
    ("  queue put", "queue.py", "put_nowait"),
    ("drain (queue get)", "ebpf/sensor.py", "drain"),
    ("export flush (build + deliver + spans)", "exporter/batch.py", "flush"),
    ("  OTLP logs bytes", "exporter/builder.py", "logs_bytes"),
    ("    span tracker observe", "exporter/spans.py", "observe"),
    ("    record encoding", "exporter/wire.py", "record"),
    ("  traces (finished spans)", "exporter/builder.py", "traces"),
    ("  pipeline (run consumer)", "otelguard/runner.py", "send_logs"),
)


def profile_breakdown(st: pstats.Stats) -> list[tuple[str, float, int]]:
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]  # pstats keeps this untyped
    out = []
    for label, suffix, func in PROFILE_PARTS:
        cum = 0.0
        calls = 0
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in raw.items():
            if name == func and filename.endswith(suffix):
                cum += ct
                calls += nc
        out.append((label, cum, calls))
    return out


def profile_at(rate: float, path: str, seconds: float, consumer: str,
               ringbuf_pages: Optional[int], reader: ReaderKind = "auto",
               scope: tuple[str, ...] = (), dedup_ms: Optional[int] = None,
               lane: str = "auto", mode: str = "rate") -> dict[str, Any]:
    hooks = ThreadProfiles()
    hooks.install()
    try:
        agent = AgentUnderTest(consumer, ringbuf_pages, budget_off=True, ring_reader=reader,
                               scope=scope, dedup_ms=dedup_ms, native_lane=lane).start()
    finally:
        hooks.uninstall()
    try:
        step = run_step(agent, path, rate, seconds, mode)
    finally:
        agent.stop()
    print_step(step)
    st = hooks.stats()
    total = float(st.total_tt)  # type: ignore[attr-defined]
    print(f"\nprofile of the consumer threads ({', '.join(sorted(hooks.profiles))}) at "
          f"{rate:,.0f}/s target, {step.consumed} events, {total:.2f} s profiled "
          f"(cProfile inflates per-call costs; read the shares)")
    parts = profile_breakdown(st)
    for label, cum, calls in parts:
        per = 1e6 * cum / step.consumed if step.consumed else 0.0
        print(f"  {label:<50} {cum:7.3f} s  {100 * cum / total if total else 0:5.1f} %  "
              f"{per:6.2f} us/event  ({calls} calls)")
    buf = io.StringIO()
    st.stream = buf  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(15)
    print("\ntop functions by own time:")
    lines = buf.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    print("\n".join(lines[start:]).rstrip())
    return {"rate": rate, "events": step.consumed, "profiled_s": round(total, 3),
            "parts_s": {label.strip(): round(cum, 4) for label, cum, _ in parts}}


# --- stage costs without a profiler -------------------------------------------------------------

def _per_event_us(fn: Callable[[], int]) -> float:
    """Best of 3 of ``fn`` (which returns how many events it handled), in µs per event."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, (time.perf_counter() - t0) / max(1, n))
    return best * 1e6


def stage_costs(agent: AgentUnderTest, path: str, n: int) -> dict[str, float]:
    """µs per event of each consumer stage, timed in this thread with perf_counter on ``n``
    records shaped exactly like the generator's (an openat O_WRONLY of ``path`` by this
    process, decoded with the stopped sensor's own EventContext: process table, cgroup cache,
    clock). The BCC C->Python callback trampoline is not included."""
    from otelguard.ebpf.file import FileProbe
    from otelguard.ebpf.probe import Header
    from otelguard.exporter.builder import OtlpBuilder
    from otelguard import semconv, telemetry

    ctx = agent.sensor.ctx
    raw = open_record(path)
    buf = ctypes.create_string_buffer(raw, len(raw))
    addr, size = ctypes.addressof(buf), len(raw)
    offset = Header.type.offset
    probe = FileProbe()
    events: list[Any] = []

    def framing() -> int:
        for _ in range(n):
            data = ctypes.string_at(addr, size)
            int.from_bytes(data[offset:offset + 4], "little")
        return n

    def decode() -> int:
        events.clear()
        for _ in range(n):
            events.append(probe.decode(20, raw, ctx))
        return n

    def make_event() -> int:
        hdr = Header.from_buffer_copy(raw)
        for _ in range(n):
            ctx.make_event(hdr, semconv.EV_FILE_OPEN, "openat", {})
        return n

    def queue_hand_off() -> int:
        q: queue.Queue[Any] = queue.Queue(maxsize=n + 1)
        for ev in events:
            q.put_nowait(ev)
        for _ in range(n):
            q.get_nowait()
        return n

    counter = telemetry.events.labels(semconv.EV_FILE_OPEN)

    def count() -> int:
        for _ in range(n):
            counter.inc()
        return n

    def build() -> int:
        builder = OtlpBuilder()
        for i in range(0, n, 512):
            builder.logs_bytes(events[i:i + 512])
        return n

    costs = {"callback framing (string_at, type)": _per_event_us(framing),
             "decode (file.py, incl. event context)": _per_event_us(decode),
             "  of which event context (make_event)": _per_event_us(make_event),
             "queue put + get": _per_event_us(queue_hand_off),
             "events counter": _per_event_us(count),
             "OTLP logs bytes (spans + records, 512/batch)": _per_event_us(build)}
    return costs


def _best(steps: list[Step]) -> Optional[Step]:
    clean = [s for s in steps if s.sustained]
    return max(clean, key=lambda s: s.consumed_per_s) if clean else None


def workload_summary(steps: list[Step], ceiling: float) -> dict[str, Any]:
    """One workload's figures for the summary (``workloads.<name>.*``)."""
    best = _best(steps)
    return {"generator_ceiling_per_s": round(ceiling),
            "max_drop_free_per_s": round(best.consumed_per_s) if best else None,
            "per_core": round(best.per_core) if best else None,
            "generated_per_s": round(best.generated_per_s) if best else None,
            "drops_begin_at": next((s.target_per_s for s in steps if s.drops), None),
            "generator_bound": bool(best and best.generator_bound),
            "bytes_per_event": round(best.log_bytes / max(1, best.consumed)) if best else None}


def print_reader_ab(results: dict[str, list[Step]]) -> None:
    """Events per agent CPU second of each ring reader at each rate they all ran, and the ratio
    to the first reader (the baseline of the A/B)."""
    names = list(results)
    base = names[0]
    common = sorted(set.intersection(*({s.target_per_s for s in st} for st in results.values())))
    print(f"\nring readers side by side (events/s per core of agent CPU; ratio vs {base}):")
    print("  target/s  " + "".join(f"{n:>22}" for n in names))
    for rate in common:
        row = {n: next(s for s in results[n] if s.target_per_s == rate) for n in names}
        b = row[base].per_core
        print(f"  {rate:>8,.0f}  " + "".join(
            f"{row[n].per_core:>12,.0f} x{row[n].per_core / b if b else 0:4.2f}"
            + ("*" if not row[n].sustained else " ") + "   " for n in names))
    print("  (* not sustained: drops or backlog)")
    for n in names:
        best = _best(results[n])
        drop = next((s for s in results[n] if s.drops), None)
        print(f"  {n:<8} max drop-free "
              + (f"{best.consumed_per_s:>9,.0f}/s at {best.per_core:>9,.0f}/s per core"
                 if best else "none")
              + (f"; drops begin at {drop.target_per_s:,.0f}/s" if drop else ""))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 s steps, no bisection")
    ap.add_argument("--step-s", type=float, default=None, help="seconds per rate step (5; quick 2)")
    ap.add_argument("--start", type=float, default=None, help="first rate (10000/s; quick 5000)")
    ap.add_argument("--max-rate", type=float, default=2_000_000)
    ap.add_argument("--consumer", choices=CONSUMERS, default="agent",
                    help="agent: exporter to OTLP bytes (default); run: + the run pipeline")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--ringbuf-pages", type=int, default=None,
                    help="NOT the default config: ring buffer size in pages, for diagnosis")
    ap.add_argument("--rates", default="",
                    help="comma-separated rates to run, each whatever the previous gave, "
                         "instead of the rising sweep (for an A/B of --readers at equal rates)")
    ap.add_argument("--isolate", action="store_true",
                    help="run in a cgroup of its own and scope the agent to it: only the "
                         "generator's records, immune to other load on a shared machine")
    ap.add_argument("--readers", default="auto",
                    help="comma-separated ring readers to sweep one after another in this run, "
                         "the first is the A/B baseline: bcc, native, python, auto (default: "
                         "auto, what the agent uses); e.g. bcc,native,python")
    ap.add_argument("--lanes", default="auto",
                    help="comma-separated sensor.native_lane values to sweep one after another "
                         "for each reader (off, on, auto; ebpf/lane.py), e.g. off,on")
    ap.add_argument("--dedup-ms", type=int, default=None,
                    help="the file probe's dedup window (default: the default config, 1000); "
                         "the generator repeats one open, which the kernel counts instead of "
                         "sending within the window: 0 sends every open to the agent")
    ap.add_argument("--workloads", default="opens",
                    help="comma-separated generators to sweep, each with every reader and lane: "
                         "opens (one file opened at a rate, default), mix (the agent-shaped "
                         "mix of exec, connect, DNS and opens)")
    args = ap.parse_args(argv)
    workloads = args.workloads.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"--workloads: unknown workload {w!r} (have: {', '.join(WORKLOADS)})")
    lanes = args.lanes.split(",")
    for lane in lanes:
        if lane not in ("auto", "on", "off"):
            ap.error(f"--lanes: unknown value {lane!r}")
    readers: list[ReaderKind] = []
    for r in args.readers.split(","):
        if r not in typing.get_args(ReaderKind):
            ap.error(f"--readers: unknown reader {r!r}")
        readers.append(r)
    seconds = args.step_s or (2.0 if args.quick else 5.0)
    start = args.start or (5000.0 if args.quick else 10000.0)
    print(machine_line())
    print(f"agent throughput: consumer={args.consumer}, {seconds:g} s steps from {start:,.0f}/s "
          f"x{GROWTH}, ring buffer "
          + (f"{args.ringbuf_pages} pages (NOT default)" if args.ringbuf_pages else "default")
          + f", ring readers {', '.join(readers)}, native lane {', '.join(lanes)}, dedup "
          + (f"{args.dedup_ms} ms" if args.dedup_ms is not None else "default")
          + f", workloads {', '.join(workloads)}")
    results: dict[str, list[Step]] = {}
    by_workload: dict[str, list[Step]] = {}
    ceilings: dict[str, float] = {}
    try:
        with contextlib.ExitStack() as stack:
            scope = (stack.enter_context(isolated_cgroup()),) if args.isolate else ()
            if scope:
                print(f"isolated: this process and the generator in cgroup {scope[0]}, the "
                      "agent scoped to it")
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(prefix="og-bench-", dir="/tmp"))
            for w in workloads:
                b = run_loop([WORKLOADS[w], tmp.name, f"{args.max_rate:.0f}",
                              f"{min(seconds, 2.0)}"])
                ceilings[w] = b.per_s
                print(f"baseline (no agent): the {w} generator reaches {b.per_s:,.0f} "
                      f"operations/s (asked {args.max_rate:,.0f}/s)")
            for w, reader, lane in [(w, r, ln) for w in workloads for r in readers
                                    for ln in lanes]:
                # budget off: one process drives every rate, the per-cgroup budget would cap it
                with AgentUnderTest(args.consumer, args.ringbuf_pages, budget_off=True,
                                    ring_reader=reader, scope=scope, dedup_ms=args.dedup_ms,
                                    native_lane=lane) as agent:
                    used = agent.sensor.status.ring_reader
                    on = agent.sensor.status.native_lane
                    print(f"agent loaded in {agent.load_s:.1f} s, ring reader {used}, native "
                          f"lane {'on' if on else 'off'}")
                    name = reader if reader != "auto" else used
                    if len(lanes) > 1:
                        name += f"+lane-{'on' if on else 'off'}"
                    if len(workloads) > 1:
                        name = f"{w}:{name}"
                        print(f"workload {w}:")
                    mode = WORKLOADS[w]
                    results[name] = (
                        fixed_rates(agent, tmp.name, [float(r) for r in args.rates.split(",")],
                                    seconds, mode) if args.rates else
                        sweep(agent, tmp.name, start, args.max_rate, seconds, not args.quick,
                              mode))
                    by_workload.setdefault(w, results[name])  # its first reader and lane
            steps = results[next(iter(results))]
            costs = stage_costs(agent, tmp.name, 5_000 if args.quick else 20_000)
            total_us = sum(v for k, v in costs.items() if not k.startswith(" "))
            print(f"\nstage costs, one thread, no profiler (us/event):")
            for k, v in costs.items():
                print(f"  {k:<48} {v:7.2f}")
            print(f"  {'sum':<48} {total_us:7.2f}  -> at most {1e6 / total_us:,.0f} events/s "
                  f"per core before the BCC callback trampoline and thread hand-offs")
            best = _best(steps)
            profile: Optional[dict[str, Any]] = None
            if best is not None and not args.no_profile:
                profile = profile_at(best.target_per_s, tmp.name, seconds, args.consumer,
                                     args.ringbuf_pages, readers[0], scope, args.dedup_ms,
                                     lanes[0], WORKLOADS[workloads[0]])
    except BenchError as exc:
        print(f"agent_throughput: {exc}", file=sys.stderr)
        return 1
    if len(results) > 1:
        print_reader_ab(results)
    print(f"\nfirst reader ({next(iter(results))}):")
    first_drop = next((s for s in steps if s.drops), None)
    if best is None:
        print("no sustained drop-free step: lower --start")
    else:
        print(f"max sustained drop-free rate: {best.consumed_per_s:,.0f} events/s consumed "
              f"({best.generated_per_s:,.0f}/s generated), agent CPU {best.cores:.2f} cores -> "
              f"{best.per_core:,.0f} events/s per core (poll+export threads: "
              f"{best.per_core_threads:,.0f}/s per core)")
        print(f"ratio to the generator's own ceiling (baseline, no agent): "
              f"{best.generated_per_s / ceilings[workloads[0]]:.3f}")
        print(f"aim >= {AIM_PER_CORE:,} events/s/core: "
              f"{'met' if best.per_core >= AIM_PER_CORE else 'NOT met'} "
              f"({best.per_core / AIM_PER_CORE:.2f}x of the aim)")
    if first_drop is not None:
        print(f"drops begin at {first_drop.target_per_s:,.0f}/s target "
              f"(kernel {first_drop.kernel_drops}, queue {first_drop.queue_drops})")
    if len(workloads) > 1:
        print("\nworkloads (first reader and lane of each; events/s per core of agent CPU):")
        for w, st in by_workload.items():
            ws = workload_summary(st, ceilings[w])
            print(f"  {w:<6} per core {ws['per_core'] or 0:>9,}/s  drop-free max "
                  f"{ws['max_drop_free_per_s'] or 0:>9,}/s  generator ceiling "
                  f"{ws['generator_ceiling_per_s']:>9,} ops/s"
                  + ("  (generator-bound)" if ws["generator_bound"] else "")
                  + (f"  drops begin at {ws['drops_begin_at']:,.0f}/s"
                     if ws["drops_begin_at"] else ""))
    print(summary_line("agent_throughput", {
        "consumer": args.consumer, "quick": args.quick, "step_s": seconds,
        "lanes": lanes, "dedup_ms": args.dedup_ms,
        "workloads": {w: workload_summary(st, ceilings[w]) for w, st in by_workload.items()},
        "isolated": args.isolate,
        "ringbuf_pages": args.ringbuf_pages,
        "generator_ceiling_per_s": round(ceilings[workloads[0]]),
        "max_drop_free_per_s": round(best.consumed_per_s) if best else None,
        "per_core": round(best.per_core) if best else None,
        "per_core_threads": round(best.per_core_threads) if best else None,
        "drops_begin_at": first_drop.target_per_s if first_drop else None,
        "steps": [{**asdict(s), "per_core": round(s.per_core)} for s in steps],
        "stage_costs_us": {k.strip(): round(v, 3) for k, v in costs.items()},
        "profile": profile,
        "lane_share": {n: round(sum(s.lane_events for s in st)
                                / max(1, sum(s.consumed for s in st)), 3)
                       for n, st in results.items()},
        "readers": {n: {"max_drop_free_per_s": round(b.consumed_per_s) if b else None,
                        "per_core": round(b.per_core) if b else None,
                        "drops_begin_at": next((s.target_per_s for s in st if s.drops), None),
                        "per_core_by_rate": {f"{s.target_per_s:.0f}": round(s.per_core)
                                             for s in st}}
                    for n, st in results.items() for b in [_best(st)]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
