"""Admission: the in-flight request and byte limits that turn overload into a retryable refusal
(RESOURCE_EXHAUSTED with RetryInfo / HTTP 429) before a body is parsed."""

from __future__ import annotations

from otelguard.processors import errors, metrics
from otelguard.processors.config import ServiceSection


class Admission:
    """In-flight requests and bytes; touched only from the event loop, so no lock."""

    def __init__(self, cfg: ServiceSection) -> None:
        self.cfg = cfg
        self.requests = 0
        self.bytes = 0

    def enter(self, size: int) -> None:
        if size > self.cfg.max_request_bytes:
            raise errors.too_large(
                f"request of {size} bytes exceeds max_request_bytes={self.cfg.max_request_bytes}")
        if (self.requests >= self.cfg.max_inflight_requests
                or self.bytes + size > self.cfg.max_inflight_bytes):
            raise errors.overloaded(
                f"{self.requests} requests / {self.bytes} bytes in flight; retry later", 1.0)
        self.requests += 1
        self.bytes += size
        metrics.inflight_requests.set(self.requests)
        metrics.inflight_bytes.set(self.bytes)

    def leave(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size
        metrics.inflight_requests.set(self.requests)
        metrics.inflight_bytes.set(self.bytes)
