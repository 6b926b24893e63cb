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

PTRACE_ATTACH = r"""
import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
victim = os.fork()
if victim == 0:
    time.sleep(30); os._exit(0)
assert libc.ptrace(16, victim, 0, 0) == 0          # PTRACE_ATTACH
os.waitpid(victim, os.WUNTRACED)
libc.ptrace(17, victim, 0, 0)                      # PTRACE_DETACH
os.kill(victim, signal.SIGKILL); os.waitpid(victim, 0)
print(victim)
"""

# The payload lives a moment, as implants do: the agent reads /proc/<pid>/exe after the exec
# record arrives, and a process that is already gone leaves exe-derived flags unknown (docs).
MEMFD_EXEC = r"""
import os
fd = os.memfd_create("payload", os.MFD_CLOEXEC)
with open("/bin/sleep", "rb") as f:
    os.write(fd, f.read())
pid = os.fork()
if pid == 0:
    os.execve(fd, ["payload", "0.3"], {})    # fexecve: execveat(fd, "", AT_EMPTY_PATH)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
"""
