"""Forwarding processed batches to the next hops, with retries and honest backpressure.

The service answers its caller only after every next hop accepted the batch, so a caller's OK
means "delivered" and nothing is held in this process between requests (memory stays bounded by
the in-flight limits in receiver/admission.py). Per exporter:

* retryable failures are retried with exponential backoff (``forward.initial_backoff_seconds``
  doubling up to ``max_backoff_seconds``, at most ``max_attempts`` tries within
  ``timeout_seconds``); each retry counts in ``otelguard_processor_forward_retries_total``;
* when the retries run out the hop is marked down for ``down_seconds`` and the caller gets
  UNAVAILABLE (HTTP 503, with Retry-After): the caller keeps the data and retries. While a hop is
  down, requests fail fast without touching it; the first request after that window probes it;
* a non-retryable refusal (the next hop says the data is invalid) cannot succeed on retry: the
  records are dropped, counted in ``otelguard_dropped_total{stage="forward",
  reason="rejected_by_next_hop"}`` and reported to the caller as rejected (partial success).

With several exporters, one down hop makes the whole request UNAVAILABLE; hops that already took
the batch see it again when the caller retries (at-least-once per hop; exactly once with one).

Transports are those of :mod:`otelguard.transport` (``export_logs``/``export_traces`` returning a
result); calls block, so the service runs :meth:`Forwarder.forward` on a worker thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import telemetry
from otelguard.processors import errors, metrics
from otelguard.processors.config import ForwardSection
from otelguard.processors.otlp import count_records
from otelguard.processors.stage import Batch
from otelguard.transport.contract import ExportResult, Transport

log = logging.getLogger(__name__)


ExportTarget = Transport


@dataclass
class ForwardReport:
    """What happened to a batch: records the next hops refused for good, and why."""

    rejected: int = 0
    message: str = ""


class _Hop:
    def __init__(self, name: str, target: ExportTarget) -> None:
        self.name = name
        self.target = target
        self.down_until = 0.0
        # Transports are used from one thread at a time (transport/contract.py).
        self.lock = threading.Lock()
        self.retries = metrics.forward_retries.labels(name)


class Forwarder:
    """Sends each batch to every configured exporter; see the module doc for the guarantees."""

    def __init__(
        self,
        exporters: Sequence[tuple[str, ExportTarget]],
        settings: ForwardSection = ForwardSection(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._hops = [_Hop(name, target) for name, target in exporters]
        self._settings = settings
        self._clock = clock
        self._sleep = sleep

    @property
    def exporter_names(self) -> list[str]:
        return [hop.name for hop in self._hops]

    def forward(self, batch: Batch) -> ForwardReport:
        """Deliver to every hop or raise RequestError(UNAVAILABLE); never loses silently."""
        report = ForwardReport()
        n = count_records(batch)
        if n == 0:
            return report
        signal = "logs" if isinstance(batch, ExportLogsServiceRequest) else "traces"
        for hop in self._hops:
            with hop.lock:
                now = self._clock()
                if now < hop.down_until:
                    metrics.forward_failures.labels(hop.name, "down").inc()
                    raise errors.unavailable(
                        f"next hop {hop.name} is down; retry later", hop.down_until - now
                    )
                outcome = self._send(hop, batch, signal)
                if not outcome.ok and outcome.retryable:
                    hop.down_until = self._clock() + self._settings.down_seconds
            if outcome.ok:
                accepted = n - outcome.rejected
                metrics.records_forwarded.labels(signal, hop.name).inc(accepted)
                if outcome.rejected:
                    telemetry.dropped.labels("forward", "rejected_by_next_hop").inc(
                        outcome.rejected)
                    report.rejected = max(report.rejected, outcome.rejected)
                    report.message = f"{hop.name}: {outcome.error}"
                continue
            if outcome.retryable:
                metrics.forward_failures.labels(hop.name, "unavailable").inc()
                retry_after = outcome.retry_after_s or max(self._settings.down_seconds, 1.0)
                raise errors.unavailable(
                    f"next hop {hop.name} unavailable: {outcome.error}", retry_after
                )
            metrics.forward_failures.labels(hop.name, "rejected").inc()
            telemetry.dropped.labels("forward", "rejected_by_next_hop").inc(n)
            log.warning("next hop %s rejected %d records for good: %s", hop.name, n,
                        outcome.error)
            report.rejected = n
            report.message = f"{hop.name} rejected the batch: {outcome.error}"
        return report

    def _send(self, hop: _Hop, batch: Batch, signal: str) -> ExportResult:
        """Try, retrying retryable failures; called with ``hop.lock`` held."""
        s = self._settings
        deadline = self._clock() + s.timeout_seconds
        backoff = s.initial_backoff_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                if signal == "logs":
                    result = hop.target.export_logs(batch)
                else:
                    result = hop.target.export_traces(batch)
                outcome = result
            except Exception as exc:  # transports should not raise; treat a bug as transient
                outcome = ExportResult.failure(f"{type(exc).__name__}: {exc}", "exception", True)
            if outcome.ok or not outcome.retryable:
                if outcome.ok:
                    hop.down_until = 0.0
                return outcome
            wait = min(backoff, s.max_backoff_seconds)
            if outcome.retry_after_s is not None:
                wait = max(wait, outcome.retry_after_s)
            wait *= 0.5 + random.random() / 2  # jitter: callers retrying together spread out
            if attempt >= s.max_attempts or self._clock() + wait >= deadline:
                return outcome
            hop.retries.inc()
            self._sleep(wait)
            backoff *= 2

    def shutdown(self) -> None:
        for hop in self._hops:
            try:
                hop.target.shutdown()
            except Exception:
                log.warning("exporter %s failed to shut down", hop.name, exc_info=True)
