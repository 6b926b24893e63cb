"""Privilege decode without the kernel: hand-built records, names of flags/caps/signals/commands,
fd types from /proc, and render() compiling out missing tracepoints."""

from __future__ import annotations

import os
import socket

from otelguard import semconv
from otelguard.ebpf import privilege
from otelguard.ebpf.privilege import (
    ArgsRecord, CapableRecord, CapsetRecord, IdRecord, MountRecord, NameRecord, PrivilegeProbe,
    fd_type, flag_names, module_name_from_path, signal_name,
)
from otelguard.ebpf.probe import ProbeConfig
from tests.support.decoding import RecordingContext, header

P = PrivilegeProbe()
CTX = RecordingContext()


def test_setresuid_reports_the_first_id_that_changes() -> None:
    r = IdRecord()
    r.h = header(privilege.T_SETUID, ret=0)
    r.which = 2
    r.ids[0], r.ids[1], r.ids[2] = 0xFFFFFFFF, 0, 0xFFFFFFFF
    ev = P.decode(privilege.T_SETUID, bytes(r), CTX)
    assert ev is not None and ev.syscall == "setresuid" and ev.attrs[semconv.NEW_UID] == 0
    r.h = header(privilege.T_SETGID, ret=-1)
    r.which = 0
    r.ids[0] = 42
    ev = P.decode(privilege.T_SETGID, bytes(r), CTX)
    assert ev is not None and ev.syscall == "setgid" and ev.attrs[semconv.NEW_GID] == 42
    assert ev.name == semconv.EV_PRIV_SETGID and "failed" in ev.body


def test_capset_names_both_words() -> None:
    r = CapsetRecord()
    r.h = header(privilege.T_CAPSET)
    r.read_ok, r.target_pid = 1, 999
    r.effective[0], r.effective[1] = (1 << 21) | 1, 1 << (39 - 32)
    r.permitted[0] = 1 << 13
    ev = P.decode(privilege.T_CAPSET, bytes(r), CTX)
    assert ev is not None
    assert ev.attrs[semconv.PROCESS_CAP_EFFECTIVE] == ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_BPF"]
    assert ev.attrs[semconv.PROCESS_CAP_PERMITTED] == ["CAP_NET_RAW"]
    assert ev.attrs[semconv.TARGET_PID] == 999
    r.read_ok = 0
    ev = P.decode(privilege.T_CAPSET, bytes(r), CTX)
    assert ev is not None and semconv.PROCESS_CAP_EFFECTIVE not in ev.attrs


def test_cap_capable_denied() -> None:
    r = CapableRecord()
    r.h = header(privilege.T_CAPABLE, ret=-1)
    r.cap = 21
    ev = P.decode(privilege.T_CAPABLE, bytes(r), CTX)
    assert ev is not None and ev.attrs[semconv.CAPABILITY] == "CAP_SYS_ADMIN"
    assert ev.body.endswith("denied")


def args_record(type_id: int, *a: int, which: int = 0, ret: int = 0, pid: int = 100) -> bytes:
    r = ArgsRecord()
    r.h = header(type_id, pid=pid, ret=ret)
    for i, v in enumerate(a):
        r.a[i] = v & 0xFFFFFFFFFFFFFFFF
    r.which = which
    return bytes(r)


def test_ptrace_kill_unshare_setns_bpf() -> None:
    ev = P.decode(privilege.T_PTRACE, args_record(privilege.T_PTRACE, 0x4206, 55), CTX)
    assert ev is not None and ev.attrs[semconv.PTRACE_REQUEST] == "PTRACE_SEIZE"
    assert ev.attrs[semconv.TARGET_PID] == 55
    ev = P.decode(privilege.T_KILL, args_record(privilege.T_KILL, 7, 8, 9, which=2), CTX)
    assert ev is not None and ev.syscall == "tgkill" and ev.attrs[semconv.SIGNAL] == "SIGKILL"
    ev = P.decode(privilege.T_KILL, args_record(privilege.T_KILL, -1, 0, 15), CTX)
    assert ev is not None and ev.attrs[semconv.TARGET_PID] == -1  # kill(-1): everyone
    ev = P.decode(privilege.T_UNSHARE, args_record(privilege.T_UNSHARE, 0x10000000 | 0x20000000
                                                   | 0x1), CTX)
    assert ev is not None and ev.attrs[semconv.NAMESPACE_FLAGS] == \
        "CLONE_NEWUSER|CLONE_NEWPID|0x1"
    ev = P.decode(privilege.T_SETNS, args_record(privilege.T_SETNS, 3, 0x40000000,
                                                 pid=os.getpid()), CTX)
    assert ev is not None and ev.attrs[semconv.NAMESPACE_FLAGS] == "CLONE_NEWNET"
    ev = P.decode(privilege.T_BPF, args_record(privilege.T_BPF, 5, 120, ret=7), CTX)
    assert ev is not None and ev.attrs[semconv.BPF_COMMAND] == "BPF_PROG_LOAD" and ev.ret == 7


def test_dup_reads_the_fd_type_from_proc() -> None:
    with socket.socket() as s:
        ev = P.decode(privilege.T_DUP, args_record(privilege.T_DUP, s.fileno(), 999, which=1,
                                                   ret=-9, pid=os.getpid()), CTX)
        assert ev is not None and ev.syscall == "dup3"
        assert ev.attrs[semconv.DUP_OLD_FD_TYPE] == "socket"  # newfd failed: old fd read
    r, w = os.pipe()
    try:
        assert fd_type(os.readlink(f"/proc/self/fd/{r}")) == "pipe"
    finally:
        os.close(r)
        os.close(w)
    assert fd_type("/dev/pts/3") == "tty" and fd_type("/etc/passwd") == "file"
    assert fd_type(None) == "unknown" and fd_type("anon_inode:[eventfd]") == "unknown"


def test_mount_resolves_relative_target_and_strips_magic() -> None:
    r = MountRecord()
    r.h = header(privilege.T_MOUNT, pid=7)
    r.flags = 0xC0ED0000 | 4096 | 16384
    r.source, r.target, r.fstype = b"/dev/sda1", b"mnt/x", b"ext4"
    ev = P.decode(privilege.T_MOUNT, bytes(r), CTX)
    assert ev is not None and ev.attrs[semconv.MOUNT_TARGET] == "/cwd-of-7/mnt/x"
    assert ev.attrs[semconv.MOUNT_FLAGS] == "MS_BIND|MS_REC"


def test_memfd_and_module_names() -> None:
    r = NameRecord()
    r.h = header(privilege.T_MEMFD, ret=4)
    r.a[1] = 1 | 16
    r.name = b"payload"
    ev = P.decode(privilege.T_MEMFD, bytes(r), CTX)
    assert ev is not None and ev.attrs[semconv.MEMFD_NAME] == "payload"
    assert ev.attrs[semconv.MEMFD_FLAGS] == "MFD_CLOEXEC|MFD_EXEC"
    assert module_name_from_path("/lib/modules/x/kernel/nf-nat.ko.zst") == "nf_nat"
    r = NameRecord()
    r.h = header(privilege.T_MODULE, pid=os.getpid(), ret=-38)
    r.which = 1
    with open("/proc/self/status", "rb") as f:
        r.a[0] = f.fileno()
        ev = P.decode(privilege.T_MODULE, bytes(r), CTX)
    assert ev is not None and ev.syscall == "finit_module" and ev.ret == -38
    assert ev.attrs[semconv.FILE_PATH].endswith("/status")  # type: ignore[union-attr]


def test_names() -> None:
    assert signal_name(15) == "SIGTERM" and signal_name(34).startswith("SIGRTMIN")
    assert flag_names(0, privilege.MOUNT_FLAGS) == "0"
    assert privilege.cap_name(99) == "CAP_99"


def test_short_records_and_render() -> None:
    full = args_record(privilege.T_KILL, 1, 2, 15)
    for n in (0, 20, len(full) - 1):
        assert P.decode(privilege.T_KILL, full[:n], CTX) is None
    available = frozenset(tp for tp in P.tracepoints() if "module" not in tp)
    text = P.render(ProbeConfig(), available)
    assert "#define OG_PRIV_HAVE_FINIT_MODULE 0" in text
    assert "#define OG_PRIV_HAVE_CAPABLE 1" in text
    assert all(t in P.type_ids for t in range(privilege.T_SETUID, privilege.T_DUP + 1))
