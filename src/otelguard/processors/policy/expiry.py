"""The expiry date every exception of a policy tree carries (docs/policy.md#exceptions)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional


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
