"""OTLP/gRPC client transport (LogsService/Export, TraceService/Export).

Sends bytes as they are (a pass-through serializer), so the agent's hand-encoded requests cost
no re-encoding. Which status codes are retryable is the OTLP spec's gRPC table, kept in
:func:`otelguard.transport.retry.grpc_retryable`. A RetryInfo delay in
``grpc-status-details-bin`` becomes ``ExportResult.retry_after_s``. Every call carries a gRPC
deadline of ``timeout_s`` (connecting included): an endpoint that never answers ends the call
as a retryable ``deadline_exceeded``.

Security (:class:`~otelguard.transport.security.ClientTls`): TLS with the configured CA, an
optional client certificate (mTLS) and server-name override, or plaintext only when
``insecure`` is set. The files are checked before each call (a few stats): when the CA or the
client certificate changed the channel is rebuilt; the bearer token file is re-read when it
changed and sent as ``authorization`` metadata.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otelguard.transport.contract import (
    EXPORT_TIMEOUT_S, ExportResult, LogsPayload, SpecError, TracesPayload, as_bytes,
)
from otelguard.transport.retry import grpc_hold, grpc_retryable
from otelguard.transport.security import ClientTls, TokenFile, WatchedFiles, read_bytes

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
                 compression: bool = False, *, tls: ClientTls, where: str = "exporter",
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        tls.require(where)
        self._headers = headers  # extra metadata on every call (OTEL_EXPORTER_OTLP_HEADERS)
        self.name = f"otlp:{endpoint}"
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.tls = tls
        self._compression = grpc.Compression.Gzip if compression else None
        self._files = WatchedFiles([tls.ca_file, tls.cert_file, tls.key_file])
        self._token = TokenFile(tls.bearer_token_file) if tls.bearer_token_file else None
        self._channel: Optional[grpc.Channel] = None
        try:
            self._open()
        except OSError as exc:
            raise SpecError(f"{where}.tls: cannot read {exc.filename}: {exc.strerror}") from None

    def _open(self) -> None:
        """(Re)build the channel from the current files (read now, so a bad file fails here)."""
        self._files.changed()
        options: list[tuple[str, Any]] = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if self.tls.insecure:
            channel = grpc.insecure_channel(self.endpoint, options=options,
                                            compression=self._compression)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=read_bytes(self.tls.ca_file),
                private_key=read_bytes(self.tls.key_file),
                certificate_chain=read_bytes(self.tls.cert_file))
            if self.tls.server_name:
                options.append(("grpc.ssl_target_name_override", self.tls.server_name))
            channel = grpc.secure_channel(self.endpoint, creds, options=options,
                                          compression=self._compression)
        old, self._channel = self._channel, channel
        self._logs: Callable[..., Any] = channel.unary_unary(
            LOGS_METHOD, request_serializer=_serialize,
            response_deserializer=ExportLogsServiceResponse.FromString)
        self._traces: Callable[..., Any] = channel.unary_unary(
            TRACES_METHOD, request_serializer=_serialize,
            response_deserializer=ExportTraceServiceResponse.FromString)
        if old is not None:
            old.close()

    def _metadata(self) -> Optional[tuple[tuple[str, str], ...]]:
        token = self._token.first() if self._token is not None else None
        auth = (("authorization", f"Bearer {token}"),) if token else ()
        return (*self._headers, *auth) or None

    def export_logs(self, req: LogsPayload) -> ExportResult:
        return self._call("logs", req, "rejected_log_records")

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return self._call("traces", req, "rejected_spans")

    def _call(self, signal: str, req: Union[LogsPayload, TracesPayload],
              rejected_field: str) -> ExportResult:
        try:
            if not self.tls.insecure and self._files.changed():
                self._open()  # a rotated CA or client certificate
            method = self._logs if signal == "logs" else self._traces
            resp = method(req, timeout=self.timeout_s, metadata=self._metadata())
        except OSError as exc:
            self._files.forget()
            return ExportResult.failure(f"{self.name}: cannot read TLS files: {exc}",
                                        "unavailable", True)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            delay = retry_delay(exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None)
            retryable = grpc_retryable(code.name, delay is not None)
            return ExportResult.failure(
                f"{self.name}: {code.name}: {details}", code.name.lower(), retryable, delay,
                hold=grpc_hold(code.name))
        partial = resp.partial_success
        rejected = int(getattr(partial, rejected_field))
        return ExportResult.success(rejected=rejected, error=partial.error_message)

    def shutdown(self) -> None:
        if self._channel is not None:
            self._channel.close()
