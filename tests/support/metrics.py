"""The project's metrics as a scraper sees them: parsed from the Prometheus text exposition.

Tests read counters here rather than through prometheus_client internals, so they check what
Prometheus would scrape (names with their ``_total``/``_count`` suffixes, label sets). Use
:func:`registry_text` for in-process code (the exposition of ``otelguard.telemetry.REGISTRY``,
which every otelguard metric is registered in) and :func:`scrape` where a server answers
``/metrics``.
"""

from __future__ import annotations

import urllib.request

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otelguard.telemetry import REGISTRY

_SUFFIXES = ("", "_total", "_created", "_count", "_sum", "_bucket")


def registry_text() -> str:
    return generate_latest(REGISTRY).decode()


def scrape(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read()).decode()


def series(name: str, text: str | None = None) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample ``name`` in ``text`` (the registry's exposition by
    default). A name that no metric in ``text`` exposes is an error (a typo must not read 0)."""
    known = False
    out: list[tuple[dict[str, str], float]] = []
    for family in text_string_to_metric_families(registry_text() if text is None else text):
        if name not in {family.name + s for s in _SUFFIXES}:
            continue
        known = True
        out.extend((s.labels, float(s.value)) for s in family.samples if s.name == name)
    if not known:
        raise AssertionError(f"no metric exposes a sample named {name!r}")
    return out


def sample(name: str, text: str | None = None, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels``; a labelled series not yet touched
    reads 0.0, as Prometheus' ``or vector(0)`` would."""
    return next((v for have, v in series(name, text) if have == labels), 0.0)


def total(name: str, text: str | None = None, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (``sum by`` in PromQL)."""
    return sum(v for have, v in series(name, text) if labels.items() <= have.items())
