"""The shared retry policy: schedule bounds, jitter range, hints, give-up rules, down windows."""

from __future__ import annotations

import random
from typing import Any

import pytest

from otelguard.transport.contract import ExportResult
from otelguard.transport.retry import (
    DownWindow,
    RetryPolicy,
    grpc_retryable,
    http_retryable,
)
from tests.support.fake_time import FakeTime

DOWN = ExportResult.failure("down", "unavailable", True)
BAD = ExportResult.failure("bad data", "invalid_argument", False)


def _hinted(seconds: float) -> ExportResult:
    return ExportResult.failure("slow down", "resource_exhausted", True, retry_after_s=seconds)


def test_backoff_doubles_from_initial_and_stops_at_the_cap() -> None:
    p = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=1.0)
    assert [p.backoff(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert p.backoff(10_000) == 1.0  # no overflow far out


def test_without_jitter_the_wait_is_the_backoff_exactly() -> None:
    p = RetryPolicy(max_attempts=5, initial_backoff_s=0.01, max_backoff_s=0.05)
    assert [p.delay(n, DOWN) for n in (1, 2, 3, 4)] == pytest.approx([0.01, 0.02, 0.04, 0.05])


def test_jitter_stays_within_its_fraction_and_spreads() -> None:
    p = RetryPolicy(max_attempts=5, initial_backoff_s=1.0, max_backoff_s=1.0, jitter=0.5)
    assert p.delay(1, DOWN, rand=lambda: 0.0) == 1.0
    assert p.delay(1, DOWN, rand=lambda: 1.0) == 0.5
    rng = random.Random(7)
    waits = [p.delay(1, DOWN, rand=rng.random) for _ in range(2000)]
    assert all(w is not None and 0.5 <= w <= 1.0 for w in waits)
    assert min(w for w in waits if w is not None) < 0.55
    assert max(w for w in waits if w is not None) > 0.95


def test_only_retryable_failures_are_retried_and_only_up_to_max_attempts() -> None:
    p = RetryPolicy(max_attempts=3)
    assert p.delay(1, ExportResult.success()) is None
    assert p.delay(1, ExportResult.success(rejected=3, error="old")) is None
    assert p.delay(1, BAD) is None
    assert p.delay(2, DOWN) is not None
    assert p.delay(3, DOWN) is None
    assert RetryPolicy(max_attempts=1).delay(1, DOWN) is None


def test_a_hint_is_a_floor_and_jitter_never_cuts_it() -> None:
    p = RetryPolicy(max_attempts=5, initial_backoff_s=0.1, max_backoff_s=2.0, jitter=1.0)
    assert p.delay(1, _hinted(0.7), rand=lambda: 1.0) == 0.7
    assert p.delay(1, _hinted(0.7), rand=lambda: 0.0) == 0.7
    # a hint shorter than the backoff does not shorten it
    assert p.delay(4, _hinted(0.05), rand=lambda: 0.0) == pytest.approx(0.8)


def test_a_hint_over_max_hint_ends_the_retries() -> None:
    p = RetryPolicy(max_attempts=5, max_backoff_s=2.0, max_hint_s=2.0)
    assert p.delay(1, _hinted(2.0)) == 2.0
    assert p.delay(1, _hinted(2.5)) is None
    assert RetryPolicy(max_attempts=5).delay(1, _hinted(60.0)) == 60.0  # no cap configured


def test_no_wait_may_end_past_max_elapsed() -> None:
    p = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_elapsed_s=1.0)
    assert p.delay(1, DOWN, elapsed=0.85) == pytest.approx(0.1)
    assert p.delay(1, DOWN, elapsed=0.9) is None
    assert p.delay(1, _hinted(5.0), elapsed=0.0) is None


def test_run_retries_until_success_and_counts_each_retry() -> None:
    t = FakeTime()
    results = iter([DOWN, DOWN, ExportResult.success()])
    retries: list[None] = []
    p = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0)
    out = p.run(lambda: next(results), t.sleep, t.clock, on_retry=lambda: retries.append(None))
    assert out.ok and t.sleeps == pytest.approx([0.1, 0.2]) and len(retries) == 2


def test_run_gives_up_with_the_last_result() -> None:
    t = FakeTime()
    sent: list[int] = []
    answer = DOWN

    def send() -> ExportResult:
        sent.append(1)
        return answer

    p = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0)
    assert p.run(send, t.sleep, t.clock) is DOWN and len(sent) == 4
    sent.clear()
    # the elapsed bound cuts earlier: 0.1 + 0.2 spent, 0.4 more would pass 0.6
    timed = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_elapsed_s=0.6)
    assert timed.run(send, t.sleep, t.clock) is DOWN and len(sent) == 3
    sent.clear()
    answer = BAD  # final: no second send
    assert p.run(send, t.sleep, t.clock) is BAD and len(sent) == 1


def test_down_window_grows_within_its_bounds_and_honours_hints() -> None:
    p = RetryPolicy(initial_backoff_s=0.1, down_max_s=1.0)
    assert [p.down_window(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    assert p.down_window(1, hint=0.5) == 0.5
    assert p.down_window(1, hint=60.0) == 1.0
    fixed = RetryPolicy(initial_backoff_s=0.1, down_min_s=5.0, down_max_s=5.0)
    assert {fixed.down_window(n, h) for n in (1, 7) for h in (None, 0.5, 60.0)} == {5.0}


def test_down_window_state_follows_the_clock() -> None:
    t = FakeTime()
    w = DownWindow(RetryPolicy(initial_backoff_s=0.1, down_max_s=1.0), t.clock)
    assert not w.is_down() and w.remaining() == 0.0
    w.mark_down()
    assert w.is_down() and w.remaining() == pytest.approx(0.2)
    w.mark_down()
    assert w.remaining() == pytest.approx(0.4)  # grows while failures repeat
    t.now += 0.4
    assert not w.is_down()
    w.mark_up()
    w.mark_down()
    assert w.remaining() == pytest.approx(0.2)  # a success starts over


def test_otlp_retryable_tables() -> None:
    for code in ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE",
                 "DATA_LOSS"):
        assert grpc_retryable(code, False), code
    assert not grpc_retryable("RESOURCE_EXHAUSTED", False)
    assert grpc_retryable("RESOURCE_EXHAUSTED", True)
    for code in ("INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "INTERNAL"):
        assert not grpc_retryable(code, True), code
    assert [s for s in (400, 401, 413, 415, 429, 500, 502, 503, 504) if http_retryable(s)] == [
        429, 502, 503, 504]


def test_refused_credentials_are_held_not_retried() -> None:
    from otelguard.transport.retry import grpc_hold, http_hold

    assert [c for c in ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNAVAILABLE")
            if grpc_hold(c)] == ["UNAUTHENTICATED", "PERMISSION_DENIED"]
    assert [s for s in (400, 401, 403, 404, 503) if http_hold(s)] == [401, 403]


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"initial_backoff_s": 0.0}, {"jitter": 1.5}, {"jitter": -0.1},
    {"max_elapsed_s": 0.0}, {"down_min_s": 2.0, "down_max_s": 1.0},
])
def test_nonsense_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)
