"""The ``exporter:`` section of the agent config (YAML), as a frozen dataclass.

Defaults are the default config. Built by the one config loader (:mod:`otelguard.config`):
unknown keys and bad values are reported at once with their dotted path and file:line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from otelguard.config import Checks
from otelguard.transport.contract import EXPORT_TIMEOUT_S
from otelguard.transport.identity import SenderIdentity
from otelguard.transport.security import ClientTls


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    """Batching of sensor events into OTLP requests, and the open-span bound."""

    max_batch: int = 512  # records per request; also the drain size
    flush_interval_s: float = 0.5  # a partial batch waits at most this long (200-1000 ms)
    drain_timeout_s: float = 0.1  # how long one drain() may block waiting for events
    max_open_spans: int = 65536  # LRU bound on open process/connection spans
    # deadline of one export call (0.1-60 s): a hung endpoint holds the export thread this long,
    # then the request spools (the agent) and the endpoint is left alone for its down window
    export_timeout_s: float = EXPORT_TIMEOUT_S
    # the hop to the processor: CA, client certificate (mTLS), server name, bearer token file;
    # or insecure: true (plaintext, reported by startup and ``otelguard doctor``)
    tls: ClientTls = ClientTls()
    # the node token every Resource is signed with (otelguard.sender.*), so the processor knows
    # which node sent it through any Collector between (docs/architecture.md#security)
    identity: SenderIdentity = SenderIdentity()

    def __post_init__(self) -> None:
        checks = Checks()
        for f in fields(self):
            if f.name not in ("tls", "identity") and getattr(self, f.name) <= 0:
                checks.add(f.name, f"must be > 0, got {getattr(self, f.name)!r}")
        if not checks.problems:  # the ranges, once every value is positive
            if not 0.05 <= self.flush_interval_s <= 10:
                checks.add("flush_interval_s",
                           f"must be within 0.05-10 s, got {self.flush_interval_s}")
            if self.max_batch > 8192:
                checks.add("max_batch", "at most 8192 (one request must stay under the "
                           f"receiver's 16 MiB limit), got {self.max_batch}")
            if not 0.1 <= self.export_timeout_s <= 60:
                checks.add("export_timeout_s",
                           f"must be within 0.1-60 s, got {self.export_timeout_s}")
            if self.max_open_spans < 2:
                checks.add("max_open_spans", "must be >= 2")
        checks.done()
