"""Attack payloads (Python source for ``python_attack``) that more than one attack test runs."""

# A listener and a connected client in one process; ``client`` is the attacker's connection.
CONNECTED = r"""
import os, socket, subprocess, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
client = socket.create_connection(srv.getsockname())
peer, _ = srv.accept()
"""

REVERSE_SHELL = CONNECTED + r"""
for fd in (0, 1, 2):
    os.dup2(client.fileno(), fd)
os.execv("/bin/sh", ["sh", "-c", "sleep 0.3"])
"""

PIPE_SHELL = r"""
import os
r, w = os.pipe()
os.dup2(r, 0)
os.execv("/bin/sh", ["sh", "-c", "sleep 0.3"])
"""
