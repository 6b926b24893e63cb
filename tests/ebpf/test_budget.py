"""Per-cgroup budget on the real kernel: one container floods, another's `cat /etc/shadow` still
arrives whole, the flood's drops are counted for its cgroup, and its own exec of a shell gets
through the exec reserve. With the budget off the same flood is not limited and nothing is
counted, so removing the budget fails the first test."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv
from otelguard.ebpf.budget import BudgetConfig, Offender
from otelguard.ebpf.events import Event
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from tests.ebpf.containers import container
from tests.support.metrics import sample
from tests.support.sensor import SCOPE

pytestmark = pytest.mark.kernel

# Small so the flood is short: ~2000 records at once, then 1000/s; 20 per high-value class more.
BUDGET = BudgetConfig(records_per_s=1000, burst=2000, reserve_per_s=20, reserve_burst=20)
OPENS_MAX = 200_000  # the flood's bound (a few seconds at most), it stops sooner when told
EXEC_AT = 10_000  # the flood execs a shell here, its own bucket long empty

# A thread opens /etc/hostname (sent by the file probe: under the built-in /etc/ prefix, the
# filter without known rules) without pause while
# the main thread execs a shell, so the exec finds the cgroup's bucket empty; the flood goes on
# until the stop file appears (or OPENS_MAX), then prints the opens it made.
FLOOD = """
import os, subprocess, sys, threading, time
stop, most, exec_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
count, done = [0], threading.Event()
def flood():
    while count[0] < most and not done.is_set():
        for _ in range(1000):
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        count[0] += 1000
t = threading.Thread(target=flood)
t.start()
while count[0] < exec_at and t.is_alive():
    time.sleep(0.001)
subprocess.run(["/bin/sh", "-c", ":"], check=True)
print("flooding", flush=True)
while t.is_alive() and not os.path.exists(stop):
    time.sleep(0.01)
done.set()
t.join()
print(count[0], flush=True)
"""


@dataclass
class FloodRun:
    opens: int  # what the flood did
    seconds: float
    flood_events: list[Event]
    victim_events: list[Event]
    flood_cgroup: int
    victim_cgroup: int
    flood_container: str
    kernel_drops: int  # ring buffer full, read before the sensor stopped
    stats: dict[str, Any]  # the sensor's, after stop (final accounting done)
    offenders: list[Offender]


def _flood_with_victim(budget: BudgetConfig) -> FloodRun:
    # the built-in read prefixes (/etc/) and no dedup, so every open is a distinct record:
    # the budget, not the repeat count, is what is under test
    sensor = Sensor(SensorConfig(cgroup_scope=SCOPE, budget=budget,
                                 probe=ProbeConfig(dedup_window_ms=0)))
    sensor.start()
    events: list[Event] = []
    try:
        with container() as flood, container() as victim, \
                tempfile.TemporaryDirectory() as tmp:
            ids = {flood.container_id, victim.container_id}
            stop = Path(tmp) / "stop"
            started = time.monotonic()
            with flood.popen([sys.executable, "-c", FLOOD, str(stop), str(OPENS_MAX),
                              str(EXEC_AT)], stdout=subprocess.PIPE) as fp:
                assert fp.stdout is not None
                assert fp.stdout.readline().strip() == b"flooding"
                ran = victim.run(["cat", "/etc/shadow"], timeout=30)
                assert ran.returncode == 0
                stop.touch()
                out, _ = fp.communicate(timeout=60)
            seconds = time.monotonic() - started
            # everything both containers sent: until the sensor took no record for 2 s (bounded)
            deadline = time.monotonic() + 60
            quiet_since, records = time.monotonic(), -1
            while time.monotonic() < deadline and time.monotonic() - quiet_since < 2.0:
                events += [e for e in sensor.drain(65536, 0.1) if e.container_id in ids]
                now_records = sensor.stats()["records"]
                if now_records != records or sensor.stats()["queued"]:
                    quiet_since, records = time.monotonic(), now_records
            flood_cgroup, victim_cgroup = flood.cgroup_id, victim.cgroup_id
            kernel_drops = int(sensor.stats()["kernel_drops"])
            sensor.stop()  # its last accounting names the cgroups while they still exist
            return FloodRun(
                opens=int(out.split()[-1]), seconds=seconds,
                flood_events=[e for e in events if e.container_id == flood.container_id],
                victim_events=[e for e in events if e.container_id == victim.container_id],
                flood_cgroup=flood_cgroup, victim_cgroup=victim_cgroup,
                flood_container=flood.container_id, kernel_drops=kernel_drops,
                stats=sensor.stats(), offenders=sensor.budget.top(1000))
    finally:
        sensor.stop()


def _hostname_opens(events: list[Event]) -> int:
    return sum(1 for e in events if e.name == semconv.EV_FILE_OPEN
               and e.get(semconv.FILE_PATH) == "/etc/hostname")


def _execs_of(events: list[Event], argv0: str) -> list[Event]:
    def first_arg(e: Event) -> object:
        args = e.get(semconv.PROCESS_COMMAND_ARGS)
        return args[0] if isinstance(args, list) and args else None
    return [e for e in events if e.name == semconv.EV_PROCESS_EXEC and first_arg(e) == argv0]


def _budget_counter() -> float:
    return sample("otelguard_dropped_total", stage="kernel_budget", reason="cgroup_over_budget")


def test_flooding_container_is_budgeted_and_others_lose_nothing() -> None:
    before = _budget_counter()
    run = _flood_with_victim(BUDGET)
    by_cgroup = {o.cgroup_id: o for o in run.offenders}

    # the victim: its exec of cat and its open of /etc/shadow arrived, nothing of it dropped
    cats = _execs_of(run.victim_events, "cat")
    assert cats, [e.name for e in run.victim_events]
    assert any(e.name == semconv.EV_FILE_OPEN and e.get(semconv.FILE_PATH) == "/etc/shadow"
               and e.pid == cats[0].pid for e in run.victim_events)
    assert run.victim_cgroup not in by_cgroup
    assert run.kernel_drops == 0
    assert run.stats["queue_drops"] == 0

    # the flood: limited to its budget, the rest counted for its cgroup (and named)
    seen = _hostname_opens(run.flood_events)
    allowed = (BUDGET.burst + BUDGET.reserve_burst
               + (BUDGET.records_per_s + BUDGET.reserve_per_s) * (run.seconds + 1))
    assert 0 < seen <= allowed, (seen, allowed, run.opens)
    flood = by_cgroup[run.flood_cgroup]
    # nothing was lost in the ring or the queue, so every open not seen was over budget
    assert flood.dropped >= run.opens - seen
    assert flood.dropped_high > 0  # the file reserve ran dry too: opens are high-value
    assert run.stats["budget_drops"] >= flood.dropped
    assert _budget_counter() - before >= run.stats["budget_drops"]
    assert run.stats["budget_offenders"][0]["workload"] == run.flood_container

    # its own shell exec, with its bucket empty, came through the exec reserve
    assert _execs_of(run.flood_events, "/bin/sh")


def test_without_budget_the_flood_is_not_limited_and_nothing_is_counted() -> None:
    run = _flood_with_victim(BudgetConfig(records_per_s=0))
    assert run.stats["budget_drops"] == 0 and run.offenders == []
    # every open reached the ring buffer: delivered, or counted as a ring or queue drop
    seen = _hostname_opens(run.flood_events)
    assert seen + run.kernel_drops + run.stats["queue_drops"] >= run.opens
    assert run.opens >= EXEC_AT > BUDGET.burst + BUDGET.reserve_burst
