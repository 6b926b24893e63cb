"""Where OTLP goes: the Transport protocol and its implementations, retry/spool delivery.

Neutral ground: imported by exporter/ (agent) and processors/ (forwarding); imports neither.
"""

from otelguard.transport.contract import (
    ExportResult, LogsPayload, SpecError, TracesPayload, Transport, TransportError,
)
from otelguard.transport.delivery import Delivery
from otelguard.transport.retry import RetryPolicy
from otelguard.transport.security import INSECURE_CLIENT, INSECURE_SERVER, ClientTls, ServerTls
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.spec import SPEC_HELP, parse_spec
from otelguard.transport.spool import Spool

__all__ = [
    "INSECURE_CLIENT", "INSECURE_SERVER", "ClientTls", "ServerTls", "Delivery", "ExportResult",
    "InMemoryTransport", "LogsPayload", "RetryPolicy", "SPEC_HELP",
    "SpecError", "Spool", "TracesPayload", "Transport", "TransportError", "parse_spec",
]
