"""The sensor: loads the probes, polls the ring buffer, decodes records into enriched Events.

Threads: ``start()`` loads (program cache, else a compile: seconds), then one poll thread drains
the ring buffer in batches through a RingReader on its map fd (ringbuf.py: the native reader, or
the mmap one when the extension is not built; ``ring_reader: bcc`` polls with libbcc_bpf and one
Python callback per record) and decodes each record (the probe's ``decode`` with
:class:`EventContext`) and enqueues it into a bounded queue, nothing more. A full
queue drops the event and counts it (``otelguard_dropped_total{stage="user_queue"}``); records
the kernel could not put in the ring buffer are counted from ``og_drops`` once a second
(``stage="kernel_ring"``), and those a flooding cgroup had over its budget from the budget's
maps (``stage="kernel_budget"``, budget.py), whose top offenders are logged at most every
``BUDGET_LOG_S`` while drops go on. Consumers call ``drain()`` from their own thread.

Our own process is filtered in the kernel (``OG_SELF_TGID``), so the sensor's ``/proc`` reads
never feed back into the ring buffer.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

from otelguard import semconv, telemetry
from otelguard.ebpf.budget import BudgetLedger, Offender
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock, iso8601
from otelguard.ebpf.errors import LoadError, SensorError
from otelguard.ebpf.events import AttrValue, Event, ProcessAttrs
from otelguard.ebpf.file import due_repeats, kernel_repeats
from otelguard.ebpf.openfilter import normalize
from otelguard.ebpf.loader import LoadedProgram, load, program_cache
from otelguard.ebpf.probe import Header, Probe, ProbeConfig, c_string
from otelguard.ebpf.proctable import ProcessInfo, ProcessTable
from otelguard.ebpf.registry import discover
from otelguard.ebpf.ringbuf import RingError, RingReader, open_reader, resolve_kind
from otelguard.ebpf.settings import SensorConfig

AT_FDCWD = -100
ATTRS_TTL_S = 2.0
BUDGET_LOG_S = 10.0  # at most one "over budget" log line per this many seconds
log = logging.getLogger(__name__)
_TYPE_OFFSET = Header.type.offset
_HEADER_SIZE = ctypes.sizeof(Header)
READER_BATCH = 4096  # records per RingReader.drain: one Python call per batch


class EventContext:
    """The DecodeContext the probes get: time, identity, process attributes, path resolution.

    Also the ProcessLifecycle the process probe uses to keep the table. Used only from the poll
    thread. Cost per event: a process-table hit, a cgroup-cache hit and ~25 dict inserts.
    """

    def __init__(self, table: ProcessTable, cgroups: CgroupResolver, clock: KernelClock,
                 probe_config: ProbeConfig) -> None:
        self.table = table
        self.cgroups = cgroups
        self.clock = clock
        self.probe_config = probe_config
        self._uid_prefix = secrets.token_hex(6)
        self._comms: dict[bytes, str] = {}  # raw comm -> text; bounded in make_event
        self._seq = itertools.count(1)

    # --- DecodeContext -------------------------------------------------------------------------
    def make_event(self, hdr: Header, name: str, syscall: str,
                   attrs: dict[str, AttrValue]) -> Event:
        pid = hdr.pid
        wall = self.clock.to_wall_ns(hdr.ktime_ns)
        cg_path, ident = self.cgroups.resolve(hdr.cgroup_id, pid)
        info = self.table.get(pid)
        ret = hdr.ret
        raw_comm = hdr.comm  # a ctypes char array field reads as bytes cut at the first NUL
        comm = self._comms.get(raw_comm)
        if comm is None:
            if len(self._comms) >= 4096:
                self._comms.clear()
            comm = self._comms[raw_comm] = c_string(raw_comm)
        a = attrs  # the event's own attributes; the process part is shared (see events.py)
        if info is None:
            ev = Event(name, wall, pid, hdr.tid, syscall, ret, ident.container_id,
                       ident.pod_uid, cg_path, attrs=a, body=f"{syscall} by {comm}")
            a.setdefault(semconv.PROCESS_PID, pid)
            a.setdefault(semconv.PROCESS_EXECUTABLE_NAME, comm)
            a.setdefault(semconv.PROCESS_USER_ID, hdr.uid)
            a.setdefault(semconv.PROCESS_GROUP_ID, hdr.gid)
        else:
            start = info.start_ns
            ev = Event(name, wall, pid, hdr.tid, syscall, ret, ident.container_id,
                       ident.pod_uid, cg_path, start, info.root_pid, info.root_start_ns,
                       a, f"{syscall} by {info.exe_name}", self._process_attrs(info))
            if start:
                a[semconv.PROCESS_DURATION_NS] = wall - start if wall > start else 0
        # none of these keys is in the process part, so setdefault on the event's own is exact
        a.setdefault(semconv.PROCESS_COMM, comm)  # Falco's proc.name
        a.setdefault(semconv.SYSCALL_NAME, syscall)
        a.setdefault(semconv.SYSCALL_RET, ret)
        if ret < 0:
            a.setdefault(semconv.ERROR_TYPE, errno.errorcode.get(-ret, str(-ret)))
        a[semconv.LOG_RECORD_UID] = f"{self._uid_prefix}-{next(self._seq):x}"
        if cg_path:
            a.setdefault(semconv.PROCESS_LINUX_CGROUP, cg_path)
        a.setdefault(semconv.PROCESS_REAL_USER_ID, hdr.uid)
        return ev

    def _process_attrs(self, info: ProcessInfo) -> ProcessAttrs:
        """The process's attributes as one shared, immutable object, rebuilt after exec/chdir or
        when older than ``ATTRS_TTL_S`` (ancestors may have exec'd since). Every event of the
        process version points at the same object, so the exporter encodes it once."""
        now = time.monotonic()
        cached = info.attrs_cache
        if cached is not None and now - info.attrs_cache_at < ATTRS_TTL_S:
            return cached
        a: dict[str, AttrValue] = {semconv.PROCESS_PID: info.pid,
                                   semconv.PROCESS_PARENT_PID: info.ppid,
                                   semconv.PROCESS_EXECUTABLE_NAME: info.exe_name}
        if info.exe_path:
            a[semconv.PROCESS_EXECUTABLE_PATH] = info.exe_path
        if info.args:
            a[semconv.PROCESS_COMMAND_LINE] = info.command_line
            a[semconv.PROCESS_COMMAND_ARGS] = list(info.args)
            a[semconv.PROCESS_ARGS_COUNT] = len(info.args)
        if info.uid >= 0:
            a[semconv.PROCESS_USER_ID] = info.uid
            if info.user_name is None:
                info.user_name = self.table.user_name(info.pid, info.uid)
            if info.user_name:
                a[semconv.PROCESS_USER_NAME] = info.user_name
        if info.gid >= 0:
            a[semconv.PROCESS_GROUP_ID] = info.gid
            if info.group_name is None:
                info.group_name = self.table.group_name(info.pid, info.gid)
            if info.group_name:
                a[semconv.PROCESS_GROUP_NAME] = info.group_name
        if info.vpid:
            a[semconv.PROCESS_VPID] = info.vpid
        if info.vpgid:
            a[semconv.PROCESS_VPGID] = info.vpgid
        if info.cwd:
            a[semconv.PROCESS_WORKING_DIRECTORY] = info.cwd
        if info.start_ns:
            a[semconv.PROCESS_CREATION_TIME] = iso8601(info.start_ns)
        a[semconv.PROCESS_TTY] = info.tty
        a[semconv.PROCESS_INTERACTIVE] = info.tty != 0
        if info.login_uid >= 0:
            a[semconv.PROCESS_LOGIN_UID] = info.login_uid
        if info.caps:
            a[semconv.PROCESS_CAP_EFFECTIVE] = list(info.caps)
        if info.cap_permitted is not None:  # an empty set too: "holds none" is a fact rules test
            a[semconv.PROCESS_CAP_PERMITTED] = list(info.cap_permitted)
        if info.env:
            a[semconv.PROCESS_ENV] = list(info.env)
        a[semconv.PROCESS_EXE_FROM_MEMFD] = info.exe_from_memfd
        a[semconv.PROCESS_EXE_DELETED] = info.exe_deleted
        a[semconv.PROCESS_EXE_UPPER_LAYER] = info.exe_upper_layer
        ancestors = self.table.ancestors(info)
        if ancestors:
            parent = ancestors[0]
            a[semconv.PROCESS_PARENT_EXECUTABLE_NAME] = parent.exe_name
            if parent.exe_path:
                a[semconv.PROCESS_PARENT_EXECUTABLE_PATH] = parent.exe_path
            if parent.command_line:
                a[semconv.PROCESS_PARENT_COMMAND_LINE] = parent.command_line
            # comms (the names exec'ed: an applet link's, not busybox), as Falco's proc.aname
            a[semconv.PROCESS_ANCESTORS] = [p.comm or p.exe_name for p in ancestors]
            a[semconv.PROCESS_ANCESTOR_PIDS] = [p.pid for p in ancestors]
        if info.sid:
            a[semconv.PROCESS_SESSION_LEADER_PID] = info.sid
            leader = session_leader(info, ancestors)
            if leader is not None:
                a[semconv.PROCESS_SID_EXE_NAME] = leader.comm or leader.exe_name
        process = ProcessAttrs(a)
        info.attrs_cache, info.attrs_cache_at = process, now
        return process

    def resolve_path(self, pid: int, dirfd: int, path: str) -> str:
        if path.startswith("/"):
            return normalize(path)
        if dirfd == AT_FDCWD or dirfd < 0:
            info = self.table.get(pid)
            base = info.cwd if info is not None and info.cwd else _readlink(f"/proc/{pid}/cwd")
        else:
            base = _readlink(f"/proc/{pid}/fd/{dirfd}")
        if not base:
            return path  # unknown base (process gone): keep it relative rather than guess
        if not path:
            return normalize(base)
        return normalize(f"{base}/{path}")

    # --- ProcessLifecycle ----------------------------------------------------------------------
    def on_exec(self, hdr: Header, path: str, argv: list[str], exec_fd: int = -1,
                env: Optional[list[str]] = None) -> None:
        self.table.on_exec(int(hdr.pid), path, argv, int(hdr.uid), int(hdr.gid),
                           self.clock.to_wall_ns(int(hdr.ktime_ns)), c_string(hdr.comm),
                           exec_fd, env or [])

    def on_memfd(self, hdr: Header, fd: int, name: str, cloexec: bool) -> None:
        self.table.on_memfd(int(hdr.pid), fd, name, cloexec)

    def on_fork(self, hdr: Header, parent_pid: int, child_pid: int) -> None:
        self.table.on_fork(parent_pid, child_pid, self.clock.to_wall_ns(int(hdr.ktime_ns)))

    def on_exit(self, hdr: Header, code: Optional[int]) -> None:
        self.table.on_exit(int(hdr.pid), self.clock.to_wall_ns(int(hdr.ktime_ns)), code)

    def on_chdir(self, hdr: Header, fd: int, path: str) -> None:
        pid = int(hdr.pid)
        if fd >= 0:
            new = _readlink(f"/proc/{pid}/cwd")  # after fchdir the link is the new cwd
            if new:
                self.table.on_chdir(pid, new)
            return
        self.table.on_chdir(pid, self.resolve_path(pid, AT_FDCWD, path))


def session_leader(info: ProcessInfo, ancestors: list[ProcessInfo]) -> Optional[ProcessInfo]:
    """Falco's ``proc.sname`` process: the one whose pid is the session id, else the eldest
    ancestor in the same session (the leader itself may be outside the table or gone)."""
    chain = [info, *ancestors]
    for p in chain:
        if p.pid == info.sid:
            return p
    same = [p for p in chain if p.sid == info.sid]
    return same[-1] if same else None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


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


class Sensor:
    """See the module docstring. ``start()`` once, ``drain()`` repeatedly, ``stop()`` once."""

    def __init__(self, config: SensorConfig, probes: Optional[list[Probe]] = None) -> None:
        self.config = config
        self._given = probes
        self.status = SensorStatus()
        # SimpleQueue (C, no task tracking) costs ~1/4 of queue.Queue per put+get; the bound is
        # a qsize() check in the callback, its only producer, so it holds exactly
        self._queue: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._queue_max = config.queue_size
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
        records = self._reader.drain(READER_BATCH, timeout_ms)
        self._on_batch(records)
        return len(records)

    def _poll_loop(self) -> None:
        program = self._program
        assert program is not None
        next_drops = time.monotonic() + 1.0
        while not self._stop.is_set():
            self._poll(program, self.config.poll_timeout_ms)
            self._count_events()
            now = time.monotonic()
            self.last_poll = now
            if now >= next_drops:
                program.account_kernel_drops()
                self._account_budget(program, now)
                self._on_batch(due_repeats(program.tables, program.probes, self.config.probe))
                next_drops = now + 1.0
        for _ in range(64):  # what is already in the ring; bounded while a flood goes on
            if self._poll(program, 0) != READER_BATCH:
                break
        self._on_batch(due_repeats(program.tables, program.probes, self.config.probe, stopping=True))
        self._count_events()
        program.account_kernel_drops()
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
        """Decode and enqueue records, nothing more: a RingReader's batch or BCC's one."""
        self._records += len(records)
        by_type, ctx, q, by_name = self._by_type, self.ctx, self._queue, self._events_by_name
        assert ctx is not None
        for raw in records:
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
            if event is None:
                continue
            if q.qsize() >= self._queue_max:
                self._queue_drops += 1
                self._queue_drop.inc()
                continue
            q.put(event)
            by_name[event.name] = by_name.get(event.name, 0) + 1

    def _decode_error(self, reason: str) -> None:
        self._decode_errors += 1
        telemetry.dropped.labels("decode", reason).inc()

    def drain(self, max_events: int, timeout_s: float) -> list[Event]:
        """Up to ``max_events`` events, waiting at most ``timeout_s`` for the first one."""
        out: list[Event] = []
        try:
            out.append(self._queue.get(timeout=timeout_s) if timeout_s > 0
                       else self._queue.get_nowait())
        except queue.Empty:
            return out
        while len(out) < max_events:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return out

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
        return {
            "records": self._records,
            "kernel_drops": kernel,
            "budget_drops": self.budget.total,
            "budget_offenders": list(self._offenders),
            "queue_drops": self._queue_drops,
            "decode_errors": self._decode_errors,
            "queued": self._queue.qsize(),
            "events_by_name": dict(self._events_by_name),
            "process_table_size": len(self.ctx.table) if self.ctx else 0,
            "file_repeats": kernel_repeats(self._program.tables if self._program else None),
        }

    def __enter__(self) -> "Sensor":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
