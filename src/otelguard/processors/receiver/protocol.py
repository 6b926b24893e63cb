"""What the OTLP/gRPC and OTLP/HTTP receivers share: the per-signal codecs, the google.rpc.Status
with RetryInfo every refusal carries, the request counters, and the protobuf backend check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import grpc
from google.protobuf.internal import api_implementation
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelguard import telemetry
from otelguard.otlp import jsoncodec
from otelguard.processors import errors, metrics
from otelguard.processors.errors import ConfigError, ProcessorsError
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Batch

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


@dataclass(frozen=True)
class Signal:
    """Per-signal codec: request/response types and how partial success is spelled."""

    name: str
    request: type[Any]
    response: type[Any]
    json_decode: Callable[[bytes, int], Batch]  # (body, max AnyValue depth)
    rejected_field: str

    def outcome(self, response: Message) -> str:
        """The ``outcome`` label of an answered request: ``partial`` when records were refused."""
        partial = getattr(response, "partial_success", None)
        if partial is not None and int(getattr(partial, self.rejected_field)):
            return "partial"
        return "ok"


LOGS = Signal("logs", ExportLogsServiceRequest, ExportLogsServiceResponse,
              jsoncodec.decode_logs, "rejected_log_records")
TRACES = Signal("traces", ExportTraceServiceRequest, ExportTraceServiceResponse,
                jsoncodec.decode_traces, "rejected_spans")

# The request path both protocols call: (signal, protocol, body, decoder) -> Export response;
# raises RequestError for every refusal (see ProcessorService.handle).
Handle = Callable[[Signal, str, bytes, Callable[[bytes], Batch]], Any]


def count_request(sig: Signal, protocol: str, outcome: str, dropped: int = 0) -> None:
    """One answered request in ``otelguard_processor_requests_total``; refused records as drops."""
    metrics.requests.labels(sig.name, protocol, outcome).inc()
    if dropped:
        telemetry.dropped.labels("receive", outcome).inc(dropped)


def status_details(code: grpc.StatusCode, message: str, retry_after: Optional[float]) -> bytes:
    """google.rpc.Status with RetryInfo, as OTLP asks for throttling answers."""
    from google.protobuf.duration_pb2 import Duration
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.CopyFrom(Duration(seconds=int(retry_after),
                                           nanos=int((retry_after % 1) * 1e9)))
        status.details.add().Pack(info)
    data: bytes = status.SerializeToString()
    return data


def require_upb(settings: Settings) -> None:
    """Refuse to run on the pure-Python protobuf backend (100x slower) unless allowed."""
    kind = api_implementation.Type()
    if kind != "upb" and not settings.allow_pure_python_protobuf:
        raise ProcessorsError(
            f"protobuf backend is {kind!r}, not 'upb'; parsing would be ~100x slower. Install a "
            "protobuf wheel with upb, or set OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF=1"
        )


def split_hostport(hostport: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:4317`` too) of a listen address; an empty host means loopback."""
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError([errors.ConfigIssue("listen", f"expected HOST:PORT, got {hostport!r}")])
    return host.strip("[]") or "127.0.0.1", int(port)
