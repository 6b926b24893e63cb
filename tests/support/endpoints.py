"""Talking to servers a test started on 127.0.0.1: free ports, raw OTLP/gRPC and OTLP/HTTP calls.

The calls send bytes as given (no client-side validation), so tests can send garbage and read
back the status, body and trailing metadata exactly as a real client would see them.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from typing import Any

import grpc

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_range()
_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts next.

    Not from the kernel's ephemeral range: ``bind(0)`` would pick from the pool every outgoing
    connection on the host draws its local port from, so between this call and the server's own
    bind any client (a Collector exporting, a kubelet probe, another suite) could take it; that
    raced once in a full run ("address already in use"). Ports below the range are handed out
    only by explicit binds like this one, each at most once per test process.
    """
    lo, hi = _EPHEMERAL
    ranges = [(10000, lo - 1)] if lo > 11000 else [(hi + 1, 65535)]
    with _lock:
        for _ in range(1000):
            a, b = random.choice(ranges)
            port = random.randint(a, b)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port outside the ephemeral range")


def free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


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
