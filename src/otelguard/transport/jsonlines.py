"""JsonLinesTransport: one OTLP/JSON request per line, the Collector file exporter's format.

Appends to PATH (created with its directory). Lines are buffered and flushed at least once a
second (a small timer thread) and on shutdown, so a crash loses at most a second. A write that
fails (disk full, EIO) returns a non-retryable failure with the OS error in clear; the caller
counts the records as dropped. Encoding costs what :mod:`otelguard.otlp.jsoncodec` costs (~20-40 µs
per record): meant for files people read, not for 100k events/s.

PATH ``-`` is standard output (flushed the same way, never closed). ``encode`` replaces the
OTLP/JSON lines with another one-line-per-item format (``falco-json``, transport/falco.py): it
returns the text to append and how many records that text stands for.

Each line is one JSON object whatever the records hold: JSON escapes C0 controls (newlines,
ESC), and :func:`~otelguard.transport.controls.json_safe` escapes what JSON allows raw but line
splitters and terminals act on (DEL, C1, U+2028/U+2029, bidi controls).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from typing import IO, Callable, Optional

from otelguard import telemetry
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import count_records
from otelguard.transport.contract import (
    ExportResult, LogsPayload, TracesPayload, TransportError, as_logs, as_traces,
)
from otelguard.transport.controls import json_safe

FLUSH_INTERVAL_S = 1.0
log = logging.getLogger(__name__)


STDOUT = "-"
Encoder = Callable[[jsoncodec.Request], tuple[str, int]]


def _otlp_line(msg: jsoncodec.Request) -> tuple[str, int]:
    return json_safe(jsoncodec.encode(msg)) + "\n", count_records(msg)


class JsonLinesTransport:
    def __init__(self, path: str, flush_interval_s: float = FLUSH_INTERVAL_S,
                 encode: Encoder = _otlp_line, kind: str = "jsonl", traces: bool = True) -> None:
        self.name = f"{kind}:{path}"
        self.path = path
        self._encode = encode
        self._traces = traces  # False: spans are not written (the format has none)
        self._owned = path != STDOUT
        if not self._owned:
            self._fh: Optional[IO[str]] = sys.stdout
        else:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
                # owner-only: the records name processes, paths and users of the whole host
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._fh = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
            except OSError as exc:
                raise TransportError(f"{kind}: cannot open {path!r} for appending: {exc}") \
                    from exc
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
        if not self._traces:
            return ExportResult.success()
        return self._write(as_traces(req))

    def _write(self, msg: jsoncodec.Request) -> ExportResult:
        line, records = self._encode(msg)
        if not line:
            return ExportResult.success()
        with self._lock:
            if self._fh is None:
                return ExportResult.failure(f"{self.name}: closed", "closed", False)
            try:
                self._fh.write(line)
            except OSError as exc:
                return self._os_failure(exc)
            self._dirty = True
            self._buffered_records += records
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
            if self._fh is not None and self._owned:
                try:
                    self._fh.close()
                except OSError:
                    pass
                self._fh = None
