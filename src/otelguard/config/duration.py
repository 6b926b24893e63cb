"""Durations as people write them in config files and flags: ``24h``, ``90m``, ``300s``, ``2d``."""

from __future__ import annotations


def parse_duration(text: str) -> float:
    """``24h``, ``90m``, ``300s``, ``2d`` or plain seconds, as seconds (ValueError if not)."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    value = text.strip()
    scale = units.get(value[-1:].lower(), 0.0)
    try:
        number = float(value[:-1] if scale else value)
    except ValueError:
        raise ValueError(f"expected a duration such as 300s, 90m, 24h or 2d, got {text!r}") \
            from None
    seconds = number * (scale or 1.0)
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return seconds
