"""Output specs as written on the command line, turned into Transports.

``console`` | ``jsonl:PATH`` | ``otlp:HOST:PORT`` (OTLP/gRPC) | ``otlphttp:URL`` (OTLP/HTTP
protobuf, URL without the ``/v1/<signal>`` suffix). Network transports import grpc/http lazily.
"""

from __future__ import annotations

from otelguard.transport.contract import EXPORT_TIMEOUT_S, SpecError, Transport

SPEC_HELP = "console | jsonl:PATH | otlp:HOST:PORT | otlphttp:URL"


def parse_spec(spec: str, timeout_s: float = EXPORT_TIMEOUT_S) -> Transport:
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

        return OtlpGrpcTransport(rest, timeout_s=timeout_s)
    if kind == "otlphttp":
        from otelguard.transport.otlp_http import OtlpHttpTransport

        return OtlpHttpTransport(rest, timeout_s=timeout_s)
    raise SpecError(f"output {spec!r} not understood; expected {SPEC_HELP}")
