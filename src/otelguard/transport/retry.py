"""The one retry policy of every sender: which results are worth another try, how long to wait
between tries, when to give up, and how long to leave an endpoint alone afterwards.

Used by :class:`~otelguard.transport.delivery.Delivery` (the agent and ``otelguard run``: after
the retries a retryable failure spools) and by the processor service's forwarder
(processors/forward.py: after the retries the caller is answered UNAVAILABLE and keeps the data).
What happens once the retries ran out belongs to each user; the schedule is this one:

- retryable: a failed :class:`ExportResult` whose transport said a retry can help, which the
  transports decide with :func:`grpc_retryable` / :func:`http_retryable` (the OTLP spec's tables);
- the wait before retry *n* is ``initial_backoff_s * 2**(n-1)`` capped at ``max_backoff_s``,
  shortened by up to ``jitter`` of itself at random so senders that failed together spread out;
- a receiver's RetryInfo / Retry-After hint is a floor: the wait is at least the hint. A hint
  over ``max_hint_s`` ends the retries at once (the sender has a better place to wait than a
  sleeping thread: its spool, or its own caller);
- at most ``max_attempts`` sends, and no wait that would end past ``max_elapsed_s`` after the
  first send;
- after the retries ran out the endpoint is down for ``initial_backoff_s * 2**failures`` (one
  more consecutive failure each time), kept within ``[down_min_s, down_max_s]``, at least the
  hint when there is one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Optional

from otelguard.transport.contract import ExportResult

# OTLP/gRPC: codes a retry can fix. RESOURCE_EXHAUSTED only with RetryInfo (without it the
# receiver says "too big": resending as is cannot help).
RETRYABLE_GRPC_CODES = frozenset({
    "CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS",
})
# OTLP/HTTP: statuses a retry can fix; every other 4xx/5xx is final.
RETRYABLE_HTTP_STATUSES = frozenset({429, 502, 503, 504})
# Credentials refused. The OTLP spec makes these final (resending as is cannot help), but the
# fix is the operator's: a rotated token or certificate, which the transports re-read without a
# restart. So a sender that can keep the data (the agent's spool, the Collector's queue behind
# the processor service) holds it instead of dropping it (docs/architecture.md#failure-handling).
HOLD_GRPC_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
HOLD_HTTP_STATUSES = frozenset({401, 403})


def grpc_retryable(code_name: str, has_retry_info: bool) -> bool:
    """Whether a gRPC status (by ``grpc.StatusCode`` name) is worth resending."""
    return code_name in RETRYABLE_GRPC_CODES or (
        code_name == "RESOURCE_EXHAUSTED" and has_retry_info)


def grpc_hold(code_name: str) -> bool:
    """Whether a gRPC status says the credentials were refused (see ``HOLD_GRPC_CODES``)."""
    return code_name in HOLD_GRPC_CODES


def http_hold(status: int) -> bool:
    """Whether an OTLP/HTTP status says the credentials were refused."""
    return status in HOLD_HTTP_STATUSES


def http_retryable(status: int) -> bool:
    """Whether an OTLP/HTTP response status is worth resending."""
    return status in RETRYABLE_HTTP_STATUSES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The schedule of the module doc. Holds no state: one policy serves any number of senders
    (the per-endpoint state is a :class:`DownWindow`)."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    jitter: float = 0.0  # fraction of each backoff that may be cut off at random, 0..1
    max_elapsed_s: Optional[float] = None  # None: bounded by max_attempts only
    max_hint_s: Optional[float] = None  # None: any hint is honoured (within max_elapsed_s)
    down_min_s: float = 0.0
    down_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if min(self.initial_backoff_s, self.max_backoff_s) <= 0:
            raise ValueError("backoff seconds must be > 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within 0..1")
        if self.max_elapsed_s is not None and self.max_elapsed_s <= 0:
            raise ValueError("max_elapsed_s must be > 0")
        if not 0.0 <= self.down_min_s <= self.down_max_s:
            raise ValueError("down window needs 0 <= down_min_s <= down_max_s")

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 = the second send), before jitter and hints."""
        return min(self.initial_backoff_s * 2.0 ** min(retry - 1, 60), self.max_backoff_s)

    def delay(self, attempt: int, result: ExportResult, elapsed: float = 0.0,
              rand: Callable[[], float] = random.random) -> Optional[float]:
        """The wait before sending again after send number ``attempt`` ended in ``result``,
        ``elapsed`` seconds after the first send; None when there is to be no retry."""
        if result.ok or not result.retryable or attempt >= self.max_attempts:
            return None
        wait = self.backoff(attempt) * (1.0 - self.jitter * rand())
        hint = result.retry_after_s
        if hint is not None:
            if self.max_hint_s is not None and hint > self.max_hint_s:
                return None
            wait = max(wait, hint)
        if self.max_elapsed_s is not None and elapsed + wait >= self.max_elapsed_s:
            return None
        return wait

    def down_window(self, failures: int, hint: Optional[float] = None) -> float:
        """How long to leave an endpoint alone after ``failures`` consecutive sends ran out of
        retries (``hint``: the last result's RetryInfo / Retry-After)."""
        window = self.initial_backoff_s * 2.0 ** min(failures, 20)
        if hint is not None:
            window = max(window, hint)
        return min(self.down_max_s, max(self.down_min_s, window))

    def run(self, send: Callable[[], ExportResult], sleep: Callable[[float], None],
            clock: Callable[[], float], on_retry: Optional[Callable[[], None]] = None,
            rand: Callable[[], float] = random.random) -> ExportResult:
        """Send until a result needs no retry or the policy gives up; returns the last result.
        ``on_retry`` runs before each wait (retry counters)."""
        start = clock()
        attempt = 0
        while True:
            attempt += 1
            result = send()
            wait = self.delay(attempt, result, clock() - start, rand)
            if wait is None:
                return result
            if on_retry is not None:
                on_retry()
            sleep(wait)


class DownWindow:
    """An endpoint's down state: set when a send ran out of retries, cleared by a success.
    Not locked: owned by one sender (a Delivery, or a forwarder hop under its lock)."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self.until = 0.0
        self.failures = 0

    def remaining(self) -> float:
        """Seconds until the endpoint may be tried again (0 when it is up)."""
        return max(0.0, self.until - self._clock())

    def is_down(self) -> bool:
        return self._clock() < self.until

    def mark_down(self, hint: Optional[float] = None) -> None:
        self.failures += 1
        self.until = self._clock() + self._policy.down_window(self.failures, hint)

    def mark_up(self) -> None:
        self.failures = 0
        self.until = 0.0
