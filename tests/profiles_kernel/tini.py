"""A container's init, as tini does it: fork, exec the command, wait, pass its exit code on.
Run by a hard link of the Python binary named ``tini`` (workloads.py), so the service it starts
has a launcher as its parent, as under a container runtime."""

import os
import sys

pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
