"""OTLP/gRPC client transport (LogsService/Export, TraceService/Export).

Sends bytes as they are (a pass-through serializer), so the agent's hand-encoded requests cost
no re-encoding. Which status codes are retryable is the OTLP spec's gRPC table, kept in
:func:`otelguard.transport.retry.grpc_retryable`. A RetryInfo delay in
``grpc-status-details-bin`` becomes ``ExportResult.retry_after_s``. Every call carries a gRPC
deadline of ``timeout_s`` (connecting included): an endpoint that never answers ends the call
as a retryable ``deadline_exceeded``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otelguard.transport.contract import (
    EXPORT_TIMEOUT_S, ExportResult, LogsPayload, TracesPayload, as_bytes,
)
from otelguard.transport.retry import grpc_retryable

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _serialize(req: Union[LogsPayload, TracesPayload]) -> bytes:
    return as_bytes(req)


def retry_delay(metadata: Optional[Sequence[Any]]) -> Optional[float]:
    """The RetryInfo delay carried in trailing metadata, if any."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key != "grpc-status-details-bin":
            continue
        from google.rpc import error_details_pb2, status_pb2

        status = status_pb2.Status()
        status.ParseFromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class OtlpGrpcTransport:
    def __init__(self, endpoint: str, timeout_s: float = EXPORT_TIMEOUT_S,
                 compression: bool = False) -> None:
        self.name = f"otlp:{endpoint}"
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            endpoint,
            options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
            compression=grpc.Compression.Gzip if compression else None,
        )
        self._logs: Callable[..., Any] = self._channel.unary_unary(
            LOGS_METHOD, request_serializer=_serialize,
            response_deserializer=ExportLogsServiceResponse.FromString)
        self._traces: Callable[..., Any] = self._channel.unary_unary(
            TRACES_METHOD, request_serializer=_serialize,
            response_deserializer=ExportTraceServiceResponse.FromString)

    def export_logs(self, req: LogsPayload) -> ExportResult:
        return self._call(self._logs, req, "rejected_log_records")

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return self._call(self._traces, req, "rejected_spans")

    def _call(self, method: Callable[..., Any], req: Union[LogsPayload, TracesPayload],
              rejected_field: str) -> ExportResult:
        try:
            resp = method(req, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            delay = retry_delay(exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None)
            retryable = grpc_retryable(code.name, delay is not None)
            return ExportResult.failure(
                f"{self.name}: {code.name}: {details}", code.name.lower(), retryable, delay)
        partial = resp.partial_success
        rejected = int(getattr(partial, rejected_field))
        return ExportResult.success(rejected=rejected, error=partial.error_message)

    def shutdown(self) -> None:
        self._channel.close()
