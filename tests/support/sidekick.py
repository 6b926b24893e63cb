"""A local stand-in for falcosidekick's input: a real HTTP server on 127.0.0.1 that accepts
what falcosidekick's main handler accepts before it forwards an alert (a POST whose JSON body
decodes into its payload type with a known priority, a rule, a parsable time and at least one
output field) and answers 400 to the rest, or ``fail_status`` while that is set."""

from __future__ import annotations

import datetime
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from tests.support.endpoints import free_port


class Sidekick:
    """A local receiver that accepts what falcosidekick's main handler accepts (and rejects
    the rest with 400), or answers ``fail_status`` while set."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.content_types: list[str] = []
        self.fail_status: Optional[int] = None
        self.reject_rules: set[str] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.content_types.append(self.headers.get("Content-Type", ""))
                if owner.fail_status is not None:
                    self._answer(owner.fail_status)
                    return
                problem = owner.check(body)
                if problem:
                    owner.rejected.append(problem)
                    self._answer(400)
                    return
                owner.accepted.append(json.loads(body))
                self._answer(200)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def check(self, body: bytes) -> str:
        try:
            doc = json.loads(body)
        except ValueError:
            return "not JSON"
        for key, kind in (("output", str), ("priority", str), ("rule", str), ("time", str),
                          ("output_fields", dict), ("source", str), ("tags", list),
                          ("hostname", str)):
            if not isinstance(doc.get(key), kind):
                return f"{key} missing or not {kind.__name__}"
        if doc["priority"].lower() not in ("emergency", "alert", "critical", "error", "warning",
                                           "notice", "informational", "debug"):
            return "unknown priority"
        if not doc["rule"] or doc["rule"] in self.reject_rules:
            return "rule"
        try:  # Go's time.Time accepts RFC 3339 with up to 9 fractional digits
            datetime.datetime.strptime(doc["time"][:19], "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return "time"
        if not doc["output_fields"]:
            return "output_fields empty"
        return ""

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
