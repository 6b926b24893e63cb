"""Delivery: retry with backoff, spool while the next hop is down, replay oldest first.

The one place that turns transport results into retries, spooling and drop counts
(``telemetry.dropped{stage, reason}``), used by the agent's exporter and by forwarding stages.
Not locked: one Delivery per sending thread.

Behaviour, per send:
- while a backlog exists or the endpoint is in its down window, new requests go behind the
  backlog (spool), so order is kept and the caller's thread is not blocked by retries;
- otherwise up to ``attempts`` tries with exponential backoff (honouring the receiver's
  RetryInfo/Retry-After up to ``max_backoff_s``); a retryable failure after that spools and
  opens a down window that grows (x2, up to ``down_max_s``) while the endpoint stays down;
- non-retryable failures and OTLP partial-success rejections are dropped and counted.
Without a spool, what would have been spooled is dropped with reason ``unavailable``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

from otelguard import telemetry
from otelguard.transport.contract import (
    ExportResult, LogsPayload, TracesPayload, Transport, as_bytes,
)
from otelguard.transport.spool import Spool

log = logging.getLogger(__name__)
LOGS = "logs"
TRACES = "traces"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    down_max_s: float = 30.0
    replay_budget_s: float = 1.0  # longest a replay may hold the sending thread


@dataclass(slots=True)
class DeliveryStats:
    sent_records: int = 0
    spooled_records: int = 0
    replayed_records: int = 0
    dropped_records: int = 0
    last_error: str = ""


class Delivery:
    def __init__(self, transport: Transport, spool: Optional[Spool] = None,
                 policy: RetryPolicy = RetryPolicy(), stage: str = "export",
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.spool = spool
        self.policy = policy
        self.stage = stage
        self.stats = DeliveryStats()
        self._sleep = sleep
        self._clock = clock
        self._down_until = 0.0
        self._down_failures = 0

    @property
    def backlog(self) -> int:
        return len(self.spool) if self.spool is not None else 0

    def send_logs(self, payload: LogsPayload, records: int) -> bool:
        return self.send(LOGS, payload, records)

    def send_traces(self, payload: TracesPayload, records: int) -> bool:
        return self.send(TRACES, payload, records)

    def send(self, kind: str, payload: Union[LogsPayload, TracesPayload], records: int) -> bool:
        """Deliver or spool; False when the records were dropped (and counted)."""
        if records <= 0:
            return True
        if self.backlog or self._clock() < self._down_until:
            if self._clock() >= self._down_until:
                self.replay()
            if self.backlog or self._clock() < self._down_until:
                return self._spool_or_drop(kind, payload, records, "unavailable")
        result = self._attempt(kind, payload)
        if result.ok:
            self._ok(result, records)
            self.stats.sent_records += records
            return True
        self.stats.last_error = result.error
        if result.retryable:
            self._mark_down(result)
            return self._spool_or_drop(kind, payload, records, result.reason or "unavailable")
        self._drop(records, result.reason or "rejected", result.error)
        return False

    def replay(self) -> int:
        """Send spooled requests oldest first until the spool is empty, the endpoint fails again
        or the time budget is spent. Returns the records delivered."""
        if self.spool is None or self._clock() < self._down_until:
            return 0
        deadline = self._clock() + self.policy.replay_budget_s
        delivered = 0
        while self._clock() < deadline:
            entry = self.spool.oldest()
            if entry is None:
                break
            try:
                data = entry.read()
            except OSError as exc:  # removed or unreadable behind our back
                self._drop(entry.records, "spool_read", f"spool {entry.path}: {exc}")
                self.spool.remove(entry)
                continue
            result = self._export(entry.kind, data)
            if result.ok:
                self._ok(result, entry.records)
                delivered += entry.records
            elif result.retryable:
                self.stats.last_error = result.error
                self._mark_down(result)
                break
            else:
                self._drop(entry.records, result.reason or "rejected", result.error)
            self.spool.remove(entry)
        self.stats.replayed_records += delivered
        return delivered

    def shutdown(self) -> None:
        self.transport.shutdown()

    # ------------------------------------------------------------------------------------------
    def _export(self, kind: str, payload: Union[LogsPayload, TracesPayload]) -> ExportResult:
        try:
            if kind == LOGS:
                return self.transport.export_logs(payload)
            return self.transport.export_traces(payload)
        except Exception as exc:  # noqa: BLE001 - a transport bug must not kill the exporter
            log.exception("transport %s raised", self.transport.name)
            return ExportResult.failure(f"{self.transport.name}: {exc!r}", "transport_error", False)

    def _attempt(self, kind: str, payload: Union[LogsPayload, TracesPayload]) -> ExportResult:
        backoff = self.policy.initial_backoff_s
        result = self._export(kind, payload)
        for _ in range(self.policy.attempts - 1):
            if result.ok or not result.retryable:
                break
            wait = result.retry_after_s if result.retry_after_s is not None else backoff
            if wait > self.policy.max_backoff_s:
                break  # the receiver asked for a long pause: spool and come back later
            self._sleep(wait)
            backoff = min(backoff * 2, self.policy.max_backoff_s)
            result = self._export(kind, payload)
        return result

    def _mark_down(self, result: ExportResult) -> None:
        self._down_failures += 1
        window = min(self.policy.down_max_s,
                     self.policy.initial_backoff_s * (2 ** min(self._down_failures, 20)))
        if result.retry_after_s is not None:
            window = min(self.policy.down_max_s, max(window, result.retry_after_s))
        self._down_until = self._clock() + window

    def _ok(self, result: ExportResult, records: int) -> None:
        self._down_failures = 0
        self._down_until = 0.0
        if result.rejected:
            self._drop(min(result.rejected, records), "rejected",
                       f"{self.transport.name}: partial success: {result.error}")

    def _spool_or_drop(self, kind: str, payload: Union[LogsPayload, TracesPayload],
                       records: int, reason: str) -> bool:
        if self.spool is None:
            self._drop(records, reason, self.stats.last_error or "endpoint down")
            return False
        if self.spool.put(kind, as_bytes(payload), records):
            self.stats.spooled_records += records
            return True
        self.stats.dropped_records += records  # counted by the spool itself
        return False

    def _drop(self, records: int, reason: str, error: str) -> None:
        telemetry.dropped.labels(self.stage, reason).inc(records)
        self.stats.dropped_records += records
        log.warning("%s: %d records dropped (%s)", error, records, reason)
