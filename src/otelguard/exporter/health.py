"""Readiness of ``otelguard agent`` and ``otelguard run``, served as ``/readyz`` beside ``/metrics``.

Three checks, each a read of a field the threads keep anyway (no BPF, no I/O: a probe every few
seconds costs microseconds; ``/healthz`` checks nothing at all, so liveness never compiles BPF the
way ``otelguard doctor`` does):

- ``probes``: the sensor started, its probes are attached and its poll thread is alive;
- ``ring_buffer``: the poll thread finished a ring-buffer poll within ``POLL_MAX_AGE_S`` (a poll
  waits at most ``poll_timeout_ms``, 100 ms by default; a poll thread stuck in a callback stops
  it advancing);
- ``exporter``: the export loop finished a cycle within ``EXPORT_MAX_AGE_S``. The loop cycles
  every ``drain_timeout_s`` even when there is nothing to export, so only a send stuck on the
  next hop (or a dead thread) stops it; the bound is above the Delivery's worst bounded send
  (3 attempts of a 10 s gRPC deadline, for logs and then spans). While requests wait in the
  spool the check passes with a warning naming the backlog and the next hop's last error: the
  agent loses nothing and must not be restarted for it, but an operator should look (the
  records are late, and a refused token needs rotating).

docs/architecture.md#health lists the processor's checks beside these.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Protocol

from otelguard.ebpf.sensor import SensorStatus
from otelguard.exporter.batch import BatchExporter
from otelguard.telemetry import Check

POLL_MAX_AGE_S = 30.0
EXPORT_MAX_AGE_S = 120.0


class PolledSensor(Protocol):
    """What readiness reads of :class:`~otelguard.ebpf.sensor.Sensor`."""

    status: SensorStatus
    last_poll: float

    @property
    def running(self) -> bool: ...


class AgentHealth:
    """Readiness of one sensor and its exporter; set ``exporter`` once it exists.

    Registered with ``telemetry.set_readiness(health.checks)`` before the sensor compiles, so
    ``/readyz`` answers 503 ("compiling and loading probes") during the seconds that takes.
    """

    def __init__(self, sensor: PolledSensor, exporter: Optional[BatchExporter] = None,
                 poll_max_age_s: float = POLL_MAX_AGE_S,
                 export_max_age_s: float = EXPORT_MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sensor = sensor
        self.exporter = exporter
        self.poll_max_age_s = poll_max_age_s
        self.export_max_age_s = export_max_age_s
        self._clock = clock

    def checks(self) -> list[Check]:
        now = self._clock()
        return [self._probes(), self._ring_buffer(now), self._exporter(now)]

    def _probes(self) -> Check:
        status = self.sensor.status
        if not status.loaded:
            return Check("probes", False, "no probe attached yet (compiling and loading)")
        if not self.sensor.running:
            return Check("probes", False, "the sensor stopped")
        detail = "attached: " + ", ".join(status.loaded)
        if status.failed:
            detail += "; not loaded: " + ", ".join(sorted(status.failed))
        return Check("probes", True, detail)

    def _ring_buffer(self, now: float) -> Check:
        last = self.sensor.last_poll
        if not last:
            return Check("ring_buffer", False, "not polled yet")
        age = now - last
        return Check("ring_buffer", age <= self.poll_max_age_s,
                     f"last poll {age:.1f}s ago (limit {self.poll_max_age_s:.0f}s)")

    def _exporter(self, now: float) -> Check:
        exporter = self.exporter
        if exporter is None or not exporter.last_cycle:
            return Check("exporter", False, "not started yet")
        age = now - exporter.last_cycle
        if age <= self.export_max_age_s:
            detail = f"last export cycle {age:.1f}s ago"
            backlog = exporter.delivery.backlog
            if backlog:
                return Check("exporter", True, f"{detail}; {backlog} requests wait in the spool "
                             f"(next hop: {exporter.delivery.stats.last_error or 'down'})",
                             warn=True)
            return Check("exporter", True, detail)
        return Check("exporter", False,
                     f"no export cycle for {age:.0f}s (limit {self.export_max_age_s:.0f}s): "
                     "a send to the next hop is stuck or the export thread died")
