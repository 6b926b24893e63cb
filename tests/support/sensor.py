"""The session-wide Sensor (BCC compiles for seconds, once) and a helper that runs a command in a
fresh container and returns the events it caused: fixtures for the sensor and attack tests
(a conftest imports them from here)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import pytest

from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from tests.ebpf.capture import collect, exited, flush, in_container
from tests.ebpf.containers import CGROUP2_ROOT, Container, container
from tests.support.prerequisites import require_root

SCOPE = ("/kubepods.slice", "/kubepods")  # every layout containers.py makes lives under these


def scope_dirs() -> None:
    """The cgroups of :data:`SCOPE` exist (a scoped sensor observes tasks under them)."""
    for parent in SCOPE:
        (CGROUP2_ROOT / parent.lstrip("/")).mkdir(exist_ok=True)


@pytest.fixture(scope="session")
def sensor() -> Iterator[Sensor]:
    require_root()
    # Scoped to the kubepods cgroups, in the kernel: the machine is shared and busy (builds of
    # other work), and its noise would fill the ring buffer and make tests miss their records.
    scope_dirs()
    s = Sensor(SensorConfig(cgroup_scope=SCOPE))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@dataclass
class ContainerRun:
    container: Container
    proc: subprocess.CompletedProcess[bytes]
    pid: int
    events: list[Event]


RunInContainer = Callable[..., ContainerRun]


@pytest.fixture
def run_in_container(sensor: Sensor) -> RunInContainer:
    """``run_in_container(argv, timeout_s=10, container_kwargs={}, **popen_kwargs)``: runs argv
    in a new container, waits for its exit event, returns the container's events."""

    def _run(argv: Sequence[str], timeout_s: float = 10.0,
             container_kwargs: dict[str, Any] | None = None, **popen: Any) -> ContainerRun:
        flush(sensor)
        with container(**(container_kwargs or {})) as c:
            popen.setdefault("stdout", subprocess.PIPE)
            popen.setdefault("stderr", subprocess.PIPE)
            with c.popen(argv, **popen) as p:
                out, err = p.communicate(timeout=timeout_s)
                rc = p.wait()
            events = collect(sensor, in_container(c.container_id), exited(p.pid), timeout_s)
        return ContainerRun(c, subprocess.CompletedProcess(list(argv), rc, out, err), p.pid,
                            events)

    return _run
