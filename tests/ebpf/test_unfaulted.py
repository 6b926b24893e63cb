"""Syscall arguments in pages that are not resident, on the real kernel.

A tracepoint cannot take a page fault, so user memory whose page is not mapped in the process
yet (a file mapping no one touched, a fresh binary's .rodata, a page under reclaim or
migration) reads as an error at syscall entry; the syscall itself faults it in. The probes read
such an argument again at exit (docs/architecture.md#kernel-facts). Before, an open carried an
empty path, and a connect or a DNS query whose address (or sendmsg/sendmmsg header) was in such
a page was not reported at all: a way for any process to hide from every path and peer rule.
Each argument here sits alone in a one-page private file mapping the workload never touches
before the syscall (one mapping each: a fault in one would map its neighbours, the kernel's
fault-around).
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
# sendmsg and sendmmsg: queries and iovecs in ordinary memory, the headers (or the name) not
names = ["msghdr.unfaulted.test", "name.unfaulted.test", "mmsghdr.unfaulted.test"]
queries = [build_query(n) for n in names]
qbuf = [ctypes.create_string_buffer(q, len(q)) for q in queries]
iov = [ctypes.create_string_buffer(struct.pack("=QQ", ctypes.addressof(b), len(q)), 16)
       for b, q in zip(qbuf, queries)]
dns_sa = ctypes.create_string_buffer(inet(53), 16)
sleep, arg = ctypes.create_string_buffer(b"sleep"), ctypes.create_string_buffer(b"2.1")
msghdr = lambda name, vec: struct.pack("=QiiQQQQii", name, 16, 0, vec, 1, 0, 0, 0, 0)
args = [(work + "/hidden-write.txt").encode() + b"\0", inet(port), inet(53),
        msghdr(ctypes.addressof(dns_sa), ctypes.addressof(iov[0])),  # sendmsg: the msghdr
        inet(53),  # sendmsg: the name
        msghdr(ctypes.addressof(dns_sa), ctypes.addressof(iov[2])) + b"\0" * 8,  # sendmmsg
        b"2\0",  # exec: an argv string
        struct.pack("=QQQ", ctypes.addressof(sleep), ctypes.addressof(arg), 0)]  # exec: argv
holder = work + "/args"
with open(holder, "wb") as f:  # one argument per page, at pages 1 to 8
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

def page(i, prot=mmap.PROT_READ):  # a mapping of its own: fault-around maps neighbours in a VMA
    at = libc.mmap(None, PAGE, prot, mmap.MAP_PRIVATE, fd, i * PAGE)
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
libc.sendmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
libc.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
assert libc.sendmsg(udp.fileno(), page(4), 0) == len(queries[0]), ctypes.get_errno()
plain = ctypes.create_string_buffer(msghdr(page(5), ctypes.addressof(iov[1])), 56)
assert libc.sendmsg(udp.fileno(), plain, 0) == len(queries[1]), ctypes.get_errno()
assert libc.sendmmsg(udp.fileno(), page(6, mmap.PROT_READ | mmap.PROT_WRITE), 1, 0) == 1, ctypes.get_errno()
libc.execv.argtypes = (ctypes.c_char_p, ctypes.c_void_p)

def spawn(argv):  # the child maps its own page: untouched when it execs
    child = os.fork()
    if child == 0:
        libc.execv(b"/bin/sleep", argv())
        os._exit(127)
    return child

children = [spawn(lambda: (ctypes.c_void_p * 3)(ctypes.addressof(sleep), page(7), None)),
            spawn(lambda: page(8))]
assert all(os.waitpid(c, 0)[1] == 0 for c in children)
print(json.dumps({"port": port}))
'''


def test_open_connect_dns_and_exec_arguments_in_pages_not_yet_faulted_in(
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
    # argv the kernel could not read comes from /proc/<pid>/cmdline while the process lives
    sleeps = sorted(str(e.attrs.get(semconv.PROCESS_COMMAND_LINE)) for e in run.events
                    if e.name == semconv.EV_PROCESS_EXEC and e.pid != run.pid)
    assert sleeps == ["sleep 2", "sleep 2.1"], sleeps
    assert dns == ["unfaulted.otelguard.test", "msghdr.unfaulted.test", "name.unfaulted.test",
                   "mmsghdr.unfaulted.test"], dns
