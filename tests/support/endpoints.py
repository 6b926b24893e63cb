"""Talking to servers a test started on 127.0.0.1: free ports, raw OTLP/gRPC and OTLP/HTTP calls.

The calls send bytes as given (no client-side validation), so tests can send garbage and read
back the status, body and trailing metadata exactly as a real client would see them.
"""

from __future__ import annotations

import http.client
import socket
from typing import Any

import grpc

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def grpc_call(endpoint: str, body: bytes, method: str = LOGS,
              timeout: float = 10.0) -> tuple[grpc.StatusCode, bytes, Any]:
    """One unary call with raw request bytes: (status code, response bytes or error details,
    trailing metadata)."""
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            resp, c = call.with_call(body, timeout=timeout)
            return grpc.StatusCode.OK, resp, c.trailing_metadata()
        except grpc.RpcError as exc:
            return exc.code(), exc.details().encode(), exc.trailing_metadata()


def grpc_code(endpoint: str, body: bytes, method: str = LOGS) -> grpc.StatusCode:
    """The status of one raw-bytes Export call (the client may send up to 64 MiB)."""
    with grpc.insecure_channel(endpoint, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=20)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code


def post(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 20.0,
         ) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, lower-cased headers) of one HTTP POST."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def post_proto(port: int, body: bytes, **extra: str) -> tuple[int, bytes, dict[str, str]]:
    """OTLP/HTTP protobuf logs export; ``extra`` headers (Content-Encoding, ...) added."""
    return post(port, "/v1/logs", body, {"Content-Type": "application/x-protobuf", **extra})
