"""Shared pieces of the delivery, spool and deadline tests: a fast retry policy, the drop
counter as a scraper reads it, and batches of distinct real OTLP records."""

from __future__ import annotations

from otelguard.ebpf.events import Event
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.transport import RetryPolicy
from tests.exporter.scenario import shell_session
from tests.support.metrics import sample

FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05, max_hint_s=0.05,
                   down_max_s=0.05)
NODE = NodeIdentity("n", "h", "i")


def dropped(stage: str, reason: str) -> float:
    return sample("otelguard_dropped_total", stage=stage, reason=reason)


def batches(n: int) -> list[tuple[bytes, int]]:
    """``n`` logs requests (wire bytes, record count), records distinct across batches."""
    b = OtlpBuilder(NODE, clock=lambda: 1)
    out = []
    for i in range(n):
        events: list[Event] = shell_session()
        for e in events:
            e.pid += 10_000 * i
        out.append((b.logs_bytes(events), len(events)))
    return out
