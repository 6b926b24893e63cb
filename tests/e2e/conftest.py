"""End-to-end fixtures: the real Collector, Loki, Jaeger and Prometheus from tests/support/stack.py."""

from tests.support.stack import backends_collector, jaeger, loki, prometheus  # noqa: F401
