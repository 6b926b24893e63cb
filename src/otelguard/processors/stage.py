"""The one stage contract every processor keeps.

A stage gets an OTLP batch (``ExportLogsServiceRequest`` or ``ExportTraceServiceRequest``), works on
it in place and returns it (or a replacement). ``process`` is synchronous and does no I/O: caches
are filled by watchers started in ``start()``. Timing, error catching and metrics wrap the stage
in :mod:`otelguard.processors.pipeline`, not inside each stage.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Protocol, Union, runtime_checkable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

Batch = Union[ExportLogsServiceRequest, ExportTraceServiceRequest]


@runtime_checkable
class Stage(Protocol):
    """A pipeline stage: ``start()`` once, ``process()`` per batch, ``shutdown()`` with flush."""

    type_name: str
    # Optional: ``additive = True`` on a stage that only sets attributes that were absent (the
    # k8s enricher). The pipeline then takes no restore snapshot before it, since a failure midway
    # still leaves a valid batch.
    # Optional: ``appends_only = True`` on a stage that changes nothing already in the batch and
    # at most adds Resource groups after the last one (falco_rules appends its detections;
    # incidents only reads, releasing its records from ``drain``). The pipeline's restore is
    # then cutting the groups back to their count before the stage, not a copy of the batch.
    # Optional: ``changes_only = {event names}`` on a stage that changes or deletes only
    # records of those events, within their ScopeLogs, and adds at most Resource groups at the
    # end (noise_control: detections): the restore copies only the scopes holding such records.
    # Optional: ``logs_only = True`` on a stage that returns a traces batch as it came: no
    # restore snapshot of traces batches before it.
    # Optional: ``drain(final) -> list[Batch]`` on a stage that holds records between batches
    # (pipeline.HoldsRecords: noise_control, k8s_attributes). The pipeline calls it on the
    # service's flush timer and at shutdown and runs what it returns through the later stages;
    # a stage that holds records must release them only there or in ``process``, and count in
    # ``shutdown()`` whatever it still holds.

    def start(self) -> None: ...

    def process(self, batch: Batch) -> Batch: ...

    def shutdown(self) -> None: ...


class Periodic:
    """A daemon thread that calls ``step`` every ``interval_s`` until :meth:`stop`; a failing
    pass is logged as ``failure`` and the next interval retries (the thread outlives it)."""

    def __init__(self, name: str, interval_s: float, step: Callable[[], None],
                 failure: str, log: logging.Logger) -> None:
        self._name, self._interval_s, self._step = name, interval_s, step
        self._failure, self._log = failure, log
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the thread must outlive a bad pass
                self._log.exception("%s", self._failure)
