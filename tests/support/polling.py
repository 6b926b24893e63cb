"""The one way tests wait for something to become true: poll, bounded in time by construction.

``wait_until`` answers whether it happened (for tests that assert more than that; every 0.2 s
by default, gentle on the servers a stack test queries); ``wait_for`` fails the test with what
it waited for (every 0.05 s: in-process state). Both poll every ``interval`` seconds
and check once more at the deadline, so a slow machine costs time, never a false failure
of a condition that came true on the last poll. ``give_up`` ends the wait early when the
thing waited on can no longer come (a server process that exited).
"""

from __future__ import annotations

import time
from typing import Callable, Optional


def wait_until(check: Callable[[], object], timeout: float, interval: float = 0.2,
               give_up: Optional[Callable[[], bool]] = None) -> bool:
    """Poll ``check`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline or (give_up is not None and give_up()):
            return False
        time.sleep(interval)


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "",
             interval: float = 0.05) -> None:
    """Like :func:`wait_until`, failing the test after ``timeout`` with ``what`` it waited for."""
    if not wait_until(check, timeout, interval):
        raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
