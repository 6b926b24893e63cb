"""Real OTLP receivers for transport tests: a grpc server built on opentelemetry-proto's
generated servicers, and an HTTP server (stdlib) speaking OTLP/HTTP protobuf. Both can be told
to fail, and both stop and restart on the same port (endpoint down / back up)."""

from __future__ import annotations

import socket
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otelguard.otlp.messages import count_records
from tests.support.endpoints import free_port




class GrpcReceiver(logs_service_pb2_grpc.LogsServiceServicer, trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.logs: list[Any] = []
        self.traces: list[Any] = []
        self.fail_code: Optional[grpc.StatusCode] = None
        self.retry_delay_s: Optional[float] = None
        self.reject = 0
        self.metadata: list[dict[str, str]] = []  # each call's invocation metadata
        self._lock = threading.Lock()
        self._server: Optional[grpc.Server] = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "GrpcReceiver":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(self, server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        server.add_insecure_port(self.endpoint)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def _maybe_fail(self, context: grpc.ServicerContext) -> None:
        if self.fail_code is None:
            return
        if self.retry_delay_s is not None:
            info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
                seconds=int(self.retry_delay_s), nanos=int(self.retry_delay_s % 1 * 1e9)))
            status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
            status.details.add().Pack(info)
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(self.fail_code, "test failure")

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        self._maybe_fail(context)
        with self._lock:
            self.metadata.append({m.key: m.value for m in context.invocation_metadata()})
            if isinstance(request, logs_service_pb2.ExportLogsServiceRequest):
                self.logs.append(request)
                resp = logs_service_pb2.ExportLogsServiceResponse()
                if self.reject:
                    resp.partial_success.rejected_log_records = self.reject
                    resp.partial_success.error_message = "too old"
                return resp
            self.traces.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    def log_records(self) -> int:
        with self._lock:
            return sum(count_records(r) for r in self.logs)


class HttpReceiver:
    """POST /v1/logs and /v1/traces; ``status`` and ``retry_after`` set the next answers."""

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.requests: list[tuple[str, str, bytes]] = []
        self.status = 200
        self.retry_after: Optional[str] = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(receiver.status)
                if receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after)
                if receiver.status == 200:
                    out = (logs_service_pb2.ExportLogsServiceResponse() if self.path.endswith("logs")
                           else trace_service_pb2.ExportTraceServiceResponse()).SerializeToString()
                    self.send_header("Content-Type", "application/x-protobuf")
                else:
                    out = b"busy"
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class HungServer:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (``trickle``: it
    writes the first bytes of an HTTP response, then one more byte every 0.1 s, forever), the
    endpoint that must not stall a sender past its deadline. ``stop`` closes every connection."""

    def __init__(self, port: Optional[int] = None, trickle: bool = False) -> None:
        self._listener = socket.create_server(("127.0.0.1", port or 0))
        self._listener.settimeout(0.1)  # the accept loop sees stop() within 0.1 s
        self.port = int(self._listener.getsockname()[1])
        self.trickle = trickle
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.accepted += 1
            self._conns.append(conn)
            if self.trickle:
                t = threading.Thread(target=self._dribble, args=(conn,), daemon=True)
                self._threads.append(t)
                t.start()

    def _dribble(self, conn: socket.socket) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not self._stop.wait(0.1):
                conn.sendall(b"X")  # a header line that never ends
        except OSError:
            pass

    def stop(self) -> None:
        self._stop.set()
        self._threads[0].join(5)
        self._listener.close()
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        for t in self._threads:
            t.join(5)
