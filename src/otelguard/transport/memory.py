"""InMemoryTransport: the test double shipped with the package (as httpx ships MockTransport).

Keeps every request it accepted, parsed, and can be told to fail, so tests of retry, spool and
partial success run against the same code paths as production transports.
"""

from __future__ import annotations

import threading
from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard.otlp.messages import count_records
from otelguard.transport.contract import (
    ExportResult, LogsPayload, TracesPayload, as_logs, as_traces,
)


class InMemoryTransport:
    name = "memory"

    def __init__(self) -> None:
        self.logs: list[ExportLogsServiceRequest] = []
        self.traces: list[ExportTraceServiceRequest] = []
        self.attempts = 0
        self.shut_down = False
        self._lock = threading.Lock()
        self._fail: Optional[ExportResult] = None
        self._fail_count = 0

    def fail(self, result: Optional[ExportResult] = None, count: int = -1) -> None:
        """Fail the next ``count`` sends (-1: until :meth:`recover`) with ``result``."""
        with self._lock:
            self._fail = result or ExportResult.failure("endpoint down (test)", "unavailable", True)
            self._fail_count = count

    def recover(self) -> None:
        with self._lock:
            self._fail = None
            self._fail_count = 0

    def _failure(self) -> Optional[ExportResult]:
        with self._lock:
            self.attempts += 1
            if self._fail is None:
                return None
            result = self._fail
            if self._fail_count > 0:
                self._fail_count -= 1
                if self._fail_count == 0:
                    self._fail = None
            return result

    def export_logs(self, req: LogsPayload) -> ExportResult:
        failure = self._failure()
        if failure is not None:
            return failure
        msg = as_logs(req)
        with self._lock:
            self.logs.append(msg)
        return ExportResult.success()

    def export_traces(self, req: TracesPayload) -> ExportResult:
        failure = self._failure()
        if failure is not None:
            return failure
        msg = as_traces(req)
        with self._lock:
            self.traces.append(msg)
        return ExportResult.success()

    def log_record_count(self) -> int:
        with self._lock:
            return sum(count_records(r) for r in self.logs)

    def span_count(self) -> int:
        with self._lock:
            return sum(count_records(r) for r in self.traces)

    def shutdown(self) -> None:
        self.shut_down = True
