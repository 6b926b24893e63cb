"""The sensor: loads the probes, polls the ring buffer, decodes records into enriched Events.

Threads: ``start()`` loads (program cache, else a compile: seconds), then one poll thread drains
the ring buffer in batches through a RingReader on its map fd (ringbuf.py: the native reader, or
the mmap one when the extension is not built; ``ring_reader: bcc`` polls with libbcc_bpf and one
Python callback per record) and decodes each record (the probe's ``decode`` with
:class:`EventContext`) and enqueues the batch's events as one list into a bounded queue, nothing
more: one hand-off per ring batch, not per record. The bound counts events; what does not fit is
dropped and counted (``otelguard_dropped_total{stage="user_queue"}``); records
the kernel could not put in the ring buffer are counted from ``og_drops`` once a second
(``stage="kernel_ring"``), and those a flooding cgroup had over its budget from the budget's
maps (``stage="kernel_budget"``, budget.py), whose top offenders are logged at most every
``BUDGET_LOG_S`` while drops go on. Consumers call ``drain()`` (Events) or ``drain_items()``
(the exporter's: the queue's items as they are) from their own thread: one consumer at a
time, since each record goes to whichever drain takes it (a second one draining at the same
time raises :class:`~otelguard.ebpf.errors.ConsumerConflict` instead of splitting the stream).

With the native lane (lane.py, ``sensor.native_lane``) a batch goes through the lane first:
file opens of processes the exporter registered come out as runs of final OTLP bytes
(``LaneRun``, counted in ``lane_events``), the other records are decoded as above, in order.

The decode context (process table, cgroups, clock, paths) is :class:`EventContext`
(context.py). Our own process is filtered in the kernel (``OG_SELF_TGID``), so the sensor's
``/proc`` reads never feed back into the ring buffer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence, Union

from otelguard import semconv, telemetry
from otelguard.ebpf.budget import BudgetLedger, Offender
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.context import ATTRS_TTL_NS, EventContext
from otelguard.ebpf.errors import ConsumerConflict, LoadError, SensorError
from otelguard.ebpf.events import Event
from otelguard.ebpf.file import due_repeats, kernel_repeats
from otelguard.ebpf.lane import FastLane, LaneRun, open_lane, record_count
from otelguard.ebpf.loader import LoadedProgram, load, program_cache
from otelguard.ebpf.probe import Header, Probe
from otelguard.ebpf.proctable import ProcessTable
from otelguard.ebpf.registry import discover
from otelguard.ebpf.ringbuf import RingError, RingReader, open_reader, resolve_kind
from otelguard.ebpf.settings import SensorConfig

BUDGET_LOG_S = 10.0  # at most one "over budget" log line per this many seconds
log = logging.getLogger(__name__)
_TYPE_OFFSET = Header.type.offset
_HEADER_SIZE = ctypes.sizeof(Header)
READER_BATCH = 4096  # records per RingReader.drain: one Python call per batch
Item = Union[Event, LaneRun]  # what the queue holds (drain_items)


@dataclass
class SensorStatus:
    """What loaded and what did not, with reasons (for the run summary and ``doctor``)."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # compile/verifier/render failures
    skipped: dict[str, str] = field(default_factory=dict)  # registry: absent or broken modules
    missing_tracepoints: dict[str, list[str]] = field(default_factory=dict)
    load_seconds: float = 0.0
    program_origin: str = ""  # "cache" (no compiler) or "compiled" (program.LoadedProgram.origin)
    processes_seeded: int = 0
    ring_reader: str = ""  # bcc, native or python (ringbuf.py)
    native_lane: bool = False  # file opens of known processes encoded natively (lane.py)


class Sensor:
    """See the module docstring. ``start()`` once, ``drain()`` repeatedly, ``stop()`` once."""

    def __init__(self, config: SensorConfig, probes: Optional[list[Probe]] = None) -> None:
        self.config = config
        self._given = probes
        self.status = SensorStatus()
        # SimpleQueue (C, no task tracking) costs ~1/4 of queue.Queue per put+get; one list per
        # ring batch. The bound is in events: put (poll thread) minus taken (the consumer), each
        # counter written by one thread only, so it holds exactly for its only producer
        self._queue: queue.SimpleQueue[list[Item]] = queue.SimpleQueue()
        self._queue_max = config.queue_size
        self._put = 0
        self._taken = 0
        self._carry: list[Item] = []  # the rest of a list a drain took only part of
        self._draining = threading.Lock()  # held by the consumer inside drain_items
        self._drainer = ""  # that consumer's thread name, for the conflict's message
        self.lane: Optional[FastLane] = None
        self._lane_events = 0
        self._program: Optional[LoadedProgram] = None
        self._reader: Optional[RingReader] = None  # None: BCC's per-record callback
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._by_type: dict[int, Probe] = {}
        self._counters: dict[str, Any] = {}
        self._queue_drop = telemetry.dropped.labels("user_queue", "queue_full")
        self._events_by_name: dict[str, int] = {}
        self._events_counted: dict[str, int] = {}  # what was added to telemetry.events so far
        self._queue_drops = 0
        self._decode_errors = 0
        self._records = 0
        self.budget = BudgetLedger()
        self._budget_logged = 0.0
        self._offenders: list[dict[str, Any]] = []  # top budget offenders, named on poll thread
        self.ctx: Optional[EventContext] = None
        # time.monotonic() after the last ring-buffer poll returned (0: never); readiness reads it
        self.last_poll = 0.0

    def start(self) -> SensorStatus:
        if self._program is not None:
            return self.status
        started = time.monotonic()
        if self._given is not None:
            probes = [p for p in self._given if p.name in self.config.probes]
        else:
            reg = discover(self.config.probes)
            probes, self.status.skipped = reg.probes, dict(reg.skipped)
        if not probes:
            raise SensorError(f"no probe available: {self.status.skipped}")
        probe_config = replace(self.config.probe, self_tgid=os.getpid(),
                               scoped=bool(self.config.cgroup_scope))
        clock = KernelClock()
        table = ProcessTable(clock, max_entries=self.config.process_table_max,
                             long_lived_s=self.config.long_lived_s)
        self.status.processes_seeded = table.seed()
        self.ctx = EventContext(table, CgroupResolver(), clock, probe_config)
        try:
            program = load(probes, probe_config, scope=self.config.cgroup_scope,
                           budget=self.config.budget, cache=program_cache(self.config))
        except LoadError as exc:
            raise SensorError(f"no probe could be loaded: {exc}") from exc
        except ImportError as exc:
            raise SensorError(f"BCC is not importable ({exc}); run `make setup`") from exc
        self._program = program
        self.status.loaded = [p.name for p in program.probes]
        self.status.failed, self.status.program_origin = dict(program.failed), program.origin
        self.status.missing_tracepoints = dict(program.missing_tracepoints)
        for p in program.probes:
            for t in p.type_ids:
                self._by_type[t] = p
        self._reader = self._open_reader(program)
        try:
            self.lane = open_lane(self.config.native_lane, self.ctx.uid_prefix, probe_config,
                                  ATTRS_TTL_NS, self.config.process_table_max)
        except SensorError:
            self.stop()
            raise
        if self.lane is not None:
            self.status.native_lane = True
            self.ctx.lane = self.lane
            self.ctx.next_seq = self.lane.next_seq
            table.changed = self.lane.forget
        self.status.load_seconds = time.monotonic() - started
        self._thread = threading.Thread(target=self._poll_loop, name="otelguard-ebpf-poll",
                                        daemon=True)
        self._thread.start()
        return self.status

    def _open_reader(self, program: LoadedProgram) -> Optional[RingReader]:
        """A RingReader on the ring's map fd, or None for BCC's callback (``ring_reader: bcc``)."""
        kind = self.status.ring_reader = resolve_kind(self.config.ring_reader)
        if kind == "bcc":
            program.open_ring(self._on_record)
            return None
        try:
            return open_reader(program.ring_fd(), kind)
        except RingError as exc:
            self._program = None
            program.close()
            raise SensorError(str(exc)) from exc

    def _poll(self, program: LoadedProgram, timeout_ms: int) -> int:
        """One wait-and-consume round; the records handled (BCC's poll does not say: -1)."""
        if self._reader is None:
            program.poll(timeout_ms)
            return -1
        lane = self.lane
        if lane is None:
            return self._on_items(self._reader.drain(READER_BATCH, timeout_ms))
        assert self.ctx is not None
        lane.set_offset(self.ctx.clock.to_wall_ns(0))
        return self._on_items(lane.drain(self._reader, READER_BATCH, timeout_ms))

    def _poll_loop(self) -> None:
        program = self._program
        assert program is not None
        next_drops = time.monotonic() + 1.0
        next_misses = next_drops
        while not self._stop.is_set():
            self._poll(program, self.config.poll_timeout_ms)
            self._count_events()
            now = time.monotonic()
            self.last_poll = now
            if now >= next_drops:
                program.account_kernel_drops()
                if now >= next_misses:  # ~100 fdinfo reads: every 10 s
                    program.account_recursion_misses()
                    next_misses = now + 10.0
                self._account_budget(program, now)
                self._on_batch(due_repeats(program.tables, program.probes, self.config.probe))
                next_drops = now + 1.0
        for _ in range(64):  # what is already in the ring; bounded while a flood goes on
            if self._poll(program, 0) != READER_BATCH:
                break
        self._on_batch(due_repeats(program.tables, program.probes, self.config.probe, stopping=True))
        self._count_events()
        program.account_kernel_drops()
        program.account_recursion_misses()
        self._account_budget(program, time.monotonic())

    def _account_budget(self, program: LoadedProgram, now: float) -> None:
        """Budget drops since the last call into telemetry; the top offenders named (on this
        thread: the cgroup resolver is the poll thread's) and logged."""
        if not self.budget.update(program.budget_drops(), program.budget_entries()):
            return
        self._offenders = [self._offender(o)
                           for o in self.budget.top(self.config.budget.report_top)]
        if now - self._budget_logged >= BUDGET_LOG_S and self._offenders:
            self._budget_logged = now
            log.warning("kernel budget: %d records over their cgroup's budget so far; top: %s",
                        self.budget.total, "; ".join(
                            f"{o['workload']} dropped={o['dropped']} high_value={o['high_value']}"
                            for o in self._offenders))

    def _offender(self, o: Offender) -> dict[str, Any]:
        """A budget offender named by container id (the cgroup path for the host, the cgroup id
        when the cgroup is gone)."""
        path, ident = self.ctx.cgroups.resolve(o.cgroup_id) if self.ctx else ("", None)
        workload = (ident.container_id if ident is not None and ident.container_id
                    else path or f"cgroup:{o.cgroup_id}")
        return {"workload": workload, "cgroup_id": o.cgroup_id, "dropped": o.dropped,
                "high_value": o.dropped_high}

    def _count_events(self) -> None:
        """Add the events enqueued since the last call to ``otelguard_events_total``: once per
        poll (a batch of records), not per event, since a labelled counter's inc() takes a lock
        (~0.3 µs, a tenth of the record's decode)."""
        counted = self._events_counted
        for name, n in self._events_by_name.items():
            delta = n - counted.get(name, 0)
            if delta:
                counter = self._counters.get(name)
                if counter is None:
                    counter = self._counters[name] = telemetry.events.labels(name)
                counter.inc(delta)
                counted[name] = n

    def _on_record(self, _ctx: Any, data: int, size: int) -> None:
        """BCC's per-record callback (``ring_reader: bcc``)."""
        self._on_batch((ctypes.string_at(data, size),))

    def _on_batch(self, records: Sequence[bytes]) -> None:
        """Records from BCC's callback or the dedup flush: through the lane when it runs."""
        lane = self.lane
        if lane is not None:
            assert self.ctx is not None
            lane.set_offset(self.ctx.clock.to_wall_ns(0))
            self._on_items(lane.process(records))
        else:
            self._on_items(records)

    def _on_items(self, items: Sequence[Union[bytes, LaneRun]]) -> int:
        """Decode and enqueue a batch in order, nothing more: raw records (a RingReader's
        batch, BCC's one) and the lane's runs among them. Returns the records it held."""
        records = record_count(items)
        self._records += records
        self._enqueue(self._decode(items))
        return records

    def _decode(self, records: Sequence[Union[bytes, LaneRun]]) -> list[Item]:
        """The events of ``records``, in order, the lane's runs kept in place (bookkeeping
        records and decode errors give none)."""
        by_type, ctx = self._by_type, self.ctx
        assert ctx is not None
        out: list[Item] = []
        append = out.append
        for raw in records:
            if not isinstance(raw, bytes):  # a LaneRun: already OTLP bytes
                append(raw)
                continue
            if len(raw) < _HEADER_SIZE:
                self._decode_error("short_record")
                continue
            type_id = int.from_bytes(raw[_TYPE_OFFSET:_TYPE_OFFSET + 4], "little")
            probe = by_type.get(type_id)
            if probe is None:
                self._decode_error("unknown_type")
                continue
            try:
                event = probe.decode(type_id, raw, ctx)
            except Exception as exc:  # a decoder bug costs one record, never the poll thread
                self._decode_error(type(exc).__name__)
                continue
            if event is not None:
                append(event)
        return out

    def _enqueue(self, batch: list[Item]) -> None:
        """One queue item for the batch; the records that exceed the bound are dropped and
        counted (a lane run that does not fit whole is dropped whole)."""
        if not batch:
            return
        room = self._queue_max - (self._put - self._taken)
        by_name = self._events_by_name
        kept = 0
        for i, item in enumerate(batch):
            if isinstance(item, Event):
                n, name = 1, item.name
            else:  # a LaneRun
                n, name = item.count, semconv.EV_FILE_OPEN
            if kept + n > room:
                lost = record_count(batch[i:])
                self._queue_drops += lost
                self._queue_drop.inc(lost)
                del batch[i:]
                break
            kept += n
            if not isinstance(item, Event):
                self._lane_events += n
            by_name[name] = by_name.get(name, 0) + n
        if not batch:
            return
        self._put += kept
        self._queue.put(batch)

    def _decode_error(self, reason: str) -> None:
        self._decode_errors += 1
        telemetry.dropped.labels("decode", reason).inc()

    def drain_items(self, max_items: int, timeout_s: float) -> list[Item]:
        """Up to ``max_items`` queued items in order (an Event, or a LaneRun of records the
        native lane encoded: see lane.py), waiting at most ``timeout_s`` for the first batch:
        whole ring batches at a time (a batch that does not fit is split and its rest kept for
        the next call). Raises ConsumerConflict while another thread is inside a drain."""
        if not self._draining.acquire(blocking=False):
            raise ConsumerConflict(
                f"thread {threading.current_thread().name!r} drained the sensor while "
                f"{self._drainer!r} was draining it: each record would reach only one of them")
        try:
            self._drainer = threading.current_thread().name
            return self._take(max_items, timeout_s)
        finally:
            self._draining.release()

    def _take(self, max_items: int, timeout_s: float) -> list[Item]:
        out = self._carry
        self._carry = []
        if not out:
            try:
                out = self._queue.get(timeout=timeout_s) if timeout_s > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                return []
        while len(out) < max_items:
            try:
                out += self._queue.get_nowait()
            except queue.Empty:
                break
        if len(out) > max_items:
            self._carry = out[max_items:]
            del out[max_items:]
        self._taken += record_count(out)
        return out

    def drain(self, max_events: int, timeout_s: float) -> list[Event]:
        """Up to ``max_events`` events, waiting at most ``timeout_s`` for the first one. Lane
        runs are never among them: the lane encodes only for processes an exporter that drains
        items registered (lane.py), and such a consumer calls ``drain_items``."""
        return [item for item in self.drain_items(max_events, timeout_s) if type(item) is Event]

    @property
    def running(self) -> bool:
        """Probes attached and the poll thread alive."""
        return self._program is not None and self._thread is not None and \
            self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._program is not None:
            self._program.close()
            self._program = None

    def stats(self) -> dict[str, Any]:
        """Counters for summaries and tests (kernel drops read live when running)."""
        kernel = self._program.kernel_drops() if self._program is not None else None
        stash = self._program.stash_drops() if self._program is not None else None
        misses = self._program.recursion_misses() if self._program is not None else None
        return {
            "records": self._records,
            "kernel_drops": kernel,
            "stash_drops": stash,  # syscalls whose entry state found its stash map full
            "recursion_misses": misses,  # program runs the kernel skipped (another BPF on CPU)
            "budget_drops": self.budget.total,
            "budget_offenders": list(self._offenders),
            "queue_drops": self._queue_drops,
            "lane_events": self._lane_events,  # file opens the native lane encoded
            "decode_errors": self._decode_errors,
            "queued": self._put - self._taken,
            "events_by_name": dict(self._events_by_name),
            "process_table_size": len(self.ctx.table) if self.ctx else 0,
            "file_repeats": kernel_repeats(self._program.tables if self._program else None),
            **(self.ctx.cgroups.stats() if self.ctx else {}),  # cgroup id -> container lookups
        }

    def __enter__(self) -> "Sensor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
