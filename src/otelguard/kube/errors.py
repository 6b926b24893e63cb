"""The kube unit's exception tree: one root, the client's ``ApiException`` wrapped at the boundary.

Callers branch on the class (:class:`NotFound`, :class:`Conflict`, :class:`Forbidden`, ...), not on
HTTP numbers; every error keeps the API server's own message, which names the object and, for
RBAC refusals, the user and verb (what an operator needs to fix a Role).
"""

from __future__ import annotations

import json
from typing import Any, Optional


class KubeError(Exception):
    """Root of every error raised by otelguard.kube."""


class KubeAccessError(KubeError):
    """No way to reach the API server could be configured (no kubeconfig, no service account)."""


class ApiError(KubeError):
    """The API server refused a request; ``status`` is the HTTP status (0: no response),
    ``reason`` the Status object's reason (``NotFound``, ``Conflict``, ``AlreadyExists``, ...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object (or its kind: the CRD is not installed) does not exist."""


class Conflict(ApiError):
    """409 on update: the object changed since the resourceVersion given (re-read, retry)."""


class AlreadyExists(ApiError):
    """409 on create: an object of that name exists."""


class Forbidden(ApiError):
    """403: RBAC does not allow this identity the verb on the resource."""


class Invalid(ApiError):
    """422: the object does not match the kind's schema (the message lists the fields)."""


class Expired(ApiError):
    """410 Gone: the resourceVersion a watch starts from is older than the server keeps: list
    again, then watch from the list's resourceVersion."""


_BY_STATUS: dict[int, type[ApiError]] = {
    403: Forbidden, 404: NotFound, 409: Conflict, 410: Expired, 422: Invalid,
}


def api_error(status: int, reason: str, message: str) -> ApiError:
    """The error class for an HTTP status and Status reason."""
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(status, reason, message)
    return _BY_STATUS.get(status, ApiError)(status, reason, message)


def wrap(exc: BaseException, what: str) -> ApiError:
    """A ``kubernetes.client.ApiException`` (or a network error) as an :class:`ApiError`;
    ``what`` says which request it was (``get workloadprofiles ns/name``)."""
    status = getattr(exc, "status", None)
    status = status if isinstance(status, int) else 0
    reason, message = str(getattr(exc, "reason", "") or type(exc).__name__), str(exc)
    body: Any = getattr(exc, "body", None)
    if body:
        try:
            parsed = json.loads(body)
        except (ValueError, TypeError):
            parsed = None
        if isinstance(parsed, dict):
            reason = str(parsed.get("reason") or reason)
            message = str(parsed.get("message") or message)
    return api_error(status, reason, f"{what}: {message}")


def http_status(exc: BaseException) -> Optional[int]:
    """The HTTP status a client exception carries, if any."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None
