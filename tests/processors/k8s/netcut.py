"""A TCP relay on 127.0.0.1 that a test can cut and restore, to take the API server away from the
enricher (and only from it) while the test keeps talking to the API server directly.

TLS passes through untouched (the serving certificate names 127.0.0.1, so the client's checks
still hold). ``cut()`` closes every relayed connection and refuses new ones until ``restore()``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Optional


class TcpRelay:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-relay")
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if not self._open.is_set():
                client.close()  # cut: refuse like a dead peer would
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            self.accepted += 1
            with self._lock:
                self._conns.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.5):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = key.data
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                self._close(s)

    def _close(self, s: Optional[socket.socket]) -> None:
        if s is None:
            return
        with self._lock:
            self._conns.discard(s)
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            self._close(s)

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2)
