"""Processes made with a chosen pid (``ns_last_pid``, as CRIU restores pids): the kernel tests
of pid reuse give two processes the same pid, one after the other."""

from __future__ import annotations

import os
import textwrap


def free_pid_ahead() -> int:
    """A free pid far ahead of the pids being handed out now (the runs' own processes take
    some)."""
    last = int(open("/proc/sys/kernel/ns_last_pid").read())
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    return next(p for p in ((last + d) % pid_max for d in range(pid_max // 4, pid_max // 2))
                if p > 300 and not os.path.exists(f"/proc/{p}"))


def reuse_script(child: str) -> str:
    """Python code run as ``-c CODE TARGET [TIMES]``: forks until TIMES children (1) got pid
    TARGET, each running ``child`` (statements) and printing its pid; a child that got another
    pid exits 3 at once."""
    body = textwrap.indent(textwrap.dedent(child).strip(), " " * 8)
    return f"""
import os, sys
target, times = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
for _ in range(100):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(target - 1))
    child = os.fork()
    if child == 0:
        if os.getpid() != target:
            os._exit(3)
{body}
        os._exit(0)
    if os.WEXITSTATUS(os.waitpid(child, 0)[1]) == 0:
        print(child, flush=True)
        times -= 1
        if times == 0:
            break
"""
