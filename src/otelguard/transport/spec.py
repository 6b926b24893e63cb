"""Output specs as written on the command line, turned into Transports.

``console`` | ``jsonl:PATH`` | ``otlp:HOST:PORT`` (OTLP/gRPC) | ``otlphttp:URL`` (OTLP/HTTP
protobuf, URL without the ``/v1/<signal>`` suffix). Network transports import grpc/http lazily
and need ``tls`` (:class:`~otelguard.transport.security.ClientTls`): TLS files, or ``insecure``
set explicitly; ``where`` names the config section in the error otherwise.
"""

from __future__ import annotations

from typing import Optional

from otelguard.transport.contract import EXPORT_TIMEOUT_S, SpecError, Transport
from otelguard.transport.security import ClientTls

SPEC_HELP = "console | jsonl:PATH | otlp:HOST:PORT | otlphttp:URL"


def parse_spec(spec: str, timeout_s: float = EXPORT_TIMEOUT_S, tls: Optional[ClientTls] = None,
               where: str = "exporter") -> Transport:
    """The Transport of one spec; ``timeout_s`` is the network transports' call deadline."""
    kind, sep, rest = spec.strip().partition(":")
    if kind == "console" and not sep:
        from otelguard.transport.console import ConsoleTransport

        return ConsoleTransport()
    if kind == "jsonl":
        if not rest:
            raise SpecError(f"output {spec!r}: jsonl needs a path (jsonl:PATH)")
        from otelguard.transport.jsonlines import JsonLinesTransport

        return JsonLinesTransport(rest)
    if kind == "otlp":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SpecError(f"output {spec!r}: expected otlp:HOST:PORT with a port 1-65535")
        from otelguard.transport.otlp_grpc import OtlpGrpcTransport

        return OtlpGrpcTransport(rest, timeout_s=timeout_s, tls=tls or ClientTls(), where=where)
    if kind == "otlphttp":
        from otelguard.transport.otlp_http import OtlpHttpTransport

        return OtlpHttpTransport(rest, timeout_s=timeout_s, tls=tls or ClientTls(), where=where)
    raise SpecError(f"output {spec!r} not understood; expected {SPEC_HELP}")
