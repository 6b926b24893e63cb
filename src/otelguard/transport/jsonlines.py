"""JsonLinesTransport: one OTLP/JSON request per line, the Collector file exporter's format.

Appends to PATH (created with its directory). Lines are buffered and flushed at least once a
second (a small timer thread) and on shutdown, so a crash loses at most a second. A write that
fails (disk full, EIO) returns a non-retryable failure with the OS error in clear; the caller
counts the records as dropped. Encoding costs what :mod:`otelguard.otlp.jsoncodec` costs (~20-40 µs
per record): meant for files people read, not for 100k events/s.

Each line is one JSON object whatever the records hold: JSON escapes C0 controls (newlines,
ESC), and :func:`~otelguard.transport.controls.json_safe` escapes what JSON allows raw but line
splitters and terminals act on (DEL, C1, U+2028/U+2029, bidi controls).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import IO, Optional

from otelguard import telemetry
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import count_records
from otelguard.transport.contract import (
    ExportResult, LogsPayload, TracesPayload, TransportError, as_logs, as_traces,
)
from otelguard.transport.controls import json_safe

FLUSH_INTERVAL_S = 1.0
log = logging.getLogger(__name__)


class JsonLinesTransport:
    def __init__(self, path: str, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.name = f"jsonl:{path}"
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            # owner-only: the records name processes, paths and users of the whole host
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fh: Optional[IO[str]] = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        except OSError as exc:
            raise TransportError(f"jsonl: cannot open {path!r} for appending: {exc}") from exc
        self._lock = threading.Lock()
        self._dirty = False
        self._buffered_records = 0
        self._stop = threading.Event()
        self._interval = flush_interval_s
        self._flusher = threading.Thread(target=self._flush_loop, name="jsonl-flush", daemon=True)
        self._flusher.start()

    def export_logs(self, req: LogsPayload) -> ExportResult:
        return self._write(as_logs(req))

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return self._write(as_traces(req))

    def _write(self, msg: jsoncodec.Request) -> ExportResult:
        line = json_safe(jsoncodec.encode(msg)) + "\n"
        with self._lock:
            if self._fh is None:
                return ExportResult.failure(f"{self.name}: closed", "closed", False)
            try:
                self._fh.write(line)
            except OSError as exc:
                return self._os_failure(exc)
            self._dirty = True
            self._buffered_records += count_records(msg)
        return ExportResult.success()

    def _os_failure(self, exc: OSError) -> ExportResult:
        if exc.errno == errno.ENOSPC:
            return ExportResult.failure(f"{self.name}: disk full: {exc}", "disk_full", False)
        return ExportResult.failure(f"{self.name}: write failed: {exc}", "io_error", False)

    def flush(self) -> Optional[ExportResult]:
        """Flush buffered lines. Lines the OS refuses here were already acknowledged to the
        caller, so their records are counted as dropped (stage export) right here."""
        with self._lock:
            if self._fh is None or not self._dirty:
                return None
            records, self._buffered_records, self._dirty = self._buffered_records, 0, False
            try:
                self._fh.flush()
            except OSError as exc:
                failure = self._os_failure(exc)
                telemetry.dropped.labels("export", failure.reason).inc(records)
                log.error("%s (%d records dropped)", failure.error, records)
                return failure
        return None

    def _flush_loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def shutdown(self) -> None:
        self._stop.set()
        self.flush()
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.close()
                except OSError:
                    pass
                self._fh = None
