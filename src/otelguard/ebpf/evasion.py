"""Evasion probe: io_uring, the syscall-free path for file and network operations.

io_uring requests (openat, connect, send, ...) never enter the syscalls the other probes watch,
which makes them a known blind spot of syscall-based sensors. We cannot follow each request
cheaply, so we report that it happens:

- ``io_uring:io_uring_submit_req``: the first submission of each opcode by each process
  (``otelguard.io_uring.opcode``, e.g. ``IORING_OP_OPENAT``), deduplicated in the kernel with
  an LRU hash per (tgid, opcode), so a busy ring costs one failing hash insert per request
  and sends nothing (not measured separately; the probe's syscall handlers showed no
  difference beyond noise on this VM, see privilege.py). A pid reused before its entries age out is not reported again.
  Submissions by an SQPOLL kernel thread carry no syscall name (no syscall happened).
- ``io_uring_setup`` (syscall enter/exit): entries, ``IORING_SETUP_*`` flags read from the
  caller's ``io_uring_params`` (SQPOLL means later submissions need no syscall at all) and the
  ring fd or errno, as ``otelguard.io_uring.setup``.

Execution from memfd, /dev/shm or deleted files is derived by the process table at exec.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

from otelguard import semconv
from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.probe import (
    DecodeContext, Header, ProbeConfig, group_defines, group_tracepoints, probe_source, read_record
)

T_URING_SUBMIT, T_URING_SETUP = 80, 81

GROUPS: dict[str, tuple[str, ...]] = {
    "SUBMIT": ("io_uring:io_uring_submit_req",),
    "SETUP": ("syscalls:sys_enter_io_uring_setup", "syscalls:sys_exit_io_uring_setup"),
}

# enum io_uring_op, in order (include/uapi/linux/io_uring.h, through Linux 6.18)
IORING_OPS = (
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD", "POLL_REMOVE",
    "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT",
    "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE",
    "STATX", "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL",
    "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT", "UNLINKAT",
    "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR",
    "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID",
    "FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND",
    "LISTEN", "RECV_ZC", "EPOLL_WAIT", "READV_FIXED", "WRITEV_FIXED", "PIPE",
)

SETUP_FLAGS = tuple((1 << i, "IORING_SETUP_" + n) for i, n in enumerate((
    "IOPOLL", "SQPOLL", "SQ_AFF", "CQSIZE", "CLAMP", "ATTACH_WQ", "R_DISABLED", "SUBMIT_ALL",
    "COOP_TASKRUN", "TASKRUN_FLAG", "SQE128", "CQE32", "SINGLE_ISSUER", "DEFER_TASKRUN",
    "NO_MMAP", "REGISTERED_FD_ONLY", "NO_SQARRAY", "HYBRID_IOPOLL", "CQE_MIXED",
)))


def opcode_name(opcode: int) -> str:
    """``IORING_OP_<NAME>``; opcodes newer than this table as ``IORING_OP_<n>``."""
    if 0 <= opcode < len(IORING_OPS):
        return "IORING_OP_" + IORING_OPS[opcode]
    return f"IORING_OP_{opcode}"


def setup_flag_names(flags: int) -> str:
    names = []
    rest = flags
    for bit, name in SETUP_FLAGS:
        if flags & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"


class SubmitRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("opcode", ctypes.c_uint8), ("sq_thread", ctypes.c_uint8),
                ("_pad", ctypes.c_uint8 * 6), ("flags", ctypes.c_uint64)]


class SetupRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("entries", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("params_ok", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class EvasionProbe:
    """The evasion capture area (see the module docstring)."""

    name = "evasion"
    source_file = "evasion.bpf.c"
    type_ids = range(80, 100)

    def tracepoints(self) -> list[str]:
        return group_tracepoints(GROUPS)

    def render(self, config: ProbeConfig, available: frozenset[str]) -> str:
        lines = group_defines("OG_EV_HAVE", GROUPS, available)
        return "\n".join(lines) + "\n" + probe_source(self.source_file)

    def decode(self, type_id: int, data: bytes, ctx: DecodeContext) -> Optional[Event]:
        s = read_record(SubmitRecord, data) if type_id == T_URING_SUBMIT else None
        if s is not None:
            op = opcode_name(int(s.opcode))
            ev = ctx.make_event(s.h, semconv.EV_IO_URING, "" if s.sq_thread else "io_uring_enter",
                                {semconv.IO_URING_OPCODE: op})
            ev.body = f"io_uring first use of {op}" + (" (SQPOLL thread)" if s.sq_thread else "")
            return ev
        r = read_record(SetupRecord, data) if type_id == T_URING_SETUP else None
        if r is not None:
            ret = int(r.h.ret)
            attrs: dict[str, AttrValue] = {}
            if r.params_ok:
                attrs[semconv.IO_URING_SETUP_FLAGS] = setup_flag_names(int(r.flags))
            if ret >= 0:
                attrs[semconv.FILE_FD] = ret
            ev = ctx.make_event(r.h, semconv.EV_IO_URING_SETUP, "io_uring_setup", attrs)
            ev.body = (f"io_uring_setup entries={int(r.entries)} "
                       f"flags={attrs.get(semconv.IO_URING_SETUP_FLAGS, '?')}"
                       + (f" failed: {os.strerror(-ret)}" if ret < 0 else ""))
            return ev
        return None


def create() -> EvasionProbe:
    """A new probe instance (one per sensor)."""
    return EvasionProbe()
