"""Forwarding processed batches to the next hops, with retries and honest backpressure.

The service answers its caller only after every next hop accepted the batch, so a caller's OK
means "delivered" and nothing is held in this process between requests (memory stays bounded by
the in-flight limits in receiver/admission.py). Per exporter:

* retryable failures are retried by the transport package's
  :class:`~otelguard.transport.retry.RetryPolicy` built from the ``forward:`` section (backoff
  from ``initial_backoff_seconds`` doubling up to ``max_backoff_seconds``, jittered by up to half,
  at least the next hop's RetryInfo/Retry-After, at most ``max_attempts`` tries within
  ``timeout_seconds``); each retry counts in ``otelguard_processor_forward_retries_total``;
* when the retries run out the hop is marked down for ``down_seconds`` and the caller gets
  UNAVAILABLE (HTTP 503, with Retry-After): the caller keeps the data and retries. While a hop is
  down, requests fail fast without touching it; the first request after that window probes it,
  and so does the service's flush timer with an empty request (:meth:`Forwarder.probe_down_hops`)
  so that ``/readyz`` sees the hop back without traffic;
* a refusal of this service's credentials (UNAUTHENTICATED, PERMISSION_DENIED, HTTP 401/403)
  is treated like the retries running out (hop down, caller answered UNAVAILABLE, counted under
  reason ``credentials``): rotating the token fixes it, and the caller's queue holds the data
  meanwhile (docs/architecture.md#failure-handling);
* any other non-retryable refusal (the next hop says the data is invalid) cannot succeed on retry: the
  records are dropped, counted in ``otelguard_dropped_total{stage="forward",
  reason="rejected_by_next_hop"}`` and reported to the caller as rejected (partial success).

With several exporters, one down hop makes the whole request UNAVAILABLE; hops that already took
the batch see it again when the caller retries (at-least-once per hop; exactly once with one).

Transports are those of :mod:`otelguard.transport` (``export_logs``/``export_traces`` returning a
result); calls block, so the service runs :meth:`Forwarder.forward` on a worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import telemetry
from otelguard.processors import errors, metrics
from otelguard.processors.config import ForwardSection
from otelguard.otlp.messages import count_records
from otelguard.processors.stage import Batch
from otelguard.transport.contract import ExportResult, Transport
from otelguard.transport.retry import DownWindow, RetryPolicy

log = logging.getLogger(__name__)


ExportTarget = Transport


@dataclass
class ForwardReport:
    """What happened to a batch: records the next hops refused for good, and why."""

    rejected: int = 0
    message: str = ""


def retry_policy(settings: ForwardSection) -> RetryPolicy:
    """The ``forward:`` section as a retry policy: the down window is fixed at ``down_seconds``;
    jitter spreads the many callers that share one hop."""
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        initial_backoff_s=settings.initial_backoff_seconds,
        max_backoff_s=settings.max_backoff_seconds,
        jitter=0.5,
        max_elapsed_s=settings.timeout_seconds,
        down_min_s=settings.down_seconds,
        down_max_s=settings.down_seconds,
    )


class _Hop:
    def __init__(self, name: str, target: ExportTarget, policy: RetryPolicy,
                 clock: Callable[[], float]) -> None:
        self.name = name
        self.target = target
        self.down = DownWindow(policy, clock)
        # Transports are used from one thread at a time (transport/contract.py).
        self.lock = threading.Lock()
        self.retries = metrics.forward_retries.labels(name)
        self.last_error = ""  # why the last failed send failed (readiness detail)


class Forwarder:
    """Sends each batch to every configured exporter; see the module doc for the guarantees."""

    def __init__(
        self,
        exporters: Sequence[tuple[str, ExportTarget]],
        settings: ForwardSection = ForwardSection(),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._policy = retry_policy(settings)
        self._hops = [_Hop(name, target, self._policy, clock) for name, target in exporters]
        self._clock = clock
        self._sleep = sleep

    @property
    def exporter_names(self) -> list[str]:
        return [hop.name for hop in self._hops]

    def hop_states(self) -> dict[str, tuple[bool, str]]:
        """Per hop: (down, detail). A hop is down from a forward that ran out of retries until a
        send or :meth:`probe_down_hops` gets through, so readiness (receiver/health.py) follows
        real reachability, not only the fail-fast window. Unlocked reads of two numbers."""
        out: dict[str, tuple[bool, str]] = {}
        for hop in self._hops:
            failures, remaining = hop.down.failures, hop.down.remaining()
            if failures:
                out[hop.name] = (True, f"down after {failures} failed forward(s): {hop.last_error}"
                                 + (f"; next try in {remaining:.1f}s" if remaining else ""))
            else:
                out[hop.name] = (False, "reachable")
        return out

    def probe_down_hops(self) -> None:
        """Send an empty logs request (valid OTLP, no records) once to every down hop whose
        fail-fast window is over, so a hop that came back is seen without waiting for traffic
        (a not-ready replica gets none). Blocks: the service runs it on a worker thread."""
        for hop in self._hops:
            if not hop.down.failures or hop.down.remaining() > 0:
                continue
            with hop.lock:
                try:
                    outcome = hop.target.export_logs(ExportLogsServiceRequest())
                except Exception as exc:  # same treatment as in _send
                    outcome = ExportResult.failure(f"{type(exc).__name__}: {exc}", "exception",
                                                   True)
                if outcome.ok or not outcome.keep:  # an answer, even a refusal: it is up
                    hop.down.mark_up()
                    log.info("next hop %s is reachable again", hop.name)
                else:
                    hop.last_error = outcome.error
                    hop.down.mark_down(outcome.retry_after_s)

    def forward(self, batch: Batch) -> ForwardReport:
        """Deliver to every hop or raise RequestError(UNAVAILABLE); never loses silently."""
        report = ForwardReport()
        n = count_records(batch)
        if n == 0:
            return report
        signal = "logs" if isinstance(batch, ExportLogsServiceRequest) else "traces"
        for hop in self._hops:
            with hop.lock:
                remaining = hop.down.remaining()
                if remaining > 0:
                    metrics.forward_failures.labels(hop.name, "down").inc()
                    raise errors.unavailable(
                        f"next hop {hop.name} is down; retry later", remaining
                    )
                outcome = self._send(hop, batch, signal)
                if outcome.ok:
                    hop.down.mark_up()
                elif outcome.keep:
                    hop.last_error = outcome.error
                    hop.down.mark_down(outcome.retry_after_s)
            if outcome.ok:
                accepted = n - outcome.rejected
                metrics.records_forwarded.labels(signal, hop.name).inc(accepted)
                if outcome.rejected:
                    telemetry.dropped.labels("forward", "rejected_by_next_hop").inc(
                        outcome.rejected)
                    report.rejected = max(report.rejected, outcome.rejected)
                    report.message = f"{hop.name}: {outcome.error}"
                continue
            if outcome.keep:  # retryable, or our credentials refused: the caller keeps the data
                metrics.forward_failures.labels(
                    hop.name, "credentials" if outcome.hold else "unavailable").inc()
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

        def once() -> ExportResult:
            try:
                if signal == "logs":
                    return hop.target.export_logs(batch)
                return hop.target.export_traces(batch)
            except Exception as exc:  # transports should not raise; treat a bug as transient
                return ExportResult.failure(f"{type(exc).__name__}: {exc}", "exception", True)

        return self._policy.run(once, self._sleep, self._clock, on_retry=hop.retries.inc)

    def shutdown(self) -> None:
        for hop in self._hops:
            try:
                hop.target.shutdown()
            except Exception:
                log.warning("exporter %s failed to shut down", hop.name, exc_info=True)
