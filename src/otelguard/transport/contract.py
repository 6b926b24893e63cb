"""The Transport seam: where OTLP requests leave a stage, and the result every send returns.

Both the agent's exporter and the processor service's forwarding send through a Transport; a
Transport never retries, spools or counts drops itself (that is :class:`Delivery`'s job, once),
it only says what happened: ok, or failed and whether a retry can help, plus the OTLP
partial-success counts. Payloads are protobuf requests or their serialized bytes (the agent
hands over bytes it encoded itself; network transports send bytes as they are, the others parse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Union, runtime_checkable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# How long one export call may take before it ends as a retryable failure (reason
# ``deadline_exceeded``): the network transports' default and ``exporter.export_timeout_s``'s.
EXPORT_TIMEOUT_S = 5.0

LogsPayload = Union[ExportLogsServiceRequest, bytes]
TracesPayload = Union[ExportTraceServiceRequest, bytes]


class TransportError(Exception):
    """Root of the transport errors (bad spec, bad configuration); sending never raises."""


class SpecError(TransportError, ValueError):
    """An output spec that does not parse ("console", "jsonl:PATH", "otlp:HOST:PORT", ...)."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one send did. ``reason`` is a short, bounded label for telemetry.dropped."""

    ok: bool
    retryable: bool = False
    error: str = ""
    reason: str = ""
    rejected: int = 0  # OTLP partial success: records the receiver refused
    retry_after_s: Optional[float] = None  # the receiver's RetryInfo / Retry-After hint
    # not retryable as is, but worth keeping: the receiver refused the credentials, which an
    # operator fixes by rotating them (transport/retry.py HOLD_*); senders spool instead of drop
    hold: bool = False

    @staticmethod
    def success(rejected: int = 0, error: str = "") -> "ExportResult":
        return ExportResult(ok=True, rejected=rejected, error=error,
                            reason="rejected" if rejected else "")

    @staticmethod
    def failure(error: str, reason: str, retryable: bool,
                retry_after_s: Optional[float] = None, hold: bool = False) -> "ExportResult":
        return ExportResult(ok=False, retryable=retryable, error=error, reason=reason,
                            retry_after_s=retry_after_s, hold=hold)

    @property
    def keep(self) -> bool:
        """A failure whose records the sender keeps (spool, queue) rather than drops."""
        return not self.ok and (self.retryable or self.hold)


@runtime_checkable
class Transport(Protocol):
    """Sends OTLP requests somewhere. Implementations are used from one thread at a time."""

    name: str

    def export_logs(self, req: LogsPayload) -> ExportResult: ...

    def export_traces(self, req: TracesPayload) -> ExportResult: ...

    def shutdown(self) -> None: ...


def as_logs(req: LogsPayload) -> ExportLogsServiceRequest:
    if isinstance(req, bytes):
        msg = ExportLogsServiceRequest()
        msg.ParseFromString(req)
        return msg
    return req


def as_traces(req: TracesPayload) -> ExportTraceServiceRequest:
    if isinstance(req, bytes):
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(req)
        return msg
    return req


def as_bytes(req: Union[LogsPayload, TracesPayload]) -> bytes:
    if isinstance(req, bytes):
        return req
    data: bytes = req.SerializeToString()
    return data
