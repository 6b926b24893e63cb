"""A clock and a sleep that only move when told, for retry and backoff tests."""

from __future__ import annotations


class FakeTime:
    """``clock()`` reads ``now``; ``sleep(s)`` records ``s`` and moves ``now`` on by it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
