"""The native lane (ebpf/lane.py, native/src/lane.rs): byte identity with the Python path, and
every registry invalidation falling back to Python.

The Python path is the reference: FileProbe.decode with the sensor's EventContext, then
OtlpBuilder.logs_bytes. The lane's runs go through the same builder, so the two requests
compare byte for byte (Resource, span ids, record order and every attribute). Record sequence
numbers (``log.record.uid``) are one counter for both paths; the Python side replays the
numbers the lane used.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import time
from dataclasses import replace
from typing import Iterator, Optional, Sequence

import pytest

from otelguard import semconv as sc
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.events import Event
from otelguard.ebpf.file import SYSCALLS, FileProbe, FileRecord
from otelguard.ebpf.lane import FastLane, LaneItem, lane_available, layout_matches, open_lane
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.proctable import ProcessTable
from otelguard.ebpf.sensor import ATTRS_TTL_NS, EventContext, Sensor
from otelguard.ebpf.settings import SensorConfig
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from tests.ebpf.containers import container
from tests.support.sensor import SCOPE, scope_dirs

pytestmark = pytest.mark.skipif(not lane_available(), reason="native extension not built")

NODE = NodeIdentity("node-1", "host-1", "0123456789abcdef0123456789abcdef")
OBSERVED = 1_763_900_001_000_000_000
PROBE = FileProbe()
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND = 0o1, 0o2, 0o100, 0o1000, 0o2000
O_CLOEXEC, O_TMPFILE = 0o2000000, 0o20200000


def own_cgroup_id() -> int:
    with open("/proc/self/cgroup") as fh:
        rel = next((ln.split(":", 2)[2].strip() for ln in fh if ln.startswith("0::")), "/")
    return os.stat("/sys/fs/cgroup" + rel).st_ino


def record(path: bytes, flags: int = O_WRONLY, ret: int = 3, syscall: str = "openat",
           mode: int = 0, repeat: int = 0, pid: Optional[int] = None, type_id: int = 20,
           comm: bytes = b"lane-test", cgroup_id: Optional[int] = None) -> bytes:
    """A file record as file.bpf.c submits it (this process unless ``pid``)."""
    rec = FileRecord()
    rec.h.ktime_ns = time.monotonic_ns()
    rec.h.cgroup_id = own_cgroup_id() if cgroup_id is None else cgroup_id
    rec.h.ret = ret
    rec.h.type = type_id
    rec.h.pid = rec.h.tid = os.getpid() if pid is None else pid
    rec.h.uid, rec.h.gid = os.getuid(), os.getgid()
    rec.h.size = ctypes.sizeof(FileRecord)
    rec.h.comm = comm
    rec.dfd = -100
    rec.sc = next(i for i, s in enumerate(SYSCALLS) if s.name == syscall)
    rec.type = type_id
    rec.flags = flags
    rec.mode = mode
    rec.repeat = repeat
    rec.path = path
    return bytes(rec)


class Harness:
    """A sensor's EventContext (real process table, cgroup cache, clock) with a lane wired in
    as Sensor.start wires it, and the exporter's builder registering into that lane."""

    def __init__(self, ttl_ns: int = ATTRS_TTL_NS, config: ProbeConfig = ProbeConfig(),
                 ctx: Optional[EventContext] = None) -> None:
        if ctx is None:
            clock = KernelClock()
            ctx = EventContext(ProcessTable(clock), CgroupResolver(), clock, config)
        self.ctx = ctx
        self.lane = FastLane(ctx.uid_prefix, ctx.probe_config, ttl_ns, 1024)
        ctx.lane, ctx.next_seq, ctx.table.changed = self.lane, self.lane.next_seq, self.lane.forget
        self.builder = OtlpBuilder(NODE, clock=lambda: OBSERVED, lane=self.lane)

    def python(self, records: Sequence[bytes]) -> list[Event]:
        out = []
        for raw in records:
            ev = PROBE.decode(20, raw, self.ctx)
            if ev is not None:
                out.append(ev)
        return out

    def learn(self, raw: bytes) -> None:
        """The exporter encodes one record of the process: the lane learns it."""
        self.builder.logs_bytes(self.python([raw]))

    def through_lane(self, records: Sequence[bytes]) -> list[LaneItem]:
        self.lane.set_offset(self.ctx.clock.to_wall_ns(0))
        return self.lane.process(records, OBSERVED)

    def identical(self, records: Sequence[bytes]) -> list[LaneItem]:
        """The lane's request for ``records`` equals the Python path's, byte for byte; every
        record went through the lane."""
        seq = self.lane.next_seq()  # the numbers the lane takes start after this one
        items = self.through_lane(records)
        assert all(not isinstance(i, bytes) for i in items), "a record fell back to Python"
        assert sum(i.count for i in items if not isinstance(i, bytes)) == len(records)
        lane_request = self.builder.logs_bytes(items)
        self.ctx.next_seq = itertools.count(seq + 1).__next__
        self.builder.lane = None
        try:
            python_request = self.builder.logs_bytes(self.python(records))
        finally:
            self.builder.lane = self.lane
            self.ctx.next_seq = self.lane.next_seq
        assert lane_request == python_request
        return items


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    h.learn(record(b"/tmp/lane-first"))
    yield h


def test_the_record_layout_is_the_one_lane_rs_reads() -> None:
    assert layout_matches()


def test_opens_encode_to_the_python_paths_bytes(harness: Harness) -> None:
    records = [
        record(b"/tmp/lane-a"),
        record(b"/tmp/lane-b", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode=0o100644),
        record(b"/var/log/x.log", O_WRONLY | O_APPEND, ret=7, syscall="open"),
        record(b"/etc/shadow", 0),  # read-only, under a default read prefix
        record(b"/tmp/lane-c", O_RDWR | O_TMPFILE, mode=0o600, syscall="openat2"),
        record(b"/tmp/lane-d", O_WRONLY | O_CREAT | O_TRUNC, syscall="creat", mode=0o644),
        record(b"/tmp/lane-e", O_WRONLY, repeat=41),  # deduplicated in the kernel
        record(b"/", O_WRONLY),  # the root: empty name, directory "/"
        record(b"/tmp/d\xc3\xa9j\xc3\xa0-vu", O_WRONLY, comm=b"caf\xc3\xa9"),  # UTF-8
        record(b"/opt/a../b", O_WRONLY),  # "../" inside a name, not a component
        record(b"/tmp/x" + b"y" * 240, O_WRONLY | 0o40000000000),  # unknown flag bit, long
    ]
    items = harness.identical(records)
    assert len(items) == 1  # one process: one run


def test_records_of_two_processes_make_two_runs_in_order(harness: Harness) -> None:
    parent = os.getppid()
    harness.learn(record(b"/tmp/lane-parent", pid=parent))
    mixed = [record(b"/tmp/1"), record(b"/tmp/2"), record(b"/tmp/3", pid=parent),
             record(b"/tmp/4")]
    items = harness.identical(mixed)
    assert [(i.pid, i.count) for i in items if not isinstance(i, bytes)] == \
        [(os.getpid(), 2), (parent, 1), (os.getpid(), 1)]


@pytest.mark.parametrize("raw", [
    record(b"tmp/relative"),  # needs the cwd
    record(b"/tmp//double"),  # not normalised
    record(b"/tmp/./dot"),
    record(b"/tmp/../up"),
    record(b"/tmp/trailing/"),
    record(b"/tmp/fail", ret=-13),  # error.type, strerror
    record(b"/tmp/bad-\xff", O_WRONLY),  # not UTF-8
    record(b"/tmp/comm", comm=b"bad\xff"),
    record(b"/tmp/other", pid=1),  # a pid the lane was not told about
    record(b"/tmp/cg", cgroup_id=987_654_321),  # a cgroup the lane was not told about
    record(b"/tmp/x", type_id=21, syscall="unlink"),  # not an open
    record(b"/tmp/not-watched", 0),  # read-only, no read prefix: Python filters it
], ids=["relative", "double-slash", "dot", "dotdot", "trailing-slash", "failed", "bad-utf8",
        "bad-comm", "unknown-pid", "other-cgroup", "unlink", "unwanted-read"])
def test_what_the_lane_does_not_encode_falls_back_to_python_in_order(
        harness: Harness, raw: bytes) -> None:
    ok = record(b"/tmp/ok")
    items = harness.through_lane([ok, raw, ok])
    assert [type(i) is bytes for i in items] == [False, True, False]
    assert items[1] is raw  # the record itself, for the probe's decode


def _still_encoded(h: Harness) -> bool:
    (item,) = h.through_lane([record(b"/tmp/probe")])
    return not isinstance(item, bytes)


@pytest.mark.parametrize("change", ["exec", "exit", "chdir", "memfd"])
def test_a_process_change_makes_the_lane_forget_it(harness: Harness, change: str) -> None:
    table, pid, wall = harness.ctx.table, os.getpid(), time.time_ns()
    assert _still_encoded(harness)
    before = harness.python([record(b"/tmp/before")])  # decoded before the change
    if change == "exec":
        table.on_exec(pid, sys.executable, ["python"], os.getuid(), os.getgid(), wall, "python")
    elif change == "exit":
        table.on_exit(pid, wall, 0)
    elif change == "chdir":
        table.on_chdir(pid, "/")
    else:
        table.on_memfd(pid, 9, "payload", False)
    assert not _still_encoded(harness)
    # the exporter encoding a record decoded before the change registers nothing stale
    harness.lane._learned.clear()
    harness.builder.logs_bytes(before)
    assert not _still_encoded(harness)
    # attributes the Python path builds after the change are learned again
    info = table.get(pid)
    assert info is not None
    info.attrs_cache = None
    harness.learn(record(b"/tmp/again"))
    assert _still_encoded(harness)


def test_a_fork_forgets_the_child_pid_and_keeps_the_parent_encoded(harness: Harness) -> None:
    """A fork changes nothing the parent's records carry: the lane keeps its entry (a process
    forking every few ms, as the agent-shaped bench mix does, would otherwise never be
    encoded); the child's pid is forgotten (an entry of an earlier process with that pid)."""
    table, pid = harness.ctx.table, os.getpid()
    forgotten: list[int] = []
    forget = table.changed
    assert forget is not None

    def spy(p: int) -> None:
        forgotten.append(p)
        forget(p)

    table.changed = spy
    try:
        assert _still_encoded(harness)
        table.on_fork(pid, 4_000_001, time.time_ns())
        assert _still_encoded(harness)
        assert forgotten == [4_000_001]
    finally:
        table.changed = forget


def test_eviction_from_the_process_table_forgets_the_pid() -> None:
    h = Harness()  # a fresh table: ours is its first entry (then its ancestors)
    h.learn(record(b"/tmp/lane-first"))
    assert _still_encoded(h)
    table = h.ctx.table
    table.max_entries = len(table)
    known = {p.pid for p in table}
    other = next(int(d) for d in os.listdir("/proc") if d.isdigit() and int(d) not in known
                 and table.get(int(d), load=False) is None and os.path.exists(f"/proc/{d}/stat"))
    assert table.get(other) is not None  # another process enters, the oldest (ours) leaves
    assert os.getpid() not in {p.pid for p in table}
    assert not _still_encoded(h)


def test_a_storm_of_changes_forgets_every_pid_at_once(harness: Harness) -> None:
    assert _still_encoded(harness)
    before = harness.python([record(b"/tmp/before")])
    for pid in range(10_000_000, 10_000_000 + 65_536):  # other pids changing
        harness.lane.forget(pid)
    assert not _still_encoded(harness)
    harness.lane._learned.clear()
    harness.builder.logs_bytes(before)  # built before the storm: refused
    assert not _still_encoded(harness)
    info = harness.ctx.table.get(os.getpid())
    assert info is not None
    info.attrs_cache = None
    harness.learn(record(b"/tmp/again"))
    assert _still_encoded(harness)


def test_the_tracker_forgetting_a_span_makes_the_lane_forget_the_pid(harness: Harness) -> None:
    assert _still_encoded(harness)
    assert harness.builder.spans.released is not None
    harness.builder.spans.released(os.getpid())
    assert not _still_encoded(harness)


def test_entries_older_than_the_ttl_fall_back() -> None:
    h = Harness(ttl_ns=200_000_000)
    h.learn(record(b"/tmp/lane-first"))
    assert _still_encoded(h)
    time.sleep(0.25)
    assert not _still_encoded(h)
    assert not h.lane.native.knows(os.getpid())


def test_auto_is_on_when_built_and_off_is_off() -> None:
    assert open_lane("auto", "x", ProbeConfig(), ATTRS_TTL_NS, 16) is not None
    assert open_lane("off", "x", ProbeConfig(), ATTRS_TTL_NS, 16) is None


# --- records from the real kernel -----------------------------------------------------------

OPENER = """
import os, sys, time
end = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < end:
    fd = os.open(f"{sys.argv[1]}/f{i % 50}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    os.close(fd)
    i += 1
    time.sleep(0.002)
"""


class TapSensor(Sensor):
    """Keeps the raw open records of one pid on their way to decode (the lane off)."""

    tap_pid = 0

    def _on_items(self, items: Sequence[object]) -> int:  # type: ignore[override]
        self.tapped: list[bytes] = getattr(self, "tapped", [])
        for raw in items:
            if isinstance(raw, bytes) and len(raw) >= ctypes.sizeof(FileRecord):
                rec = FileRecord.from_buffer_copy(raw)
                if rec.h.pid == self.tap_pid and rec.h.type == 20:
                    self.tapped.append(raw)
        return super()._on_items(items)  # type: ignore[arg-type]


def _config(lane: str) -> SensorConfig:
    scope_dirs()
    return SensorConfig(probes=("process", "file"), cgroup_scope=SCOPE, native_lane=lane,  # type: ignore[arg-type]
                        probe=ProbeConfig(dedup_window_ms=0))


@pytest.mark.kernel
def test_kernel_records_encode_to_the_python_paths_bytes(tmp_path: str) -> None:
    s = TapSensor(_config("off"))
    with s, container() as c:
        proc = c.popen([sys.executable, "-c", OPENER, str(tmp_path), "1.5"])
        s.tap_pid = proc.pid
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            s.drain(65536, 0.05)
        for _ in range(20):
            s.drain(65536, 0.05)
        tapped = list(getattr(s, "tapped", []))
    # the loop's opens (the interpreter's own start-up opens are mostly relative or failed)
    tapped = [r for r in tapped
              if FileRecord.from_buffer_copy(r).path.startswith(str(tmp_path).encode() + b"/f")]
    assert len(tapped) > 50
    h = Harness(ctx=s.ctx)
    h.learn(tapped[0])
    h.identical(tapped[1:])


@pytest.mark.kernel
def test_a_sensor_with_the_lane_ships_file_opens_it_encoded(tmp_path: str) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    s = Sensor(_config("on"))
    got: list[object] = []
    with s, container() as c:
        assert s.status.native_lane and s.lane is not None
        builder = OtlpBuilder(NODE, lane=s.lane)
        proc = c.popen([sys.executable, "-c", OPENER, str(tmp_path), "2"])
        deadline = time.monotonic() + 20
        requests = []
        while (proc.poll() is None or s.stats()["queued"]) and time.monotonic() < deadline:
            items = s.drain_items(512, 0.05)
            got += items
            if items:
                requests.append(builder.logs_bytes(items))
    while items := s.drain_items(512, 0):  # what stopping took out of the ring
        got += items
        requests.append(builder.logs_bytes(items))
    stats = s.stats()
    assert stats["lane_events"] > 50
    runs = [i for i in got if not isinstance(i, Event)]
    assert sum(r.count for r in runs) == stats["lane_events"]  # type: ignore[attr-defined]
    lane_pids = {r.pid for r in runs}  # type: ignore[attr-defined]
    assert lane_pids == {proc.pid}
    records = []
    for data in requests:
        req = ExportLogsServiceRequest()
        req.ParseFromString(data)
        for rl in req.resource_logs:
            rattrs = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    attrs = {kv.key: kv.value for kv in r.attributes}
                    if attrs[sc.PROCESS_PID].int_value == proc.pid and \
                            r.event_name == sc.EV_FILE_OPEN:
                        records.append((rattrs, attrs, r))
    assert len(records) >= stats["lane_events"]
    loop = [(ra, a, r) for ra, a, r in records
            if a[sc.FILE_PATH].string_value.startswith(str(tmp_path) + "/f")]
    assert len(loop) > 50
    for rattrs, attrs, r in loop:
        assert rattrs[sc.CONTAINER_ID] == c.container_id
        assert attrs[sc.FILE_MODE].string_value == "0640"
        assert attrs[sc.FILE_OPEN_FLAGS].string_value == "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC" \
            or attrs[sc.FILE_OPEN_FLAGS].string_value == "O_WRONLY|O_CREAT|O_TRUNC"
        assert len(r.trace_id) == 16 and len(r.span_id) == 8
    uids = [a[sc.LOG_RECORD_UID].string_value for _, a, _ in records]
    assert len(set(uids)) == len(uids)  # one counter for both paths


def test_the_lane_mode_is_a_config_key() -> None:
    assert replace(SensorConfig(), native_lane="off").native_lane == "off"


WITHOUT_EXTENSION = """
import sys
sys.modules["otelguard_native"] = None  # as if native/ was never built: import fails
from otelguard.ebpf.errors import SensorError
from otelguard.ebpf.lane import lane_available, open_lane
from otelguard.ebpf.probe import ProbeConfig
assert not lane_available()
assert open_lane("auto", "x", ProbeConfig(), 1, 16) is None
try:
    open_lane("on", "x", ProbeConfig(), 1, 16)
except SensorError as exc:
    print("refused:", exc)
"""


def test_without_the_extension_auto_is_off_and_on_is_refused() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTENSION], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.startswith("refused: sensor.native_lane: on")
