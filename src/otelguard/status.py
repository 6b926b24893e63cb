"""``otelguard run``'s status line: events/s, drops, detections, incidents, uptime.

Drawn by its own thread from otelguard's counters (telemetry.py, the incidents stage's), which
the pipeline keeps anyway: nothing is added to the export path, and a sample (a few counter
collections and one format) costs ~0.1 ms once per interval (``bench/console_status.py``). On a
terminal it is one line refreshed in place under the console's detections
(transport/terminal.py); elsewhere a plain ``status ...`` line every interval (60 s by
default), so a log file or a pipe gets no escape sequences. ``--status off`` turns it off.

While the status line is on a terminal, log lines written to a terminal erase it first (a
filter on the root logger's handlers), so a warning never prints glued to the status; the next
refresh draws it again below.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from prometheus_client import Gauge

from otelguard import telemetry
from otelguard.processors.incidents import metrics as incident_metrics
from otelguard.transport.terminal import Terminal

MODES = ("auto", "live", "plain", "off")
LIVE_INTERVAL_S = 1.0
PLAIN_INTERVAL_S = 60.0
# the priorities shown by name, worst first (the rest are counted in the total)
SHOWN_PRIORITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE")


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    events: float  # captured events (otelguard_events_total)
    dropped: float  # everything otelguard_dropped_total counts, any stage
    detections: dict[str, float] = field(default_factory=dict)  # by priority
    incidents: float = 0.0  # incidents opened (version 1 written)
    open_incidents: float = 0.0


def sample(clock: Callable[[], float] = time.monotonic) -> Sample:
    """The counters now (their collection takes prometheus_client's locks briefly)."""
    per_priority: dict[str, float] = {}
    for labels, n in telemetry.counter_values(telemetry.detections).items():
        per_priority[labels[1]] = per_priority.get(labels[1], 0.0) + n
    records = telemetry.counter_values(incident_metrics.records)
    return Sample(clock(), sum(telemetry.counter_values(telemetry.events).values()),
                  sum(telemetry.counter_values(telemetry.dropped).values()), per_priority,
                  records.get(("opened",), 0.0), _gauge(incident_metrics.open_incidents))


def _gauge(gauge: Gauge) -> float:
    return sum(s.value for m in gauge.collect() for s in m.samples)


def _count(n: float) -> str:
    return f"{int(n):,}"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    h, rem = divmod(s, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def render(prev: Sample, cur: Sample, started: float) -> str:
    """The status text (pure: tests call it with made-up samples)."""
    elapsed = max(cur.at - prev.at, 1e-9)
    rate = max(cur.events - prev.events, 0.0) / elapsed
    total = sum(cur.detections.values())
    named = [f"{_count(cur.detections[p])} {p}" for p in SHOWN_PRIORITIES
             if cur.detections.get(p)]
    dets = f"{_count(total)} detection{'s' if total != 1 else ''}" + (
        f" ({', '.join(named)})" if named else "")
    inc = f"{_count(cur.incidents)} incident{'s' if cur.incidents != 1 else ''}" + (
        f" ({_count(cur.open_incidents)} open)" if cur.open_incidents else "")
    new_drops = cur.dropped - prev.dropped
    drops = f"{_count(cur.dropped)} dropped" + (f" (+{_count(new_drops)})" if new_drops > 0
                                                else "")
    return (f"otelguard | {rate:,.0f} events/s | {drops} | {dets} | {inc} | "
            f"up {_uptime(cur.at - started)}")


class StatusLine:
    """The thread that samples and draws every ``interval_s``; :meth:`stop` joins it and
    erases a live line, so what follows (the exit summary) starts on a clean line."""

    def __init__(self, terminal: Terminal, interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.terminal = terminal
        self.interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._prev = sample(clock)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._filter = _EraseBeforeLog(terminal)

    def start(self) -> None:
        if self.terminal.live:
            for handler in logging.getLogger().handlers:
                if _on_terminal(handler):
                    handler.addFilter(self._filter)
        self._thread = threading.Thread(target=self._run, name="otelguard-status", daemon=True)
        self._thread.start()

    def draw(self) -> None:
        cur = sample(self._clock)
        try:
            self.terminal.status(render(self._prev, cur, self._started))
        except (OSError, ValueError):  # the terminal went away: nothing to show it on
            self._stop.set()
        self._prev = cur

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.draw()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._filter)
        self.terminal.clear()


class _EraseBeforeLog(logging.Filter):
    def __init__(self, terminal: Terminal) -> None:
        super().__init__()
        self.terminal = terminal

    def filter(self, record: logging.LogRecord) -> bool:
        self.terminal.clear()
        return True


def _on_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False
