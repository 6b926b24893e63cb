"""Health probes as Kubernetes and grpc's own client ask them (docs/architecture.md#health)."""

from __future__ import annotations

import http.client
import json
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# the names the processor registers with grpc.health.v1: the whole server and both services
NAMES = ("", "opentelemetry.proto.collector.logs.v1.LogsService",
         "opentelemetry.proto.collector.trace.v1.TraceService")


def grpc_health(endpoint: str, service: str) -> Any:
    """grpc.health.v1.Health/Check with grpc's own client: the status, or the RpcError's code."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        except grpc.RpcError as exc:
            return exc.code()


def http_get_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET http://127.0.0.1:PORT/PATH -> (status, the JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def readyz_detail(port: int, check: str) -> str:
    """The detail /readyz gives for one named check."""
    detail: str = {c["name"]: c for c in http_get_json(port, "/readyz")[1]["checks"]}[check]["detail"]
    return detail
