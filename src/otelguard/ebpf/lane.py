"""The native fast lane: file-open records of known processes -> final OTLP LogRecord bytes in Rust.

Why: on the Python path a record costs ~10-19 µs (ctypes decode, event context, ~25 dict
inserts, then the exporter's span lookup and encoding); an agent-shaped flood is mostly opens
of processes already seen. The lane (``native/src/lane.rs``, ``otelguard_native.Lane``) turns
such a record into the LogRecord bytes the Python path would produce, without building an
Event; ``bench.hot_path`` measures both side by side (docs/benchmarks.md, "Native lane").

What it encodes: a successful open (file.py's ``T_OPEN``, an open-family syscall) whose path as
passed is absolute, normalised UTF-8, by a pid the lane has an entry for, in the cgroup the entry
was registered in; everything else comes back as the raw record, in ring order, for the probes'
``decode`` (the lane's output is a list of items: a :class:`LaneRun` per run of encoded records
of one process, the record's bytes otherwise). Read-only opens are re-checked against the read
filter exactly as file.py does.

The registry (pid -> what that process's records carry): the exporter registers a pid from a
record the Python path built (``learn``: the encoded process attribute block, the span ids the
span tracker gave it, the Resource and the process start), once per process version. The poll
thread tells the lane the cgroups it resolves and the process table tells it every pid whose
entry it changes (exec, exit, chdir, memfd, eviction, a fork's child: ``forget``). An entry is refused
when its attributes were built before the pid was last forgotten, and not used once older
than the sensor's attribute lifetime (``ATTRS_TTL_NS``), after which the Python path rebuilds
them: so the lane never emits stale attributes, and its bytes equal the Python path's
(tests/ebpf/test_lane.py). ``log.record.uid`` numbers come from one counter for both paths.

Threads: the poll thread drains through the lane and forgets; the exporter thread registers.
Every call holds the GIL for its whole length (no call releases it), so they never interleave.
Config: ``sensor.native_lane`` (auto: on when the extension is built).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional, Protocol, Sequence, Union

from otelguard import semconv
from otelguard.ebpf.errors import SensorError
from otelguard.ebpf.events import UNRESOLVED_POD_UID, Event, ProcessAttrs
from otelguard.ebpf.file import SYSCALLS, T_OPEN, FileRecord
from otelguard.ebpf.probe import Header, ProbeConfig
from otelguard.ebpf.ringbuf import NativeRingReader, RingReader

LaneMode = Literal["auto", "on", "off"]

# lane.rs reads records at these offsets (struct og_file_rec); a Lane is made only when the
# ctypes mirror agrees
LAYOUT = {"ktime_ns": (Header, 0), "cgroup_id": (Header, 8), "ret": (Header, 16),
          "type": (Header, 24), "pid": (Header, 28), "uid": (Header, 36), "comm": (Header, 48),
          "sc": (FileRecord, 72), "flags": (FileRecord, 80), "mode": (FileRecord, 88),
          "repeat": (FileRecord, 100), "path": (FileRecord, 112)}
RECORD_SIZE = 624

# the event name and attribute keys lane.rs writes, in the order of its K_* indexes
KEYS = (semconv.EV_FILE_OPEN, semconv.FILE_REPEAT_COUNT, semconv.FILE_OPEN_FLAGS,
        semconv.FILE_MODE, semconv.FILE_FD, semconv.FILE_PATH, semconv.FILE_RAW_PATH,
        semconv.FILE_NAME, semconv.FILE_DIRECTORY, semconv.PROCESS_DURATION_NS,
        semconv.PROCESS_COMM, semconv.SYSCALL_NAME, semconv.SYSCALL_RET,
        semconv.LOG_RECORD_UID, semconv.PROCESS_LINUX_CGROUP, semconv.PROCESS_REAL_USER_ID)


class LaneRun(Protocol):
    """``otelguard_native.LaneRun``: a run of records of one process the lane encoded."""

    @property
    def container_id(self) -> str: ...
    @property
    def pod_uid(self) -> str: ...
    @property
    def pid(self) -> int: ...
    @property
    def process_start_ns(self) -> int: ...
    @property
    def count(self) -> int:
        """Records in the run."""
        ...
    @property
    def last_time_ns(self) -> int: ...
    @property
    def data(self) -> bytes:
        """ScopeLogs ``log_records`` fields (tag 2), back to back."""
        ...


LaneItem = Union[bytes, LaneRun]  # what the lane hands back: a raw record or an encoded run


def lane_available() -> bool:
    """The extension is built with the lane (``make setup``)."""
    try:
        import otelguard_native
    except ImportError:
        return False
    return hasattr(otelguard_native, "Lane")


def layout_matches() -> bool:
    """The ctypes mirror of the file record has the offsets lane.rs reads."""
    import ctypes

    return ctypes.sizeof(FileRecord) == RECORD_SIZE and all(
        getattr(struct, name).offset == at for name, (struct, at) in LAYOUT.items())


def record_count(items: Sequence[object]) -> int:
    """Records in a batch of items (a LaneRun stands for ``count`` records)."""
    n = len(items)
    for item in items:
        if type(item) is not bytes and type(item) is not Event:
            n += item.count - 1  # type: ignore[attr-defined]  # a LaneRun
    return n


class FastLane:
    """The sensor's handle on one ``otelguard_native.Lane``; see the module docstring."""

    def __init__(self, uid_prefix: str, config: ProbeConfig, ttl_ns: int,
                 max_entries: int) -> None:
        import otelguard_native

        syscalls = [sc.name if sc.type_id == T_OPEN else None for sc in SYSCALLS]
        self.native = otelguard_native.Lane(
            list(KEYS), uid_prefix, syscalls, list(config.read_prefixes),
            list(config.read_paths), ttl_ns, max_entries)
        self.next_seq = self.native.next_seq
        self.set_offset = self.native.set_offset
        self.forget = self.native.forget
        self._cgroups: dict[int, tuple[str, str, str]] = {}  # what the lane was told
        self._learned: dict[int, ProcessAttrs] = {}  # exporter thread: pid -> registered part

    # --- poll thread ----------------------------------------------------------------------
    def note_cgroup(self, cgroup_id: int, path: str, container_id: str, pod_uid: str) -> None:
        """What the sensor's cgroup resolver said about ``cgroup_id`` (told when it changes)."""
        seen = (path, container_id, pod_uid)
        if self._cgroups.get(cgroup_id) != seen:
            if len(self._cgroups) >= 16384:
                self._cgroups.clear()
            self._cgroups[cgroup_id] = seen
            self.native.note_cgroup(cgroup_id, path, container_id, pod_uid)

    def process(self, records: Sequence[bytes],
                observed_ns: Optional[int] = None) -> list[LaneItem]:
        """``records`` as items in order, observed at ``observed_ns`` (default: now)."""
        return list(self.native.process(list(records), time.time_ns() if observed_ns is None
                                        else observed_ns))

    def drain(self, reader: RingReader, max_records: int, timeout_ms: int) -> list[LaneItem]:
        """One batch from ``reader`` as items: straight from the ring with the native reader
        (no bytes object for an encoded record), else the reader's batch through the lane."""
        if isinstance(reader, NativeRingReader):
            return reader.drain_lane(self.native, max_records, timeout_ms, time.time_ns())
        return self.process(reader.drain(max_records, timeout_ms))

    # --- exporter thread ------------------------------------------------------------------
    def learn(self, ev: Event, trace_id: bytes, span_id: bytes) -> None:
        """Register ``ev``'s process from a record the Python path encoded with these span
        ids (once per process version; the lane refuses a stale one)."""
        process, own = ev.split()
        if process is None or process.wire is None or not process.built_ns or \
                self._learned.get(ev.pid) is process or not trace_id or \
                ev.pod_uid == UNRESOLVED_POD_UID:
            return
        if not process.attrs.keys().isdisjoint(own):
            return  # the encoder merged the parts: no shared block to reuse
        if len(self._learned) >= 65536:
            self._learned.clear()
        self._learned[ev.pid] = process
        self.native.register(ev.pid, process.built_ns, ev.process_start_ns, ev.cgroup_path,
                             ev.container_id, ev.pod_uid, process.wire, trace_id, span_id)

    @property
    def encoded(self) -> int:
        return int(self.native.encoded)


def open_lane(mode: LaneMode, uid_prefix: str, config: ProbeConfig, ttl_ns: int,
              max_entries: int) -> Optional[FastLane]:
    """The lane ``sensor.native_lane`` asks for: None when off (or auto without the
    extension); SensorError when on and it cannot run."""
    if mode == "off":
        return None
    if not lane_available() or not layout_matches():
        if mode == "auto":
            return None
        raise SensorError("sensor.native_lane: on, but the native extension is not built with "
                          "the lane (run `make setup` with cargo on PATH) or the file record "
                          "layout differs from native/src/lane.rs")
    return FastLane(uid_prefix, config, ttl_ns, max_entries)
