"""OTLP/HTTP client transport: POST application/x-protobuf to ``<url>/v1/logs`` and ``/v1/traces``.

Per the OTLP/HTTP spec: 429, 502, 503 and 504 are retryable
(:func:`otelguard.transport.retry.http_retryable`) and may carry Retry-After (seconds or an HTTP
date); other 4xx/5xx are not. Connection errors are retryable. One persistent
connection (stdlib http.client), re-opened after an error.

Every call ends within ``timeout_s`` (connect included): a socket timeout alone bounds each
recv, not the call (a server trickling a byte at a time would hold the sender forever), so a
timer shuts the socket down when the deadline passes and the call returns a retryable
``deadline_exceeded``. Cost: one short-lived timer thread per request (~0.1 ms).

Security (:class:`~otelguard.transport.security.ClientTls`): an ``https://`` URL verifies the
server against ``ca_file`` (optionally presenting a client certificate, optionally checking
``server_name`` instead of the URL's host); ``http://`` needs ``insecure: true``. Rotated files
are picked up on the next connection; the bearer token file is re-read when it changes.
"""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Optional, Union

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

import otelguard
from otelguard.transport.contract import (
    EXPORT_TIMEOUT_S, ExportResult, LogsPayload, SpecError, TracesPayload, as_bytes,
)
from otelguard.transport.retry import http_hold, http_retryable
from otelguard.transport.security import ClientTls, TokenFile, WatchedFiles, client_ssl_context

USER_AGENT = f"otelguard/{otelguard.__version__}"


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


class CallDeadline:
    """Shuts ``sock`` down (both ways) if :meth:`end` was not called within ``seconds``, so a
    send or recv blocked on it returns at once. The lock keeps the shutdown from racing the
    caller closing the socket (whose descriptor could already belong to another socket)."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._ended = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            if self._ended:
                return
            self.expired = True
            try:  # the plain socket's shutdown, also under TLS (SSLSocket's would unwrap first)
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def end(self) -> bool:
        """Disarm; whether the deadline had passed (the socket is then unusable)."""
        with self._lock:
            self._ended = True
        self._timer.cancel()
        return self.expired


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that checks the certificate against ``server_name``, not the host."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext,
                 server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._ssl_context = context
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ssl_context.wrap_socket(self.sock, server_hostname=self._server_name)


@dataclass(frozen=True)
class HttpAnswer:
    """A complete HTTP response (any status)."""

    status: int
    body: bytes
    content_type: str
    retry_after: Optional[str]


class HttpClient:
    """One persistent HTTP(S) connection to one endpoint with the TLS, token and deadline rules
    of the module doc; the OTLP/HTTP transport and the falcosidekick output send through it."""

    def __init__(self, url: str, timeout_s: float = EXPORT_TIMEOUT_S, *, tls: ClientTls,
                 where: str = "exporter", kind: str = "otlphttp") -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SpecError(f"{kind} URL must be http(s)://HOST[:PORT][/path], got {url!r}")
        if parsed.scheme == "http" and not tls.insecure:
            raise SpecError(f"{where}: {url} is plaintext: use https:// with {where}.tls.ca_file "
                            f"(or {where}.tls.insecure: true)")
        if parsed.scheme == "https":
            tls.require(where)
        self.tls = tls
        self._files = WatchedFiles([tls.ca_file, tls.cert_file, tls.key_file])
        self._token = TokenFile(tls.bearer_token_file) if tls.bearer_token_file else None
        self._ssl: Optional[ssl.SSLContext] = None
        if parsed.scheme == "https":
            try:
                self._ssl = self._context()
            except (OSError, ssl.SSLError) as exc:
                raise SpecError(f"{where}.tls: {exc}") from None
        self.name = f"{kind}:{url}"
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 80)
        self.base_path = parsed.path.rstrip("/")
        self.timeout_s = timeout_s
        self._conn: Optional[http.client.HTTPConnection] = None

    def _context(self) -> ssl.SSLContext:
        self._files.changed()
        return client_ssl_context(self.tls)

    def _connection(self) -> http.client.HTTPConnection:
        if self._https and self._files.changed():
            self._close()  # rotated files: the next connection uses them
            self._ssl = None
        if self._conn is None:
            if not self._https:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self.timeout_s)
            else:
                if self._ssl is None:
                    try:
                        self._ssl = self._context()
                    except OSError:
                        self._files.forget()  # retried on the next call
                        raise
                self._conn = _NamedHTTPSConnection(
                    self._host, self._port, self.timeout_s, self._ssl,
                    self.tls.server_name or self._host)
        return self._conn

    def _headers(self, length: int, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Content-Length": str(length),
                   "User-Agent": USER_AGENT}
        token = self._token.first() if self._token is not None else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def send(self, path: str, body: bytes, content_type: str) -> Union[ExportResult, HttpAnswer]:
        """POST ``body`` to ``path``: the answer, or a retryable failure when none came
        (connection refused or reset, no complete answer within ``timeout_s``)."""
        start = time.monotonic()
        expired = False
        try:
            conn = self._connection()
            if conn.sock is None:
                conn.connect()  # bounded by the socket timeout, which is timeout_s
            guard = CallDeadline(conn.sock, self.timeout_s - (time.monotonic() - start))
            try:
                conn.request("POST", path, body=body,
                             headers=self._headers(len(body), content_type))
                resp = conn.getresponse()
                data = resp.read()
            finally:
                expired = guard.end()
        except (OSError, http.client.HTTPException) as exc:
            if not (expired or isinstance(exc, TimeoutError)):
                self._close()
                return ExportResult.failure(f"{self.name}{path}: {exc}", "unavailable", True)
            expired = True
        if expired:  # whatever was read may be cut short by the shutdown: never a success
            self._close()
            return ExportResult.failure(
                f"{self.name}{path}: no complete answer within {self.timeout_s:g} s",
                "deadline_exceeded", True)
        return HttpAnswer(resp.status, data, resp.getheader("Content-Type") or "",
                          resp.getheader("Retry-After"))

    def failure(self, path: str, answer: HttpAnswer) -> ExportResult:
        """The result of a non-2xx answer: 429/502/503/504 retryable (with Retry-After),
        401/403 held, others final."""
        snippet = answer.body[:200].decode("utf-8", "replace")
        retryable = http_retryable(answer.status)
        return ExportResult.failure(
            f"{self.name}{path}: HTTP {answer.status}: {snippet}", f"http_{answer.status}",
            retryable, parse_retry_after(answer.retry_after) if retryable else None,
            hold=http_hold(answer.status))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def shutdown(self) -> None:
        self._close()


class OtlpHttpTransport(HttpClient):
    def __init__(self, url: str, timeout_s: float = EXPORT_TIMEOUT_S, *, tls: ClientTls,
                 where: str = "exporter") -> None:
        super().__init__(url, timeout_s, tls=tls, where=where)
        self._logs_path = self.base_path + "/v1/logs"
        self._traces_path = self.base_path + "/v1/traces"

    def export_logs(self, req: LogsPayload) -> ExportResult:
        return self._post(self._logs_path, req, ExportLogsServiceResponse, "rejected_log_records")

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return self._post(self._traces_path, req, ExportTraceServiceResponse, "rejected_spans")

    def _post(self, path: str, req: Union[LogsPayload, TracesPayload], response_type: type,
              rejected_field: str) -> ExportResult:
        answer = self.send(path, as_bytes(req), "application/x-protobuf")
        if isinstance(answer, ExportResult):
            return answer
        if not 200 <= answer.status < 300:
            return self.failure(path, answer)
        rejected, message = 0, ""
        if answer.body and "protobuf" in answer.content_type:
            msg = response_type()
            try:
                msg.ParseFromString(answer.body)
                rejected = int(getattr(msg.partial_success, rejected_field))
                message = msg.partial_success.error_message
            except Exception:  # noqa: BLE001 - a garbled 2xx body still means accepted
                pass
        return ExportResult.success(rejected=rejected, error=message)
