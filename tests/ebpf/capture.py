"""Collect the events a test caused from a running Sensor, with a bounded wait.

The sensor sees the whole machine; a test runs its workload in a fresh container (unique
container id) or filters by pid, and waits until a predicate holds (typically: the exit event of
the workload's top process arrived, so everything before it was already enqueued) or a deadline
passes. Events of other processes are discarded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from otelguard import semconv
from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from tests.ebpf.containers import container

SRC = str(Path(__file__).resolve().parents[2] / "src")


def collect(
    sensor: Sensor,
    match: Callable[[Event], bool],
    until: Optional[Callable[[list[Event]], bool]] = None,
    timeout_s: float = 10.0,
    settle_s: float = 0.2,
) -> list[Event]:
    """Matching events until ``until(events)`` holds (then ``settle_s`` more) or ``timeout_s``."""
    out: list[Event] = []
    deadline = time.monotonic() + timeout_s
    settle_end: Optional[float] = None
    while True:
        now = time.monotonic()
        if now >= deadline or (settle_end is not None and now >= settle_end):
            return out
        for ev in sensor.drain(4096, 0.05):
            if match(ev):
                out.append(ev)
        if settle_end is None and until is not None and until(out):
            settle_end = time.monotonic() + settle_s


def exited(pid: int) -> Callable[[list[Event]], bool]:
    """``until`` predicate: the exit event of ``pid`` arrived."""
    def _done(events: list[Event]) -> bool:
        return any(e.name == semconv.EV_PROCESS_EXIT and e.pid == pid for e in events)
    return _done


def in_container(container_id: str) -> Callable[[Event], bool]:
    return lambda e: e.container_id == container_id


def named(events: Iterable[Event], name: str) -> list[Event]:
    return [e for e in events if e.name == name]


def flush(sensor: Sensor, max_s: float = 2.0) -> None:
    """Drop what is queued (events of earlier tests) so the next collect starts fresh."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline and sensor.drain(65536, 0.0):
        pass


def run_workload(sensor: Sensor, code: str, timeout_s: float = 20.0) -> tuple[str, int, list[Event]]:
    """Run ``python -c code`` in a fresh container; (stdout, pid, that pid's events) once its
    exit event arrived. Module-scoped callers share one run across several assertions."""
    flush(sensor)
    with container() as c:
        with c.popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": SRC}) as p:
            out, err = p.communicate(timeout=timeout_s)
        assert p.returncode == 0, err.decode()
        events = collect(sensor, in_container(c.container_id), exited(p.pid), timeout_s)
    return out.decode(), p.pid, events
