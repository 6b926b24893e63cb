"""OTLP/HTTP client transport: POST application/x-protobuf to ``<url>/v1/logs`` and ``/v1/traces``.

Per the OTLP/HTTP spec: 429, 502, 503 and 504 are retryable
(:func:`otelguard.transport.retry.http_retryable`) and may carry Retry-After (seconds or an HTTP
date); other 4xx/5xx are not. Connection errors are retryable. One persistent
connection (stdlib http.client), re-opened after an error.
"""

from __future__ import annotations

import email.utils
import http.client
import time
import urllib.parse
from typing import Optional, Union

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otelguard.transport.contract import (
    ExportResult, LogsPayload, SpecError, TracesPayload, as_bytes,
)
from otelguard.transport.retry import http_retryable


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class OtlpHttpTransport:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SpecError(f"otlphttp URL must be http(s)://HOST[:PORT][/path], got {url!r}")
        self.name = f"otlphttp:{url}"
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 80)
        base = parsed.path.rstrip("/")
        self._logs_path = base + "/v1/logs"
        self._traces_path = base + "/v1/traces"
        self.timeout_s = timeout_s
        self._conn: Optional[http.client.HTTPConnection] = None

    def export_logs(self, req: LogsPayload) -> ExportResult:
        return self._post(self._logs_path, req, ExportLogsServiceResponse, "rejected_log_records")

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return self._post(self._traces_path, req, ExportTraceServiceResponse, "rejected_spans")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
        return self._conn

    def _post(self, path: str, req: Union[LogsPayload, TracesPayload], response_type: type,
              rejected_field: str) -> ExportResult:
        body = as_bytes(req)
        try:
            conn = self._connection()
            conn.request("POST", path, body=body, headers={
                "Content-Type": "application/x-protobuf", "Content-Length": str(len(body))})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            return ExportResult.failure(f"{self.name}{path}: {exc}", "unavailable", True)
        if 200 <= resp.status < 300:
            rejected, message = 0, ""
            if data and "protobuf" in (resp.getheader("Content-Type") or ""):
                msg = response_type()
                try:
                    msg.ParseFromString(data)
                    rejected = int(getattr(msg.partial_success, rejected_field))
                    message = msg.partial_success.error_message
                except Exception:  # noqa: BLE001 - a garbled 2xx body still means accepted
                    pass
            return ExportResult.success(rejected=rejected, error=message)
        snippet = data[:200].decode("utf-8", "replace")
        retryable = http_retryable(resp.status)
        return ExportResult.failure(
            f"{self.name}{path}: HTTP {resp.status}: {snippet}", f"http_{resp.status}", retryable,
            parse_retry_after(resp.getheader("Retry-After")) if retryable else None)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def shutdown(self) -> None:
        self._close()
