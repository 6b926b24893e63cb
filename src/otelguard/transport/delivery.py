"""Delivery: retry with backoff, spool while the next hop is down, replay oldest first.

Turns transport results into spooling and drop counts (``telemetry.dropped{stage, reason}``)
for the agent's exporter and ``otelguard run``'s outputs; when to retry and for how long is the
shared :class:`~otelguard.transport.retry.RetryPolicy` (the processor service's forwarder uses it
too, answering UNAVAILABLE where this spools). Not locked: one Delivery per sending thread.

Behaviour, per send:
- while a backlog exists or the endpoint is in its down window, new requests go behind the
  backlog (spool), so order is kept and the caller's thread is not blocked by retries;
- otherwise the tries of its :class:`~otelguard.transport.retry.RetryPolicy` (exponential
  backoff; a receiver's RetryInfo/Retry-After over ``max_hint_s`` spools at once instead of
  blocking the sender); a retryable failure after that spools and opens the policy's down
  window, which grows (x2, up to ``down_max_s``) while the endpoint stays down;
- a refusal of the credentials (UNAUTHENTICATED, PERMISSION_DENIED, HTTP 401/403) is final for
  these bytes as sent but not for the data: a rotated token or certificate fixes it and the
  transports re-read both, so it spools and opens the down window like a retryable failure;
- every failed send or replay (after its retries) counts in ``telemetry.export_failures{stage,
  reason}``, so an agent that only spools is visible before its spool fills;
- other non-retryable failures and OTLP partial-success rejections are dropped and counted; what
  counts as sent or replayed is exactly what the endpoint accepted (records minus rejected);
- ``deadline_s`` bounds a send: no retry starts after it (the transports bound each call by
  their own timeout, the same config value), so an endpoint that accepts connections and never
  answers holds the calling thread for about one deadline, then the request spools and the down
  window keeps the next ones from waiting at all.
Without a spool, what would have been spooled is dropped with reason ``unavailable``. A spooled
file that fails verification is quarantined and counted by the spool (``spool``/``corrupt``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Union

from otelguard import telemetry
from otelguard.transport.contract import (
    ExportResult, LogsPayload, TracesPayload, Transport, as_bytes,
)
from otelguard.transport.retry import DownWindow, RetryPolicy
from otelguard.transport.spool import Spool

log = logging.getLogger(__name__)
LOGS = "logs"
TRACES = "traces"


# The agent's schedule as it always was, without jitter (the forwarder's hops, shared by many
# callers, are jittered).
DELIVERY_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=2.0,
                             max_hint_s=2.0, down_max_s=30.0)


@dataclass(slots=True)
class DeliveryStats:
    sent_records: int = 0
    spooled_records: int = 0
    replayed_records: int = 0
    dropped_records: int = 0
    last_error: str = ""


class Delivery:
    def __init__(self, transport: Transport, spool: Optional[Spool] = None,
                 policy: RetryPolicy = DELIVERY_RETRY, stage: str = "export",
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 replay_budget_s: float = 1.0, deadline_s: Optional[float] = None) -> None:
        self.transport = transport
        self.spool = spool
        if deadline_s is not None and (policy.max_elapsed_s is None
                                       or deadline_s < policy.max_elapsed_s):
            policy = dataclasses.replace(policy, max_elapsed_s=deadline_s)
        self.policy = policy
        self.stage = stage
        self.stats = DeliveryStats()
        self.replay_budget_s = replay_budget_s  # longest a replay may hold the sending thread
        self._sleep = sleep
        self._clock = clock
        self._down = DownWindow(policy, clock)

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
        if self.backlog or self._down.is_down():
            if not self._down.is_down():
                self.replay()
            if self.backlog or self._down.is_down():
                return self._spool_or_drop(kind, payload, records, "unavailable")
        result = self._attempt(kind, payload)
        if result.ok:
            self.stats.sent_records += self._ok(result, records)
            return True
        self.stats.last_error = result.error
        self._failed(result)
        if result.keep:
            self._down.mark_down(result.retry_after_s)
            return self._spool_or_drop(kind, payload, records, result.reason or "unavailable")
        self._drop(records, result.reason or "rejected", result.error)
        return False

    def replay(self) -> int:
        """Send spooled requests oldest first until the spool is empty, the endpoint fails again
        or the time budget is spent. Returns the records the endpoint accepted."""
        if self.spool is None or self._down.is_down():
            return 0
        deadline = self._clock() + self.replay_budget_s
        delivered = 0
        while self._clock() < deadline:
            entry = self.spool.oldest()
            if entry is None:
                break
            try:
                data = self.spool.read(entry)
            except OSError as exc:  # removed or unreadable behind our back
                self._drop(entry.records, "spool_read", f"spool {entry.path}: {exc}")
                self.spool.remove(entry)
                continue
            if data is None:  # quarantined and counted by the spool
                self.stats.dropped_records += entry.records
                continue
            result = self._export(entry.kind, data)
            if result.ok:
                delivered += self._ok(result, entry.records)
            elif result.keep:
                self._failed(result)
                self.stats.last_error = result.error
                self._down.mark_down(result.retry_after_s)
                break
            else:
                self._failed(result)
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
        return self.policy.run(lambda: self._export(kind, payload), self._sleep, self._clock)

    def _ok(self, result: ExportResult, records: int) -> int:
        """Mark the endpoint up, count its partial-success rejections; the records accepted."""
        self._down.mark_up()
        rejected = min(result.rejected, records)
        if rejected:
            self._drop(rejected, "rejected",
                       f"{self.transport.name}: partial success: {result.error}")
        return records - rejected

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

    def _failed(self, result: ExportResult) -> None:
        telemetry.export_failures.labels(self.stage, result.reason or "unknown").inc()

    def _drop(self, records: int, reason: str, error: str) -> None:
        telemetry.dropped.labels(self.stage, reason).inc(records)
        self.stats.dropped_records += records
        log.warning("%s: %d records dropped (%s)", error, records, reason)
