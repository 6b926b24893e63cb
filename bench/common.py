"""What the agent benchmarks share: the C workload, the agent under test, CPU clocks, summaries.

- :func:`workload_binary` compiles ``bench/syscall_loop.c`` once per source hash into
  ``~/.cache/otelguard/bench/`` (gcc/cc, ``-O2``); :func:`run_loop` runs it and parses its line.
- :class:`AgentUnderTest` is the real agent in this process: :class:`~otelguard.ebpf.sensor.Sensor`
  with the default config, drained by :class:`~otelguard.exporter.batch.BatchExporter` building
  OTLP logs bytes, delivered either to a counting sink (``agent``: what ``otelguard agent`` does
  up to the network hop) or through the default processor pipeline first (``run``: what
  ``otelguard run`` does, outputs replaced by the counting sink).
- :func:`thread_cpu_s` reads a thread's CPU clock (``pthread_getcpuclockid``), so the consumer
  threads' cost is measured apart from the benchmark's own main thread.
- :func:`summary_line` prints the one machine-readable line each benchmark ends with
  (``BENCH_SUMMARY <json>``); ``bench/run_all.py`` collects them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from otelguard import telemetry
from otelguard.ebpf.ringbuf import ReaderKind
from otelguard.transport.contract import ExportResult, LogsPayload, TracesPayload, as_bytes

BENCH_DIR = Path(__file__).resolve().parent
LOOP_SOURCE = BENCH_DIR / "syscall_loop.c"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "otelguard" / "bench"
SUMMARY_PREFIX = "BENCH_SUMMARY "
POLL_THREAD = "otelguard-ebpf-poll"
EXPORT_THREAD = "otelguard-export"


class BenchError(RuntimeError):
    """The benchmark cannot run here (no compiler, not root, the workload failed)."""


# --- the C workload -----------------------------------------------------------------------------

def workload_binary() -> Path:
    """The compiled workload, rebuilt only when syscall_loop.c changes."""
    src = LOOP_SOURCE.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    out = CACHE_DIR / f"syscall_loop-{digest}"
    if out.exists():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc/gcc) on PATH; `apt-get install gcc`")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    proc = subprocess.run([cc, "-O2", "-pthread", "-o", str(tmp), str(LOOP_SOURCE)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"compiling {LOOP_SOURCE.name} failed:\n{proc.stderr}")
    tmp.rename(out)
    return out


@dataclass(frozen=True)
class LoopResult:
    """One workload run, as measured by the workload itself (loop only, no process start-up)."""

    iterations: int
    elapsed_s: float
    user_s: float
    sys_s: float

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def per_s(self) -> float:
        return self.iterations / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_loop(args: Sequence[str], timeout_s: float = 300.0) -> LoopResult:
    """Run the workload with ``args`` (see syscall_loop.c) and parse its ``ok`` line."""
    binary = workload_binary()
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout_s)
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    parts = line.split()
    if proc.returncode != 0 or len(parts) != 5 or parts[0] != "ok":
        raise BenchError(f"workload {' '.join(args)} failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip() or line}")
    n, elapsed, user, sys_ = (int(p) for p in parts[1:])
    return LoopResult(n, elapsed / 1e9, user / 1e9, sys_ / 1e9)


@contextlib.contextmanager
def isolated_cgroup() -> Iterator[str]:
    """Move this process (and so the workloads it starts) into a cgroup v2 of its own, yielding
    its path for ``SensorConfig.cgroup_scope``: an agent scoped to it sees the workload's
    records only, not those of whatever else runs on a shared machine (the agent's own are
    filtered in the kernel). Moves back to the root and removes the cgroup afterwards."""
    from otelguard.ebpf.cgroup import cgroup2_mount

    root = cgroup2_mount()
    if root is None:
        raise BenchError("no cgroup v2 mount: --isolate needs one")
    rel = f"/og-bench-{os.getpid()}"
    path = root / rel.lstrip("/")
    path.mkdir(exist_ok=True)
    (path / "cgroup.procs").write_text(str(os.getpid()))
    try:
        yield rel
    finally:
        (root / "cgroup.procs").write_text(str(os.getpid()))
        path.rmdir()


# --- the agent under test -----------------------------------------------------------------------

class CountingSink:
    """A Transport that keeps nothing: counts requests and bytes (serializing protobuf objects,
    as a network transport would). Stands in for the next hop so the network is not measured."""

    name = "bench-sink"

    def __init__(self) -> None:
        self.log_requests = 0
        self.log_bytes = 0
        self.trace_requests = 0
        self.trace_bytes = 0

    def export_logs(self, req: LogsPayload) -> ExportResult:
        self.log_requests += 1
        self.log_bytes += len(as_bytes(req))
        return ExportResult.success()

    def export_traces(self, req: TracesPayload) -> ExportResult:
        self.trace_requests += 1
        self.trace_bytes += len(as_bytes(req))
        return ExportResult.success()

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class AgentCounters:
    """A snapshot of what the agent saw; subtract two for one measurement window."""

    records: int  # ring-buffer records the poll thread took
    enqueued: int  # events put on the user queue
    exported: int  # events the exporter took off the queue
    kernel_drops: int
    queue_drops: int
    decode_errors: int
    log_bytes: int
    cpu_s: float  # whole process
    poll_cpu_s: float
    export_cpu_s: float
    lane_events: int = 0  # records the native lane encoded (ebpf/lane.py)

    def minus(self, other: "AgentCounters") -> "AgentCounters":
        return AgentCounters(*(a - b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.records, self.enqueued, self.exported, self.kernel_drops, self.queue_drops,
                self.decode_errors, self.log_bytes, self.cpu_s, self.poll_cpu_s,
                self.export_cpu_s, self.lane_events)

    @property
    def consumer_cpu_s(self) -> float:
        return self.poll_cpu_s + self.export_cpu_s


CONSUMERS = ("agent", "run")


READ_FILTERS = ("rules", "builtin")


class AgentUnderTest:
    """See the module docstring. ``start()`` compiles and loads the probes (seconds)."""

    def __init__(self, consumer: str = "agent", ringbuf_pages: Optional[int] = None,
                 budget_off: bool = False, ring_reader: ReaderKind = "auto",
                 scope: tuple[str, ...] = (), read_filter: str = "rules",
                 dedup_ms: Optional[int] = None, native_lane: str = "auto") -> None:
        if consumer not in CONSUMERS:
            raise ValueError(f"consumer must be one of {CONSUMERS}, got {consumer!r}")
        if read_filter not in READ_FILTERS:
            raise ValueError(f"read_filter must be one of {READ_FILTERS}, got {read_filter!r}")
        self.consumer = consumer
        self.ringbuf_pages = ringbuf_pages  # None: the default config
        self.budget_off = budget_off  # the per-cgroup budget (default on) turned off
        self.ring_reader = ring_reader  # SensorConfig.ring_reader (ebpf/ringbuf.py)
        self.scope = scope  # SensorConfig.cgroup_scope (see isolated_cgroup)
        # rules: the kernel read filter the packaged rules need (what `otelguard run` and the
        # Helm-deployed agent derive); builtin: the built-in prefix list (/etc/, ...)
        self.read_filter = read_filter
        self.dedup_ms = dedup_ms  # None: the default window; 0: off
        self.native_lane = native_lane  # SensorConfig.native_lane (ebpf/lane.py)
        self.sink = CountingSink()
        self.sensor: Any = None
        self.exporter: Any = None
        self.pipeline: Any = None
        self.load_s = 0.0
        self._poll_thread: Optional[threading.Thread] = None
        self._export_thread: Optional[threading.Thread] = None

    def start(self) -> "AgentUnderTest":
        from otelguard.ebpf.sensor import Sensor
        from otelguard.ebpf.settings import SensorConfig
        from otelguard.exporter.batch import BatchExporter
        from otelguard.exporter.builder import OtlpBuilder
        from otelguard.exporter.config import ExporterConfig
        from otelguard.exporter.spans import SpanTracker
        from otelguard.transport.delivery import Delivery

        if os.geteuid() != 0:
            raise BenchError("the agent benchmarks load eBPF programs: run as root")
        t0 = time.monotonic()
        config = SensorConfig(ring_reader=self.ring_reader, cgroup_scope=self.scope,
                              native_lane=self.native_lane)  # type: ignore[arg-type]
        if self.ringbuf_pages is not None:
            config = replace(config, probe=replace(config.probe, ringbuf_pages=self.ringbuf_pages))
        if self.budget_off:
            config = replace(config, budget=replace(config.budget, records_per_s=0))
        if self.dedup_ms is not None:
            config = replace(config, probe=replace(config.probe, dedup_window_ms=self.dedup_ms))
        if self.read_filter == "rules":
            from otelguard.agent import with_rules_read_filter

            config = with_rules_read_filter(replace(config, read_rules_packaged=True))
        self.sensor = Sensor(config)
        self.sensor.start()
        self.load_s = time.monotonic() - t0
        cfg = ExporterConfig()
        delivery: Any = Delivery(self.sink, None, stage="output")
        if self.consumer == "run":
            from otelguard.runner import PipelineSink, build_pipeline

            self.pipeline = build_pipeline(None, None)
            self.pipeline.start()
            delivery = PipelineSink(self.pipeline, [delivery])
        self.exporter = BatchExporter(self.sensor.drain_items, delivery, cfg,
                                      OtlpBuilder(spans=SpanTracker(max_open=cfg.max_open_spans),
                                                  lane=self.sensor.lane))
        before = set(threading.enumerate())
        self.exporter.start()
        for t in set(threading.enumerate()) - before:
            if t.name == EXPORT_THREAD:
                self._export_thread = t
        for t in threading.enumerate():
            if t.name == POLL_THREAD:
                self._poll_thread = t
        return self

    def counters(self) -> AgentCounters:
        st = self.sensor.stats()
        return AgentCounters(
            records=int(st["records"]), enqueued=sum(st["events_by_name"].values()),
            exported=int(self.exporter.events_in), kernel_drops=int(st["kernel_drops"] or 0),
            queue_drops=int(st["queue_drops"]), decode_errors=int(st["decode_errors"]),
            log_bytes=self.sink.log_bytes, cpu_s=time.process_time(),
            poll_cpu_s=thread_cpu_s(self._poll_thread),
            export_cpu_s=thread_cpu_s(self._export_thread),
            lane_events=int(st.get("lane_events", 0)))

    def wait_drained(self, timeout_s: float = 30.0) -> Optional[float]:
        """Until the queue is empty and the exporter has taken every queued event, then one
        flush interval more (the last partial batch). Returns how long the backlog took to
        drain (before that flush wait), None when ``timeout_s`` passed first. Other processes
        keep producing events, so this waits for the backlog, not for silence."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            c = self.counters()
            if self.sensor.stats()["queued"] == 0 and c.exported >= c.enqueued:
                drained = time.monotonic() - t0
                time.sleep(self.exporter.config.flush_interval_s + 0.05)
                return drained
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
        if self.sensor is not None:
            self.sensor.stop()
        if self.pipeline is not None:
            self.pipeline.shutdown()

    def __enter__(self) -> "AgentUnderTest":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


class BpfRunStats:
    """Turns on ``kernel.bpf_stats_enabled`` while in use (restoring the previous value), so
    each BPF program's fdinfo counts its runs and their time. It adds two clock reads to every
    BPF program run on the host: use it in a pass of its own, never while measuring ratios."""

    def __init__(self) -> None:
        self._previous: Optional[str] = None

    def __enter__(self) -> "BpfRunStats":
        try:
            self._previous = BPF_STATS_SYSCTL.read_text().strip()
            BPF_STATS_SYSCTL.write_text("1")
        except OSError as exc:
            raise BenchError(f"cannot enable {BPF_STATS_SYSCTL}: {exc}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            BPF_STATS_SYSCTL.write_text(self._previous)


def program_runs(agent: AgentUnderTest) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) of each loaded BPF program of the agent, by function name, from
    /proc/self/fdinfo (non-zero only while :class:`BpfRunStats` is on). Reads the sensor's
    loaded program, a private attribute: benchmarks only."""
    program = getattr(agent.sensor, "_program", None)
    if program is None:
        return {}
    out: dict[str, tuple[int, int]] = {}
    for name, fd in program.program_fds.items():
        try:
            with open(f"/proc/self/fdinfo/{fd}") as fh:
                info = dict(line.split(":", 1) for line in fh if ":" in line)
            out[name] = (int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0")))
        except (OSError, ValueError):
            continue
    return out


def thread_cpu_s(thread: Optional[threading.Thread]) -> float:
    """CPU seconds a live thread has used (0 when gone: read it before stopping)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:
        return 0.0


def kernel_drop_counts() -> dict[str, float]:
    """telemetry.dropped by ``stage/reason`` (the figures ``/metrics`` and the run summary show)."""
    return {f"{stage}/{reason}": v
            for (stage, reason), v in telemetry.counter_values(telemetry.dropped).items()}


# --- reporting ----------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "load1": round(load1, 2),
            "load5": round(load5, 2), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cpus']} CPUs, kernel {m['kernel']}, load average {m['load1']} "
            f"(1 min) {m['load5']} (5 min), {m['date']}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary_line(bench: str, figures: dict[str, Any]) -> str:
    """``BENCH_SUMMARY {"bench": ..., ...}``: the last line of every agent benchmark."""
    doc = {"bench": bench, **figures, "machine": machine()}
    return SUMMARY_PREFIX + json.dumps(doc, sort_keys=True)


def own_cgroup_id() -> int:
    """The cgroup v2 inode of this process (what bpf_get_current_cgroup_id() reports)."""
    with open("/proc/self/cgroup") as fh:
        rel = next((ln.split(":", 2)[2].strip() for ln in fh if ln.startswith("0::")), "/")
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        try:
            return os.stat(root + rel).st_ino
        except OSError:
            continue
    return 0


def open_record(path: str) -> bytes:
    """An openat(O_WRONLY) record of this process for ``path``, as the file probe submits it
    (the generator's shape: what the throughput and hot-path benchmarks decode and encode)."""
    import ctypes

    from otelguard.ebpf.file import SYSCALLS, FileRecord

    rec = FileRecord()
    rec.h.ktime_ns = time.monotonic_ns()
    rec.h.cgroup_id = own_cgroup_id()
    rec.h.ret = 3
    rec.h.type = 20
    rec.h.pid = rec.h.tid = os.getpid()
    rec.h.size = ctypes.sizeof(FileRecord)
    rec.h.comm = b"syscall_loop"
    rec.dfd = -100
    rec.sc = next(i for i, sc in enumerate(SYSCALLS) if sc.name == "openat")
    rec.type = 20
    rec.flags = os.O_WRONLY
    rec.path = path.encode()
    return bytes(rec)
