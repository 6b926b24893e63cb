"""Syscall arguments in pages that are not resident, on the real kernel.

A tracepoint cannot take a page fault, so user memory whose page is not mapped in the process
yet (a file mapping no one touched, a fresh binary's .rodata, a page under reclaim or
migration) reads as an error at syscall entry; the syscall itself faults it in. The probes read
such an argument again at exit (docs/architecture.md#kernel-facts). Before, an open carried an
empty path and a connect or a DNS query to an address in such a page was not reported at all:
a way for any process to hide from every path and peer rule. Each argument here sits alone in
a one-page private file mapping the workload never touches before the syscall (one mapping
each: a fault in one would map its neighbours, the kernel's fault-around).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from otelguard import semconv
from tests.ebpf.capture import named
from tests.support.sensor import RunInContainer

pytestmark = pytest.mark.kernel
PY = os.path.realpath(sys.executable)

WORKLOAD = r'''
import ctypes, json, mmap, os, socket, struct, sys
from otelguard.ebpf.dns import build_query

PAGE = mmap.PAGESIZE
work = sys.argv[1]
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4)
port = srv.getsockname()[1]
inet = lambda p: struct.pack("=H", socket.AF_INET) + struct.pack(">H", p) + \
    socket.inet_aton("127.0.0.1") + b"\0" * 8
args = [(work + "/hidden-write.txt").encode() + b"\0", inet(port), inet(53)]
holder = work + "/args"
with open(holder, "wb") as f:  # one argument per page, at pages 1, 2, 3
    f.write(b"\0" * PAGE + b"".join(a.ljust(PAGE, b"\0") for a in args))
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long)
libc.open.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
libc.connect.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint)
libc.sendto.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
                        ctypes.c_void_p, ctypes.c_uint)
fd = os.open(holder, os.O_RDONLY)

def page(i):  # a mapping of its own: the kernel's fault-around maps neighbours in one VMA
    at = libc.mmap(None, PAGE, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, i * PAGE)
    assert at and at != ctypes.c_void_p(-1).value
    return at

out = libc.open(page(1), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
assert out >= 0, ctypes.get_errno()
os.close(out)
cli = socket.socket()
assert libc.connect(cli.fileno(), page(2), 16) == 0, ctypes.get_errno()
cli.close()
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = build_query("unfaulted.otelguard.test")
assert libc.sendto(udp.fileno(), q, len(q), 0, page(3), 16) == len(q), ctypes.get_errno()
print(json.dumps({"port": port}))
'''


def test_open_connect_and_dns_arguments_in_pages_not_yet_faulted_in(
        run_in_container: RunInContainer, tmp_path: Path) -> None:
    workdir = tmp_path
    run = run_in_container([PY, "-c", textwrap.dedent(WORKLOAD), str(workdir)],
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.proc.returncode == 0, run.proc.stderr.decode()
    port = json.loads(run.proc.stdout.decode().splitlines()[-1])["port"]
    mine = [e for e in run.events if e.pid == run.pid]
    opens = [str(e.attrs.get(semconv.FILE_PATH)) for e in named(mine, semconv.EV_FILE_OPEN)
             if e.attrs.get(semconv.FILE_OPEN_FLAGS) == "O_WRONLY|O_CREAT|O_CLOEXEC"]
    assert opens == [str(workdir / "hidden-write.txt")], opens  # not "" 
    connects = [(e.attrs.get(semconv.NETWORK_PEER_ADDRESS), e.attrs.get(semconv.NETWORK_PEER_PORT))
                for e in named(mine, semconv.EV_NETWORK_CONNECT)]
    assert ("127.0.0.1", port) in connects, connects
    dns = [e.attrs.get(semconv.DNS_QUESTION_NAME) for e in named(mine, semconv.EV_DNS_QUERY)]
    assert dns == ["unfaulted.otelguard.test"], dns
