"""The expiry date every exception of a policy tree carries (docs/policy.md#exceptions)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from otelguard.config import Checks


def last_day(value: Any) -> Optional[dt.date]:
    """The last day an exception applies (a YAML date, or text YYYY-MM-DD), else None."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def today_utc() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def check_owned(checks: Checks, owner: str, expires: Any) -> None:
    """What every exception's spec must have: an owner and a last day."""
    if not owner.strip():
        checks.add("owner", "must name who owns the exception")
    if last_day(expires) is None:
        checks.add("expires", f"must be a date YYYY-MM-DD, got {expires!r}")


class Expiring:
    """A loaded exception (either kind): its spec's ``expires`` is its last day."""

    spec: Any

    @property
    def expires(self) -> dt.date:
        day = last_day(self.spec.expires)
        assert day is not None  # checked when the document was built (check_owned)
        return day

    def expired(self, today: dt.date) -> bool:
        return today > self.expires
