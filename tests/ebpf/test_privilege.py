"""Privilege probe against the real kernel: a root child in a kubepods-shaped cgroup changes
identity and capabilities, traces, signals, unshares, mounts, calls bpf(), makes a memfd and
redirects stdio to a socket; each must arrive with its arguments and return value."""

from __future__ import annotations

import errno
import json
import sys

import pytest

from otelguard import semconv
from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from tests.ebpf.capture import named, run_workload
from tests.ebpf.pids import free_pid_ahead, reuse_script
from tests.support.sensor import RunInContainer

pytestmark = pytest.mark.kernel

WORKLOAD = r'''
import ctypes, json, os, signal, socket, struct, tempfile, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {"pid": os.getpid()}

# capset: keep everything but drop CAP_NET_RAW (13) from the effective set
hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
data = (ctypes.c_uint32 * 6)()
assert libc.capget(hdr, data) == 0
data[0] &= ~(1 << 13)
out["capset"] = libc.capset(hdr, data)

# cap_capable: chown needs CAP_CHOWN; checked on each call, reported once
fd, path = tempfile.mkstemp()
for _ in range(5):
    os.chown(path, 1234, 1234)
os.close(fd); os.unlink(path)

# ptrace: PTRACE_TRACEME in a child; PTRACE_ATTACH to a sleeping child, then SIGTERM it
pid = os.fork()
if pid == 0:
    libc.ptrace(0, 0, 0, 0)
    os._exit(0)
os.waitpid(pid, 0)
out["traceme_pid"] = pid
sleeper = os.fork()
if sleeper == 0:
    time.sleep(30)
    os._exit(0)
out["sleeper"] = sleeper
out["attach"] = libc.ptrace(16, sleeper, 0, 0)
os.waitpid(sleeper, os.WUNTRACED)
libc.ptrace(17, sleeper, 0, 0)
os.kill(sleeper, signal.SIGTERM)
os.waitpid(sleeper, 0)
os.kill(os.getpid(), 0)          # signal 0 and self-signals are not reported

# unshare + mount in a child (its own mount namespace: nothing leaks to the host)
mnt_dir = tempfile.mkdtemp()
out["mnt_dir"] = mnt_dir
child = os.fork()
if child == 0:
    uts = os.open("/proc/self/ns/uts", os.O_RDONLY)   # the namespace to return to
    rc = libc.unshare(0x00020000 | 0x04000000)       # CLONE_NEWNS | CLONE_NEWUTS
    libc.mount(b"none", b"/", None, (1 << 14) | (1 << 18), None)  # MS_REC|MS_PRIVATE
    rc2 = libc.mount(b"otelguard-test", mnt_dir.encode(), b"tmpfs", 2 | 4, b"size=1m")
    rc3 = libc.setns(uts, 0x04000000)                   # back into the original UTS namespace
    time.sleep(0.3)   # the fd's target is read from /proc at decode time (best effort)
    os._exit(0 if rc == 0 and rc2 == 0 and rc3 == 0 else 3)
out["ns_child"] = child
out["ns_child_rc"] = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
os.rmdir(mnt_dir)

# bpf(): a real map, and a command that does not exist
attr = ctypes.create_string_buffer(struct.pack("<IIII", 2, 4, 8, 1) + b"\0" * 112)  # ARRAY, 4/8, 1
out["bpf_ok"] = libc.syscall(321, 0, attr, 128)
out["bpf_bad"] = libc.syscall(321, 9999, attr, 128)
out["bpf_bad_errno"] = ctypes.get_errno()
if out["bpf_ok"] >= 0:
    os.close(out["bpf_ok"])

out["memfd"] = os.memfd_create("og-test-memfd", os.MFD_CLOEXEC)

# dup2 of a socket onto fd 0 (the reverse-shell pattern); the process stays alive meanwhile
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", 9))
out["sock_fd"] = s.fileno()
out["sock_port"] = s.getsockname()[1]
os.dup2(s.fileno(), 0)
os.dup2(s.fileno(), 100)      # newfd > 2: filtered in the kernel
time.sleep(0.3)

# identity last: setuid to nobody, then a failing setuid back
os.setresgid(-1, 65534, -1)
os.setuid(65534)
try:
    os.setuid(0)
except PermissionError:
    out["setuid_back"] = "EPERM"
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def priv_run(sensor: Sensor) -> tuple[dict[str, int], list[Event]]:
    out, _pid, events = run_workload(sensor, WORKLOAD)
    return json.loads(out), events


def _mine(events: list[Event], pid: int) -> list[Event]:
    return [e for e in events if e.pid == pid]


def test_setuid_to_nobody_then_eperm(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    sets = [e for e in named(_mine(events, info["pid"]), semconv.EV_PRIV_SETUID)
            if e.syscall == "setuid"]
    assert [(e.attrs[semconv.NEW_UID], e.ret) for e in sets] == [(65534, 0), (0, -errno.EPERM)]
    assert sets[1].attrs[semconv.ERROR_TYPE] == "EPERM"
    gid = [e for e in named(events, semconv.EV_PRIV_SETGID) if e.syscall == "setresgid"]
    assert len(gid) == 1 and gid[0].attrs[semconv.NEW_GID] == 65534 and gid[0].ret == 0


def test_capset_requested_sets(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    assert info["capset"] == 0
    caps = named(_mine(events, info["pid"]), semconv.EV_PRIV_CAPSET)
    assert len(caps) == 1 and caps[0].ret == 0
    eff = caps[0].attrs[semconv.PROCESS_CAP_EFFECTIVE]
    perm = caps[0].attrs[semconv.PROCESS_CAP_PERMITTED]
    assert isinstance(eff, list) and isinstance(perm, list)
    assert "CAP_NET_RAW" not in eff and "CAP_NET_RAW" in perm and "CAP_SYS_ADMIN" in eff


def test_cap_capable_reported_once_per_capability(
        priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    uses = named(_mine(events, info["pid"]), semconv.EV_PRIV_CAPABLE)
    chown = [e for e in uses if e.attrs[semconv.CAPABILITY] == "CAP_CHOWN"]
    assert len(chown) == 1 and chown[0].ret == 0  # five chowns, one report
    keys = [(e.attrs[semconv.CAPABILITY], e.ret == 0) for e in uses]
    assert len(keys) == len(set(keys))


def test_ptrace_traceme_and_attach(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    me = named(_mine(events, info["traceme_pid"]), semconv.EV_PTRACE)
    assert [e.attrs[semconv.PTRACE_REQUEST] for e in me] == ["PTRACE_TRACEME"]
    assert semconv.TARGET_PID not in me[0].attrs
    mine = named(_mine(events, info["pid"]), semconv.EV_PTRACE)
    attach = [e for e in mine if e.attrs[semconv.PTRACE_REQUEST] == "PTRACE_ATTACH"]
    assert len(attach) == 1 and attach[0].ret == 0 and info["attach"] == 0
    assert attach[0].attrs[semconv.TARGET_PID] == info["sleeper"]
    assert any(e.attrs[semconv.PTRACE_REQUEST] == "PTRACE_DETACH" for e in mine)


def test_kill_sigterm_but_not_signal_zero(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    kills = named(_mine(events, info["pid"]), semconv.EV_KILL)
    assert [(e.syscall, e.attrs[semconv.SIGNAL], e.attrs[semconv.TARGET_PID], e.ret)
            for e in kills] == [("kill", "SIGTERM", info["sleeper"], 0)]


def test_unshare_and_tmpfs_mount(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    assert info["ns_child_rc"] == 0
    child = _mine(events, info["ns_child"])
    un = named(child, semconv.EV_UNSHARE)
    assert len(un) == 1 and un[0].ret == 0
    assert un[0].attrs[semconv.NAMESPACE_FLAGS] == "CLONE_NEWNS|CLONE_NEWUTS"
    mounts = named(child, semconv.EV_MOUNT)
    tmpfs = [e for e in mounts if e.attrs[semconv.MOUNT_FSTYPE] == "tmpfs"]
    assert len(tmpfs) == 1 and tmpfs[0].ret == 0
    assert tmpfs[0].attrs[semconv.MOUNT_SOURCE] == "otelguard-test"
    assert tmpfs[0].attrs[semconv.MOUNT_TARGET] == info["mnt_dir"]
    assert tmpfs[0].attrs[semconv.MOUNT_FLAGS] == "MS_NOSUID|MS_NODEV"
    prop = [e for e in mounts if e.attrs[semconv.MOUNT_TARGET] == "/"]
    assert prop and prop[0].attrs[semconv.MOUNT_FLAGS] == "MS_REC|MS_PRIVATE"


def test_setns_back_into_the_original_uts_namespace(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    ns = named(_mine(events, info["ns_child"]), semconv.EV_SETNS)
    assert len(ns) == 1 and ns[0].ret == 0
    assert ns[0].attrs[semconv.NAMESPACE_FLAGS] == "CLONE_NEWUTS"
    assert str(ns[0].attrs[semconv.FILE_PATH]).startswith("uts:[")


def test_bpf_calls_success_and_failure(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    calls = named(_mine(events, info["pid"]), semconv.EV_BPF)
    got = [(e.attrs[semconv.BPF_COMMAND], e.ret) for e in calls]
    assert info["bpf_ok"] >= 0
    assert got == [("BPF_MAP_CREATE", info["bpf_ok"]), ("BPF_CMD_9999", -errno.EINVAL)]
    assert info["bpf_bad_errno"] == errno.EINVAL


def test_memfd_create(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    m = named(_mine(events, info["pid"]), semconv.EV_MEMFD_CREATE)
    assert len(m) == 1 and m[0].ret == info["memfd"]
    assert m[0].attrs[semconv.MEMFD_NAME] == "og-test-memfd"
    assert m[0].attrs[semconv.MEMFD_FLAGS] == "MFD_CLOEXEC"


def test_dup2_of_socket_onto_stdin(priv_run: tuple[dict[str, int], list[Event]]) -> None:
    info, events = priv_run
    dups = named(_mine(events, info["pid"]), semconv.EV_DUP)
    assert [(e.attrs[semconv.DUP_OLD_FD], e.attrs[semconv.DUP_NEW_FD],
             e.attrs[semconv.DUP_OLD_FD_TYPE]) for e in dups] == [(info["sock_fd"], 0, "socket")]
    assert dups[0].ret == 0
    a = dups[0].attrs
    assert (a[semconv.NETWORK_TRANSPORT], a[semconv.NETWORK_PEER_ADDRESS],
            a[semconv.NETWORK_PEER_PORT], a[semconv.NETWORK_LOCAL_PORT]) == (
        "udp", "127.0.0.1", 9, info["sock_port"])


def test_module_load_attempt(sensor: Sensor) -> None:
    from pathlib import Path
    if not Path("/sys/kernel/tracing/events/syscalls/sys_enter_finit_module").is_dir():
        pytest.skip("kernel built without CONFIG_MODULES: no finit_module tracepoint to attach")
    out, pid, events = run_workload(sensor, r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("/etc/hostname", os.O_RDONLY)
print(libc.syscall(313, fd, b"", 0), ctypes.get_errno())
''')
    loads = named([e for e in events if e.pid == pid], semconv.EV_MODULE_LOAD)
    assert len(loads) == 1 and loads[0].ret < 0
    assert loads[0].attrs[semconv.FILE_PATH] == "/etc/hostname"


# A process made with a chosen pid: it checks CAP_NET_ADMIN (SO_RCVBUFFORCE)
REUSE = reuse_script("""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, 33, 1 << 16)  # SO_RCVBUFFORCE: CAP_NET_ADMIN
    s.close()
""")


def test_a_reused_pid_in_a_new_container_reports_its_capability_use(
        run_in_container: RunInContainer) -> None:
    """Capability checks are reported once per process; the kernel keyed "process" by pid, so
    a new process that got an exited one's pid (pid_max is 32768 here: a long run reuses pids)
    never reported a capability the old one had used. Two containers' processes get the same
    pid; both uses must be reported."""
    target = free_pid_ahead()
    runs = [run_in_container([sys.executable, "-c", REUSE, str(target)]) for _ in range(2)]
    for run in runs:
        assert run.proc.stdout.decode().split() == [str(target)], run.proc.stderr.decode()
        uses = [e for e in named(run.events, semconv.EV_PRIV_CAPABLE)
                if e.pid == target and e.attrs.get(semconv.CAPABILITY) == "CAP_NET_ADMIN"]
        assert uses, [(e.name, e.pid, e.attrs.get(semconv.CAPABILITY)) for e in run.events]


def test_a_reused_pid_in_the_same_container_and_command_reports_its_capability_use(
        run_in_container: RunInContainer) -> None:
    """The harder reuse: one container forks two children that get the same pid, one after
    the other, both running the same command (the parent's comm): cgroup and comm are equal,
    only the fork that made each one differs (og_gen). Both uses must be reported."""
    target = free_pid_ahead()
    run = run_in_container([sys.executable, "-c", REUSE, str(target), "2"])
    assert run.proc.stdout.decode().split() == [str(target)] * 2, run.proc.stderr.decode()
    uses = [e for e in named(run.events, semconv.EV_PRIV_CAPABLE)
            if e.pid == target and e.attrs.get(semconv.CAPABILITY) == "CAP_NET_ADMIN"]
    assert len(uses) == 2, [(e.name, e.pid, e.attrs.get(semconv.CAPABILITY)) for e in run.events]
