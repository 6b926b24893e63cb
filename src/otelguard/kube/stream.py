"""Reading a watch response: newline-delimited JSON events, and closing it from another thread.

Shared by the reflectors (kube/reflector.py) and :class:`CustomResources`'
watch. Bodies are parsed with ``json.loads`` rather than the client's model classes (~10x cheaper).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Optional

from otelguard.kube.errors import ApiError, api_error

Obj = dict[str, Any]


def lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited JSON events of a watch response, as they arrive."""
    pending = b""
    for chunk in resp.stream(amt=None, decode_content=False):
        pending += chunk
        while True:
            nl = pending.find(b"\n")
            if nl < 0:
                break
            line, pending = pending[:nl], pending[nl + 1:]
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def events(resp: Any) -> Iterator[tuple[str, Obj]]:
    """``(type, object)`` per watch event; an ``ERROR`` event raises its :class:`ApiError`
    (:class:`~otelguard.kube.errors.Expired` for 410 Gone: relist)."""
    for line in lines(resp):
        event = json.loads(line)
        event_type = str(event.get("type"))
        obj = event.get("object") or {}
        if event_type == "ERROR":
            raise error_event(obj)
        yield event_type, obj


def error_event(obj: Obj) -> ApiError:
    code = obj.get("code")
    return api_error(code if isinstance(code, int) else 0, str(obj.get("reason") or ""),
                     f"watch error: {obj.get('message', obj)}")


def shutdown_response(resp: Any) -> None:
    """Unblock a thread reading ``resp`` and free the connection (urllib3 >= 2.3 has shutdown)."""
    for method in ("shutdown", "close"):
        fn: Optional[Callable[[], None]] = getattr(resp, method, None)
        if fn is not None:
            try:
                fn()
            except Exception:  # already closed: nothing left to free
                pass
