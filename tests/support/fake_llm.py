"""A fake OpenAI-compatible chat completions server on 127.0.0.1 for the narrator tests: a
real HTTP server (a thread) that answers each POST /chat/completions with the next scripted
behaviour and keeps the request bodies it got."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

# ("answer", dict | str): 200 with that content; ("status", int): that HTTP status;
# ("slow", seconds, dict): the answer after a delay
Behaviour = Union[tuple[str, Any], tuple[str, float, Any]]


class FakeLlm:
    def __init__(self) -> None:
        self.script: list[Behaviour] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.requests.append(json.loads(body))
                owner.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions" or not owner.script:
                    self.send_response(404)
                    self.end_headers()
                    return
                step = owner.script.pop(0)
                if step[0] == "status":
                    self.send_response(int(step[1]))
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                if step[0] == "slow":
                    time.sleep(float(step[1]))
                content = step[-1]
                text = content if isinstance(content, str) else json.dumps(content)
                reply = json.dumps({"choices": [{"index": 0, "message": {
                    "role": "assistant", "content": text}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout case)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeLlm:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
