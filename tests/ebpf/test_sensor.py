"""Sensor-level behaviour on the real kernel: drop accounting, load isolation, self filter."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

import pytest

from otelguard.ebpf.errors import SensorError
from otelguard.ebpf.file import create as create_file_probe
from otelguard.ebpf.loader import load
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.process import create as create_process_probe
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from tests.ebpf.containers import container
from tests.support.metrics import sample
from tests.support.polling import wait_until
from tests.support.sensor import SCOPE, scope_dirs

pytestmark = pytest.mark.kernel

FILE_PROBE = create_file_probe()
PROCESS_PROBE = create_process_probe()

BURST = """
import os
p = "/tmp/og-burst-%d" % os.getpid()
for _ in range(10000):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
os.unlink(p)
"""


def _kernel_ring_drops() -> float:
    return sample("otelguard_dropped_total", stage="kernel_ring", reason="ringbuf_full")


def test_tiny_ring_buffer_counts_kernel_drops() -> None:
    # dedup off: the burst's opens are identical, and this test needs one record per open
    cfg = SensorConfig(probes=("file",), probe=ProbeConfig(ringbuf_pages=1, dedup_window_ms=0),
                       queue_size=1000)
    before = _kernel_ring_drops()
    with Sensor(cfg) as s, container() as c:
        c.run([sys.executable, "-c", BURST], timeout=60)
        deadline = time.monotonic() + 5
        while _kernel_ring_drops() == before and time.monotonic() < deadline:
            s.drain(100000, 0.1)
        stats = s.stats()
    assert stats["kernel_drops"] > 0
    # >=: other sensors in this process (the session one) count into the same metric
    assert _kernel_ring_drops() - before >= stats["kernel_drops"]
    assert stats["events_by_name"].get("otelguard.file.open", 0) > 0  # some still got through


def _queue_full() -> float:
    return sample("otelguard_dropped_total", stage="user_queue", reason="queue_full")


def test_full_user_queue_drops_and_counts() -> None:
    cfg = SensorConfig(probes=("file",), probe=ProbeConfig(dedup_window_ms=0), queue_size=10)
    before = _queue_full()
    with Sensor(cfg) as s, container() as c:
        c.run([sys.executable, "-c", BURST.replace("10000", "300")], timeout=60)
        wait_until(lambda: s.stats()["queue_drops"] > 0, 5, interval=0.1)
        stats = s.stats()
        assert len(s.drain(1000, 0.1)) == 10
    assert stats["queue_drops"] > 0
    assert _queue_full() - before >= stats["queue_drops"]  # the session sensor may drop too


class BrokenProbe:
    """A real probe whose C does not compile: the loader must isolate it."""

    name = "broken"
    source_file = "process.bpf.c"
    type_ids = range(90, 91)

    def tracepoints(self) -> list[str]:
        return ["syscalls:sys_enter_getpid"]

    def render(self, config: ProbeConfig, available: frozenset[str]) -> str:
        return "TRACEPOINT_PROBE(syscalls, sys_enter_getpid) { return this_is_not_c; }\n"

    def decode(self, type_id: int, data: bytes, ctx: object) -> None:
        return None


def test_loader_isolates_a_failing_probe() -> None:
    prog = load([PROCESS_PROBE, BrokenProbe()], ProbeConfig(self_tgid=os.getpid()))  # type: ignore[list-item]
    try:
        assert [p.name for p in prog.probes] == ["process"]
        assert "this_is_not_c" in prog.failed["broken"]
        assert "undeclared identifier" in prog.failed["broken"]
    finally:
        prog.close()


def test_sensor_start_fails_only_when_nothing_loads() -> None:
    s = Sensor(SensorConfig(probes=("broken",)), probes=[BrokenProbe()])  # type: ignore[list-item]
    with pytest.raises(SensorError, match="this_is_not_c"):
        s.start()


def test_status_reports_loaded_and_skipped(sensor: Sensor) -> None:
    st = sensor.status
    assert "process" in st.loaded and "file" in st.loaded
    assert st.missing_tracepoints.get("process", []) == []
    assert st.load_seconds > 0 and st.processes_seeded > 5
    for area, reason in st.skipped.items():
        assert reason, area


def test_render_of_all_compiles_with_custom_prefixes() -> None:
    cfg = replace(ProbeConfig(self_tgid=os.getpid()), read_path_prefixes=("/opt/x'y/",),
                  argv_max=4, arg_len=32)
    prog = load([PROCESS_PROBE, FILE_PROBE], cfg)  # type: ignore[list-item]
    try:
        assert prog.failed == {}
        assert "p[6] == '\\''" in prog.text and "#define OG_ARGV_MAX 4" in prog.text
    finally:
        prog.close()


def test_cgroup_scope_hides_tasks_outside_it(sensor: Sensor) -> None:
    """The session sensor is scoped to the kubepods cgroups (conftest): a process in another
    cgroup is invisible, one in a kubepods container is seen."""
    import subprocess

    from tests.ebpf.capture import collect, flush
    from tests.ebpf.containers import cgroup_dir

    flush(sensor)
    with cgroup_dir("/og-outside-scope/x") as d:
        def enter() -> None:
            (d / "cgroup.procs").write_text(str(os.getpid()))
        outside = subprocess.run(["/bin/true"], preexec_fn=enter, check=True)
        assert outside.returncode == 0
        with container() as c:
            inside = c.popen(["/bin/true"])
            inside.wait()
            seen = collect(sensor, lambda e: e.pid in (inside.pid,) or e.cgroup_path.startswith(
                "/og-outside-scope"), timeout_s=5.0,
                until=lambda evs: any(e.pid == inside.pid and e.name.endswith("exit")
                                      for e in evs))
    assert [e for e in seen if e.cgroup_path.startswith("/og-outside-scope")] == []
    assert any(e.pid == inside.pid for e in seen)




def _stash_full() -> float:
    return sample("otelguard_dropped_total", stage="kernel_stash", reason="stash_full")


def test_stash_drops_are_read_from_the_kernel_counter_and_exported() -> None:
    """og_drops[1] (a syscall whose entry state found its stash map full, so no record was
    made) reaches Sensor.stats() and otelguard_dropped_total{kernel_stash,stash_full} through
    the poll thread's accounting. Filling a real stash map takes 10,240 threads inside one
    syscall at once; this sets the kernel's counter of a sensor of its own instead."""
    before = _stash_full()
    scope_dirs()
    with Sensor(SensorConfig(probes=("network",), cgroup_scope=SCOPE)) as s:
        program = s._program
        assert program is not None
        drops = program.tables["og_drops"]
        ncpu = len(drops.lookup(1) or [])
        assert ncpu >= 1 and program.stash_drops() == 0
        drops.update(1, 3)  # every CPU's slot
        assert s.stats()["stash_drops"] == 3 * ncpu
        assert wait_until(lambda: _stash_full() - before >= 3 * ncpu, 5.0)  # the poll thread
    assert _stash_full() - before == 3 * ncpu


def test_recursion_misses_are_read_from_every_program_fdinfo(sensor: Sensor) -> None:
    """The kernel counts, per program, the runs it skipped because a BPF program was already
    running on the CPU (a softirq tracepoint over a syscall's program): records never made,
    which the agent reads and exports as drops (kernel_prog/recursion_miss)."""
    program = sensor._program
    assert program is not None
    fds = list(program.program_fds.values())
    assert fds
    by_fdinfo = 0
    for fd in fds:
        text = open(f"/proc/self/fdinfo/{fd}", encoding="ascii").read()
        assert "recursion_misses:" in text  # the field this kernel reports
        by_fdinfo += int(text.split("recursion_misses:")[1].split()[0])
    assert program.recursion_misses() >= by_fdinfo  # monotonic counters, read after
    assert isinstance(sensor.stats()["recursion_misses"], int)


def test_a_second_concurrent_consumer_is_refused_not_fed_half_the_records() -> None:
    """The queue gives each record to one drain: a second thread draining at the same time
    (a test's leftover pipeline thread, a second exporter) would make both lose records
    silently, so it gets ConsumerConflict naming the first; once that one returns, draining
    works again. (A sensor not started: its queue is empty, so the first drain waits.)"""
    import threading

    from otelguard.ebpf.errors import ConsumerConflict

    s = Sensor(SensorConfig())
    inside = threading.Event()
    got: list[object] = []

    def first() -> None:
        inside.set()
        got.append(s.drain_items(1, 1.5))

    t = threading.Thread(target=first, name="first-consumer")
    t.start()
    inside.wait(5)
    time.sleep(0.3)
    with pytest.raises(ConsumerConflict, match="first-consumer"):
        s.drain(10, 0.0)
    t.join(5)
    assert got == [[]]
    assert s.drain(10, 0.0) == []
