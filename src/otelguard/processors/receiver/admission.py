"""Admission: the in-flight request and byte limits that turn overload into a retryable refusal
(RESOURCE_EXHAUSTED with RetryInfo / HTTP 429) before a body is parsed.

The byte count is what the service holds for requests in flight: a gRPC message as grpc handed
it over; for HTTP the Content-Length (``max_request_bytes`` when unknown) reserved before the
body is read, then the body and what it inflates to. One Admission is shared by both listeners,
so ``max_inflight_bytes`` bounds the service, not each listener.
"""

from __future__ import annotations

from otelguard.processors import errors, metrics
from otelguard.processors.config import ServiceSection


class Admission:
    """In-flight requests and bytes; touched only from the event loop, so no lock."""

    def __init__(self, cfg: ServiceSection) -> None:
        self.cfg = cfg
        self.requests = 0
        self.bytes = 0

    def admit(self, size: int) -> Ticket:
        """Admit one request holding ``size`` bytes; raises RequestError (413 or 429)."""
        self._check_size(size)
        if (self.requests >= self.cfg.max_inflight_requests
                or self.bytes + size > self.cfg.max_inflight_bytes):
            raise self._overloaded()
        self.requests += 1
        self._add(size)
        return Ticket(self, size)

    def _check_size(self, size: int) -> None:
        if size > self.cfg.max_request_bytes:
            raise errors.too_large(
                f"request of {size} bytes exceeds max_request_bytes={self.cfg.max_request_bytes}")

    def _overloaded(self) -> errors.RequestError:
        return errors.overloaded(
            f"{self.requests} requests / {self.bytes} bytes in flight; retry later", 1.0)

    def _add(self, size: int) -> None:
        self.bytes += size
        metrics.inflight_requests.set(self.requests)
        metrics.inflight_bytes.set(self.bytes)


class Ticket:
    """One admitted request's share of the byte budget; ``close()`` exactly once (``with``)."""

    def __init__(self, admission: Admission, size: int) -> None:
        self._admission = admission
        self.size = size
        self._open = True

    def resize(self, size: int) -> None:
        """Hold ``size`` bytes from now on; growing past the budget raises 429."""
        grow = size - self.size
        adm = self._admission
        if grow > 0 and adm.bytes + grow > adm.cfg.max_inflight_bytes:
            raise adm._overloaded()
        self.size = size
        adm._add(grow)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._admission.requests -= 1
            self._admission._add(-self.size)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
