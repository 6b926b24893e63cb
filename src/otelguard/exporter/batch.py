"""BatchExporter: the agent's export thread, from the sensor's queue to the next hop.

One thread drains events (``source(max_events, timeout_s)``, i.e. ``Sensor.drain_items``: Events,
and runs of records the sensor's native lane already encoded), batches them (flush at
``max_batch`` records or every ``flush_interval_s``), builds OTLP logs as wire
bytes and finished spans as a trace request, and hands both to a
:class:`~otelguard.transport.Delivery` (retry, spool, replay, drop counting). While idle it lets
the Delivery replay its spool. Stopping drains what the source still holds, ends open spans
(reason ``shutdown``) and flushes; nothing accepted is left behind.
"""

from __future__ import annotations

import logging
import threading
import time
import signal
from typing import Any, Callable, Optional, Protocol, Sequence, Union

from otelguard import telemetry
from otelguard.ebpf.events import Event
from otelguard.ebpf.lane import LaneRun, record_count
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.config import ExporterConfig
from otelguard.exporter.spans import SpanTracker
from otelguard.transport.contract import LogsPayload, TracesPayload
from otelguard.transport.delivery import DeliveryStats

log = logging.getLogger(__name__)
Item = Union[Event, LaneRun]
EventSource = Callable[[int, float], Sequence[Item]]


class Sink(Protocol):
    """Where built batches go: a :class:`~otelguard.transport.delivery.Delivery` (agent) or the
    in-process pipeline in front of the outputs (``otelguard run``)."""

    stats: DeliveryStats

    @property
    def backlog(self) -> int: ...

    def send_logs(self, payload: LogsPayload, records: int) -> bool: ...

    def send_traces(self, payload: TracesPayload, records: int) -> bool: ...

    def replay(self) -> int: ...

    def shutdown(self) -> None: ...


class Capture(Protocol):
    """The sensor surface the capture loop needs (otelguard.ebpf.sensor.Sensor)."""

    def drain(self, max_events: int, timeout_s: float) -> list[Event]: ...

    def stop(self) -> None: ...
SPANS_PER_REQUEST = 2048  # ~0.5-1 KB each


class BatchExporter:
    def __init__(self, source: EventSource, delivery: Sink,
                 config: ExporterConfig = ExporterConfig(),
                 builder: Optional[OtlpBuilder] = None) -> None:
        self.source = source
        self.delivery = delivery
        self.config = config
        self.builder = builder or OtlpBuilder(spans=SpanTracker(max_open=config.max_open_spans))
        self.events_in = 0
        self.batches = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        # time.monotonic() when the export loop last finished a cycle (drain, and the flush
        # when due): a send stuck on the next hop stops it advancing (0: not started)
        self.last_cycle = 0.0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("BatchExporter already started")
        self.last_cycle = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="otelguard-export", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain, flush, end open spans, send; then return (bounded by ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("export thread did not finish within %.1f s", timeout_s)
        self.delivery.shutdown()

    def stats(self) -> dict[str, int]:
        s = self.delivery.stats
        return {
            "events_in": self.events_in, "batches": self.batches,
            "sent_records": s.sent_records, "spooled_records": s.spooled_records,
            "replayed_records": s.replayed_records, "dropped_records": s.dropped_records,
            "spool_entries": self.delivery.backlog, "open_spans": self.builder.spans.open_count,
            "evicted_spans": self.builder.spans.evicted,
        }

    # ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        cfg = self.config
        pending: list[Item] = []
        records = 0  # in pending (a lane run holds many)
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                got = self.source(max(1, cfg.max_batch - records), cfg.drain_timeout_s)
            except Exception:  # noqa: BLE001 - a failing source is logged; the thread lives on
                log.exception("event source failed")
                self._stop.wait(0.2)
                continue
            if got:
                pending.extend(got)
                n = record_count(got)
                records += n
                self.events_in += n
            now = time.monotonic()
            if records >= cfg.max_batch or (now - last_flush >= cfg.flush_interval_s):
                try:
                    self.flush(pending)
                    if not got:
                        self.delivery.replay()
                except Exception:  # noqa: BLE001 - a bug here must not stop the export thread
                    log.exception("export failed; %d events dropped", records)
                    telemetry.dropped.labels("export", "internal_error").inc(records)
                pending = []
                records = 0
                last_flush = now
            self.last_cycle = time.monotonic()
        # stopping: take what the source still holds (bounded), then end every span
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                got = self.source(cfg.max_batch, 0.0)
            except Exception:  # noqa: BLE001
                log.exception("event source failed while stopping")
                break
            if not got:
                break
            pending.extend(got)
            n = record_count(got)
            records += n
            self.events_in += n
            if records >= cfg.max_batch:
                self.flush(pending)
                pending = []
                records = 0
        self.flush(pending)
        self.builder.spans.end_all(time.time_ns())
        self._send_spans()
        self.delivery.replay()

    def _send_spans(self) -> None:
        """Finished spans in requests of at most SPANS_PER_REQUEST: ending 65k open spans at
        shutdown must not make one request over the receiver's size limit (16 MiB default)."""
        finished = self.builder.spans.take_finished()
        for i in range(0, len(finished), SPANS_PER_REQUEST):
            part = finished[i:i + SPANS_PER_REQUEST]
            data = self.builder.traces_bytes(part)
            if data:
                self.delivery.send_traces(data, len(part))

    def flush(self, events: Sequence[Item]) -> None:
        """Build and send one batch of events plus the spans that finished meanwhile."""
        start = time.perf_counter()
        if events:
            records = record_count(events)
            try:
                data = self.builder.logs_bytes(events)
            except Exception as exc:  # noqa: BLE001 - bad event: count, keep running
                log.exception("building OTLP logs failed")
                telemetry.dropped.labels("export", "build_error").inc(records)
                self.delivery.stats.last_error = repr(exc)
            else:
                self.delivery.send_logs(data, records)
                self.batches += 1
        self._send_spans()
        telemetry.pipeline_latency.labels("export").observe(time.perf_counter() - start)


def run_until_stopped(sensor: Capture, exporter: "BatchExporter",
                      duration_s: Optional[float]) -> None:
    """The capture loop of ``otelguard agent`` and ``otelguard run``: export until SIGINT/SIGTERM
    or ``duration_s``, then stop the sensor first (its stop polls what is still in the ring
    buffer into its queue) and the exporter second (its stop drains that queue, ends open spans
    and flushes), so nothing captured is left behind."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    previous: dict[signal.Signals, Any] = {
        sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        exporter.start()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            stop.wait(1.0 if remaining is None else min(1.0, remaining))
    finally:
        sensor.stop()
        exporter.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
