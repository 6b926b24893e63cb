"""The agent's path, streaming and in process, for kernel tests that measure time to detection.

The session Sensor's events of the containers a test watches -> the agent's OTLP mapping (one
long-lived :class:`OtlpBuilder`, as the agent keeps one for its span tracker) in batches cut the
way the agent's BatchExporter cuts them (``max_batch`` records, or ``flush_interval_s`` after the
last cut) -> a processor :class:`Pipeline` (and its flush timer, for records stages hold or
report later) -> every record that left it, stamped with the wall-clock time it left.

tests/attacks/harness.py evaluates one finished run at once; this one runs beside the workload,
so ``left_at - action time`` is the product's detection latency (agent batching included).
Events of containers nobody watches are discarded (the sensor sees the whole machine).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.ebpf.errors import ConsumerConflict
from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.config import ExporterConfig
from otelguard.otlp.messages import PyValue, attrs_dict
from otelguard.processors.pipeline import Pipeline


@dataclass(frozen=True)
class Left:
    """One record that left the pipeline."""

    at: float  # time.time() when its batch left the pipeline
    resource: dict[str, PyValue]
    record: LogRecord
    attrs: dict[str, PyValue]


class LivePipeline:
    """Feeds ``pipeline`` from ``sensor`` on a thread until :meth:`stop`."""

    def __init__(self, sensor: Sensor, pipeline: Pipeline,
                 exporter: ExporterConfig = ExporterConfig()) -> None:
        self.sensor = sensor
        self.pipeline = pipeline
        self.flush_interval_s = exporter.flush_interval_s
        self.max_batch = exporter.max_batch
        self._builder = OtlpBuilder()
        self._watched: set[str] = set()
        self._left: list[Left] = []
        self._exits: set[int] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.losses = 0  # records the sensor counted as lost while this ran
        self.conflict: Optional[ConsumerConflict] = None  # another consumer drained meanwhile

    def watch(self, container_id: str) -> None:
        with self._cond:
            self._watched.add(container_id)

    def start(self) -> None:
        self._lost_at_start = self._lost()
        self._thread = threading.Thread(target=self._run, name="live-pipeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.losses = self._lost() - self._lost_at_start
        if self.conflict is not None:
            raise self.conflict

    def _lost(self) -> int:
        st = self.sensor.stats()
        return int(st["kernel_drops"] or 0) + int(st["queue_drops"] or 0)

    def lost_since_start(self) -> int:
        return self._lost() - self._lost_at_start

    def _run(self) -> None:
        pending: list[Event] = []
        last_cut = last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                events = self.sensor.drain(4096, 0.02)
            except ConsumerConflict as exc:  # its records are split: stop() raises this
                self.conflict = exc
                return
            with self._cond:
                watched = set(self._watched)
            pending.extend(e for e in events if e.container_id in watched)
            now = time.monotonic()
            if pending and (len(pending) >= self.max_batch
                            or now - last_cut >= self.flush_interval_s):
                batch, pending = pending, []
                last_cut = now
                result = self.pipeline.process(self._builder.logs(batch))
                self._keep(result.batch, batch)
            elif not pending:
                last_cut = now
            if now - last_flush >= self.flush_interval_s:
                last_flush = now
                for released in self.pipeline.flush():
                    self._keep(released, [])

    def _keep(self, batch: Any, events: list[Event]) -> None:
        at = time.time()
        left = []
        for rl in batch.resource_logs:
            res = attrs_dict(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    left.append(Left(at, res, rec, attrs_dict(rec.attributes)))
        with self._cond:
            self._left.extend(left)
            self._exits.update(e.pid for e in events if e.name == S.EV_PROCESS_EXIT)
            self._cond.notify_all()

    def left(self, since: float = 0.0) -> list[Left]:
        """Records that left at or after ``since`` (time.time())."""
        with self._cond:
            return [r for r in self._left if r.at >= since]

    def wait(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (bounded) until ``predicate()`` holds; re-checked whenever a batch left."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def exited(self, pid: int, timeout_s: float = 10.0) -> bool:
        """The exit record of ``pid`` left the pipeline (so every earlier record of it did)."""
        return self.wait(lambda: pid in self._exits, timeout_s)

    def detections(self, since: float = 0.0) -> list[Left]:
        return [r for r in self.left(since) if r.record.event_name == S.EV_DETECTION]
