"""The processors' exception tree: one root, foreign errors wrapped at the boundary.

Config and registry problems stop startup: config problems are the one
:class:`otelguard.config.ConfigError` of every config kind (re-exported here; it carries every
issue at once), registry problems a :class:`RegistryError`;
request problems become an OTLP status for the caller (:class:`RequestError` carries the gRPC code
and the HTTP status that belong together); stage failures never escape the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from otelguard.config import ConfigError as ConfigError
from otelguard.config import ConfigIssue as ConfigIssue

if TYPE_CHECKING:  # grpc is imported where a status is made: `otelguard run` never needs it
    import grpc


class ProcessorsError(Exception):
    """Root of every error raised by otelguard.processors."""


class RegistryError(ProcessorsError):
    """A processor type is unknown, or its module failed to import or breaks the unit contract."""


class RequestError(ProcessorsError):
    """A request the service refuses; ``code``/``http_status`` are what the caller sees.

    ``reason`` is the low-cardinality label used in ``otelguard_dropped_total`` and the request
    counters; ``retry_after`` (seconds) is set for retryable refusals.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        http_status: int,
        reason: str,
        message: str,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.code in (_status().UNAVAILABLE, _status().RESOURCE_EXHAUSTED)


def _status() -> "type[grpc.StatusCode]":
    """grpc's StatusCode, imported on first use (~70 ms of imports the agent's start skips)."""
    import grpc

    return grpc.StatusCode


def invalid_argument(reason: str, message: str) -> RequestError:
    return RequestError(_status().INVALID_ARGUMENT, 400, reason, message)


def too_large(message: str) -> RequestError:
    return RequestError(_status().RESOURCE_EXHAUSTED, 413, "too_large", message)


def body_timeout(message: str) -> RequestError:
    return RequestError(_status().DEADLINE_EXCEEDED, 408, "body_timeout", message)


def unsupported_media_type(message: str) -> RequestError:
    return RequestError(_status().INVALID_ARGUMENT, 415, "unsupported_media_type", message)


def overloaded(message: str, retry_after: float) -> RequestError:
    return RequestError(
        _status().RESOURCE_EXHAUSTED, 429, "overloaded", message, retry_after=retry_after
    )


def unavailable(message: str, retry_after: float) -> RequestError:
    return RequestError(
        _status().UNAVAILABLE, 503, "next_hop_unavailable", message, retry_after=retry_after
    )


class ForwardError(ProcessorsError):
    """Forwarding to the next hop failed for good (after retries, or non-retryable)."""

    def __init__(self, exporter: str, message: str, retryable: bool) -> None:
        super().__init__(f"{exporter}: {message}")
        self.exporter = exporter
        self.retryable = retryable
