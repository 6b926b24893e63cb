"""Output specs as written on the command line, turned into Transports.

``console`` | ``jsonl:PATH`` | ``otlp:HOST:PORT`` (OTLP/gRPC) | ``otlphttp:URL`` (OTLP/HTTP
protobuf, URL without the ``/v1/<signal>`` suffix) | ``falco-json:PATH`` (``-``: stdout) |
``falcosidekick:URL`` (Falco's JSON alerts, transport/falco.py), each optionally followed by
``?min_priority=P&tags=A,B&exclude_tags=C&insecure=true`` (transport/filters.py). Network
transports import grpc/http lazily and need ``tls``
(:class:`~otelguard.transport.security.ClientTls`): TLS files, or ``insecure`` set explicitly
(in the config, or ``?insecure=true`` for this output alone); ``where`` names the config
section in the error otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from otelguard.transport.contract import EXPORT_TIMEOUT_S, SpecError, Transport
from otelguard.transport.filters import FilteredTransport, split_options
from otelguard.transport.security import ClientTls

SPEC_HELP = ("console | jsonl:PATH | otlp:HOST:PORT | otlphttp:URL | falco-json:PATH|- | "
             "falcosidekick:URL, each optionally ?min_priority=P&tags=A,B&exclude_tags=C")
NETWORK_KINDS = ("otlp", "otlphttp", "falcosidekick")


def parse_spec(spec: str, timeout_s: float = EXPORT_TIMEOUT_S, tls: Optional[ClientTls] = None,
               where: str = "exporter") -> Transport:
    """The Transport of one spec; ``timeout_s`` is the network transports' call deadline."""
    base, options = split_options(spec.strip())
    kind = base.partition(":")[0]
    if options.insecure:
        if kind not in NETWORK_KINDS:
            raise SpecError(f"output {spec!r}: insecure applies to {', '.join(NETWORK_KINDS)}")
        tls = dataclasses.replace(tls or ClientTls(), insecure=True)
    transport = _transport(base, spec, timeout_s, tls, where)
    if options.filter.active:
        return FilteredTransport(transport, options.filter)
    return transport


def _transport(base: str, spec: str, timeout_s: float, tls: Optional[ClientTls],
               where: str) -> Transport:
    kind, sep, rest = base.partition(":")
    if kind == "console" and not sep:
        from otelguard.transport.console import ConsoleTransport

        return ConsoleTransport()
    if kind in ("jsonl", "falco-json"):
        if not rest:
            raise SpecError(f"output {spec!r}: {kind} needs a path ({kind}:PATH)")
        if kind == "falco-json":
            from otelguard.transport.falco import falco_json_transport

            transport: Transport = falco_json_transport(rest)
            return transport
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
    if kind == "falcosidekick":
        from otelguard.transport.falco import FalcosidekickTransport

        return FalcosidekickTransport(rest, timeout_s=timeout_s, tls=tls or ClientTls(),
                                      where=where)
    raise SpecError(f"output {spec!r} not understood; expected {SPEC_HELP}")
