"""Privilege probe: identity and capability changes, process control, namespaces, mounts,
kernel modules, bpf(), memfd_create and stdio redirection.

Records (``probes/privilege.bpf.c``, type ids 60-72), all at syscall exit with the return value
except ``cap_capable`` (a kernel check, no syscall: ``ret`` is the check's result):

- setuid/setreuid/setresuid/setfsuid (and the gid family): ``otelguard.privilege.new_uid``
  (``new_gid``) = the first id argument that is not -1 (for setresuid(-1, 0, -1) that is the
  effective uid 0). setfsuid/setfsgid return the previous id, never an errno.
- capset: the requested effective/permitted sets (``otelguard.process.cap_effective`` /
  ``cap_permitted``, CAP_* names) read from the caller's buffers; target pid when not self.
- capability:cap_capable: ``otelguard.capability``; deduplicated in the kernel per (process,
  capability, granted/denied) with an LRU hash, because the tracepoint fires on nearly every
  privileged kernel path. A pid reused before its entry ages out is not reported again.
- ptrace (request name, target pid), kill/tkill/tgkill (signal name, target pid); signal 0 and
  signals to oneself stay in the kernel (Go's preemption SIGURG would flood otherwise).
- unshare (CLONE_* names), setns (fd, namespace type, and the fd's target such as
  ``uts:[4026531838]`` read from ``/proc/<pid>/fd`` at decode time: absent if the process
  already exited), mount (source, target resolved to an
  absolute path, fstype, MS_* flags), init_module/finit_module (finit: the file behind the fd via
  ``/proc/<pid>/fd``; module name from the file name), bpf (command name; the agent's own calls
  are filtered by ``og_is_self()``), memfd_create (name, flags), dup/dup2/dup3 onto fd 0-2
  only (dup's new fd is its result: the old fd is saved at entry, one map update per call, and
  the record is sent only for a result of 0-2), with
  ``otelguard.dup.old_fd_type`` from ``/proc/<pid>/fd`` at decode time (the new fd is read first:
  after a successful dup it names the same file, and reverse shells close the old one at once);
  for an inet socket also ``network.transport`` and the local/peer endpoints from
  ``/proc/<pid>/net`` (the connection a shell's stdio was redirected to).

Kernels built without CONFIG_MODULES have no init_module/finit_module tracepoints: the group is
compiled out (the syscalls then always fail with ENOSYS). Seeing the attempts anyway would need
a program on ``raw_syscalls:sys_enter``, run for every syscall on the host; a first measurement
here showed +180 ns per getppid (318 -> 498 ns), a repeat under heavy load could not separate
it from noise. Not done by default for that reason.

Overhead: every handler sits on a rare syscall except cap_capable, where an already reported
check costs one failing LRU hash insert. On this noisy shared VM (load ~8) an fchown loop
(one CAP_CHOWN check per call) and a getppid loop showed no difference beyond the noise with
this probe and the evasion probe loaded. User-space decode is ~5-10 µs per record.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Optional, Protocol, cast, runtime_checkable

from otelguard import semconv
from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.sockets import socket_endpoints
from otelguard.ebpf.proctable import CAP_NAMES
from otelguard.ebpf.probe import (
    DecodeContext, Header, ProbeConfig, c_string, group_defines, group_tracepoints, implements,
    probe_source, read_record
)

(T_SETUID, T_SETGID, T_CAPSET, T_CAPABLE, T_PTRACE, T_KILL, T_UNSHARE, T_SETNS, T_MOUNT,
 T_MODULE, T_BPF, T_MEMFD, T_DUP) = range(60, 73)

AT_FDCWD = -100
NO_ID = 0xFFFFFFFF

GROUPS: dict[str, tuple[str, ...]] = {
    **{g.upper(): (f"syscalls:sys_enter_{g}", f"syscalls:sys_exit_{g}") for g in (
        "setuid", "setreuid", "setresuid", "setfsuid", "setgid", "setregid", "setresgid",
        "setfsgid", "capset", "ptrace", "kill", "tkill", "tgkill", "unshare", "setns", "mount",
        "init_module", "finit_module", "bpf", "dup", "dup2", "dup3")},
    "MEMFD": ("syscalls:sys_enter_memfd_create", "syscalls:sys_exit_memfd_create"),
    "CAPABLE": ("capability:cap_capable",),
}

ID_SYSCALLS = {
    T_SETUID: ("setuid", "setreuid", "setresuid", "setfsuid"),
    T_SETGID: ("setgid", "setregid", "setresgid", "setfsgid"),
}
KILL_SYSCALLS = ("kill", "tkill", "tgkill")
DUP_SYSCALLS = ("dup2", "dup3", "dup")  # og_priv_args.which of a DUP record


PTRACE_REQUESTS = {
    0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 3: "PTRACE_PEEKUSER",
    4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSER", 7: "PTRACE_CONT",
    8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP", 12: "PTRACE_GETREGS", 13: "PTRACE_SETREGS",
    14: "PTRACE_GETFPREGS", 15: "PTRACE_SETFPREGS", 16: "PTRACE_ATTACH", 17: "PTRACE_DETACH",
    18: "PTRACE_GETFPXREGS", 19: "PTRACE_SETFPXREGS", 24: "PTRACE_SYSCALL",
    25: "PTRACE_GET_THREAD_AREA", 26: "PTRACE_SET_THREAD_AREA", 30: "PTRACE_ARCH_PRCTL",
    31: "PTRACE_SYSEMU", 32: "PTRACE_SYSEMU_SINGLESTEP", 33: "PTRACE_SINGLEBLOCK",
    0x4200: "PTRACE_SETOPTIONS", 0x4201: "PTRACE_GETEVENTMSG", 0x4202: "PTRACE_GETSIGINFO",
    0x4203: "PTRACE_SETSIGINFO", 0x4204: "PTRACE_GETREGSET", 0x4205: "PTRACE_SETREGSET",
    0x4206: "PTRACE_SEIZE", 0x4207: "PTRACE_INTERRUPT", 0x4208: "PTRACE_LISTEN",
    0x4209: "PTRACE_PEEKSIGINFO", 0x420A: "PTRACE_GETSIGMASK", 0x420B: "PTRACE_SETSIGMASK",
    0x420C: "PTRACE_SECCOMP_GET_FILTER", 0x420D: "PTRACE_SECCOMP_GET_METADATA",
    0x420E: "PTRACE_GET_SYSCALL_INFO", 0x420F: "PTRACE_GET_RSEQ_CONFIGURATION",
    0x4210: "PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG", 0x4211: "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG",
}

CLONE_FLAGS = (
    (0x00000100, "CLONE_VM"), (0x00000200, "CLONE_FS"), (0x00000400, "CLONE_FILES"),
    (0x00000800, "CLONE_SIGHAND"), (0x00001000, "CLONE_PIDFD"), (0x00002000, "CLONE_PTRACE"),
    (0x00004000, "CLONE_VFORK"), (0x00008000, "CLONE_PARENT"), (0x00010000, "CLONE_THREAD"),
    (0x00020000, "CLONE_NEWNS"), (0x00040000, "CLONE_SYSVSEM"), (0x00080000, "CLONE_SETTLS"),
    (0x00400000, "CLONE_UNTRACED"), (0x02000000, "CLONE_NEWCGROUP"),
    (0x04000000, "CLONE_NEWUTS"), (0x08000000, "CLONE_NEWIPC"), (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"), (0x40000000, "CLONE_NEWNET"), (0x80000000, "CLONE_IO"),
    (0x00000080, "CLONE_NEWTIME"),
)

MOUNT_FLAGS = (
    (1, "MS_RDONLY"), (2, "MS_NOSUID"), (4, "MS_NODEV"), (8, "MS_NOEXEC"),
    (16, "MS_SYNCHRONOUS"), (32, "MS_REMOUNT"), (64, "MS_MANDLOCK"), (128, "MS_DIRSYNC"),
    (256, "MS_NOSYMFOLLOW"), (1024, "MS_NOATIME"), (2048, "MS_NODIRATIME"), (4096, "MS_BIND"),
    (8192, "MS_MOVE"), (16384, "MS_REC"), (32768, "MS_SILENT"), (1 << 16, "MS_POSIXACL"),
    (1 << 17, "MS_UNBINDABLE"), (1 << 18, "MS_PRIVATE"), (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"), (1 << 21, "MS_RELATIME"), (1 << 22, "MS_KERNMOUNT"),
    (1 << 23, "MS_I_VERSION"), (1 << 24, "MS_STRICTATIME"), (1 << 25, "MS_LAZYTIME"),
)
MS_MGC_MASK = 0xFFFF0000
MS_MGC_VAL = 0xC0ED0000

MEMFD_FLAG_NAMES = ((1, "MFD_CLOEXEC"), (2, "MFD_ALLOW_SEALING"), (4, "MFD_HUGETLB"),
                    (8, "MFD_NOEXEC_SEAL"), (16, "MFD_EXEC"))

BPF_COMMANDS = (
    "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD",
    "BPF_PROG_QUERY", "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID",
    "BPF_TASK_FD_QUERY", "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE",
    "BPF_BTF_GET_NEXT_ID", "BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
    "BPF_MAP_UPDATE_BATCH", "BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE", "BPF_LINK_UPDATE",
    "BPF_LINK_GET_FD_BY_ID", "BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS", "BPF_ITER_CREATE",
    "BPF_LINK_DETACH", "BPF_PROG_BIND_MAP", "BPF_TOKEN_CREATE", "BPF_PROG_STREAM_READ_BY_FD",
)


def flag_names(value: int, table: tuple[tuple[int, str], ...]) -> str:
    """``A|B`` for the set bits of ``value``; leftover bits as hex, ``0`` when none."""
    names = []
    rest = value
    for bit, name in table:
        if value & bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(hex(rest))
    return "|".join(names) if names else "0"


def cap_name(cap: int) -> str:
    return CAP_NAMES[cap] if 0 <= cap < len(CAP_NAMES) else f"CAP_{cap}"


def cap_set_names(lo: int, hi: int) -> list[str]:
    mask = (hi << 32) | lo
    return [cap_name(i) for i in range(64) if mask >> i & 1]


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
            return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
        return f"SIG{sig}"


def fd_type(link: Optional[str]) -> str:
    """What ``/proc/<pid>/fd/<n>`` points at: socket, pipe, tty, file, or unknown."""
    if not link:
        return "unknown"
    if link.startswith("socket:"):
        return "socket"
    if link.startswith("pipe:"):
        return "pipe"
    if link.startswith(("/dev/pts/", "/dev/tty", "/dev/console")) or link == "/dev/ptmx":
        return "tty"
    if link.startswith("anon_inode:"):
        return "unknown"
    if link.startswith("/"):
        return "file"
    return "unknown"


MFD_CLOEXEC = 1


@runtime_checkable
class MemfdTracker(Protocol):
    """What the sensor's DecodeContext offers to remember memfds (the process table)."""

    def on_memfd(self, hdr: Header, fd: int, name: str, cloexec: bool) -> None: ...


def _readlink(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


def module_name_from_path(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".xz", ".zst", ".gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


class IdRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("which", ctypes.c_uint32), ("ids", ctypes.c_uint32 * 3)]


class CapsetRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("version", ctypes.c_uint32), ("target_pid", ctypes.c_int32),
                ("effective", ctypes.c_uint32 * 2), ("permitted", ctypes.c_uint32 * 2),
                ("inheritable", ctypes.c_uint32 * 2), ("read_ok", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class CapableRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("cap", ctypes.c_int32), ("_pad", ctypes.c_uint32)]


class ArgsRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("a", ctypes.c_uint64 * 4), ("which", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32)]


class MountRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("flags", ctypes.c_uint64), ("source", ctypes.c_char * 128),
                ("target", ctypes.c_char * 256), ("fstype", ctypes.c_char * 32)]


class NameRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("a", ctypes.c_uint64 * 3), ("which", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32), ("name", ctypes.c_char * 64)]


_RECORDS: dict[int, type[ctypes.Structure]] = {
    T_SETUID: IdRecord, T_SETGID: IdRecord, T_CAPSET: CapsetRecord, T_CAPABLE: CapableRecord,
    T_PTRACE: ArgsRecord, T_KILL: ArgsRecord, T_UNSHARE: ArgsRecord, T_SETNS: ArgsRecord,
    T_MOUNT: MountRecord, T_MODULE: NameRecord, T_BPF: ArgsRecord, T_MEMFD: NameRecord,
    T_DUP: ArgsRecord,
}


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


def _failed(ret: int) -> str:
    return f" failed: {os.strerror(-ret)}" if ret < 0 else ""


class PrivilegeProbe:
    """The privilege capture area (see the module docstring)."""

    name = "privilege"
    source_file = "privilege.bpf.c"
    type_ids = range(60, 80)

    def tracepoints(self) -> list[str]:
        return group_tracepoints(GROUPS)

    def render(self, config: ProbeConfig, available: frozenset[str]) -> str:
        lines = group_defines("OG_PRIV_HAVE", GROUPS, available)
        return "\n".join(lines) + "\n" + probe_source(self.source_file)

    def decode(self, type_id: int, data: bytes, ctx: DecodeContext) -> Optional[Event]:
        rec_type = _RECORDS.get(type_id)
        rec = None if rec_type is None else read_record(rec_type, data)
        if rec is None:
            return None
        if type_id in (T_SETUID, T_SETGID):
            return self._ids(type_id, cast(IdRecord, rec), ctx)
        if type_id == T_CAPSET:
            return self._capset(cast(CapsetRecord, rec), ctx)
        if type_id == T_CAPABLE:
            return self._capable(cast(CapableRecord, rec), ctx)
        if type_id == T_MOUNT:
            return self._mount(cast(MountRecord, rec), ctx)
        if type_id in (T_MODULE, T_MEMFD):
            return self._named(type_id, cast(NameRecord, rec), ctx)
        return self._args(type_id, cast(ArgsRecord, rec), ctx)

    def _ids(self, type_id: int, r: IdRecord, ctx: DecodeContext) -> Event:
        names = ID_SYSCALLS[type_id]
        syscall = names[r.which] if r.which < len(names) else names[0]
        ids = [int(x) for x in r.ids]
        new = next((x for x in ids if x != NO_ID), NO_ID)
        uid = type_id == T_SETUID
        attrs: dict[str, AttrValue] = {}
        if new != NO_ID:
            attrs[semconv.NEW_UID if uid else semconv.NEW_GID] = new
        ev = ctx.make_event(r.h, semconv.EV_PRIV_SETUID if uid else semconv.EV_PRIV_SETGID,
                            syscall, attrs)
        shown = ", ".join("-1" if x == NO_ID else str(x) for x in ids if x != NO_ID) or "-1"
        ret = int(r.h.ret)
        ev.body = f"{syscall}({shown})" + ("" if syscall.startswith("setfs") else _failed(ret))
        return ev

    def _capset(self, r: CapsetRecord, ctx: DecodeContext) -> Event:
        attrs: dict[str, AttrValue] = {}
        eff = "?"
        if r.read_ok:
            effective = cap_set_names(r.effective[0], r.effective[1])
            attrs[semconv.PROCESS_CAP_EFFECTIVE] = effective
            attrs[semconv.PROCESS_CAP_PERMITTED] = cap_set_names(r.permitted[0], r.permitted[1])
            if r.target_pid and r.target_pid != r.h.pid:
                attrs[semconv.TARGET_PID] = int(r.target_pid)
            eff = ",".join(effective) or "(none)"
        ev = ctx.make_event(r.h, semconv.EV_PRIV_CAPSET, "capset", attrs)
        ev.body = f"capset effective={eff}" + _failed(int(r.h.ret))
        return ev

    def _capable(self, r: CapableRecord, ctx: DecodeContext) -> Event:
        name = cap_name(int(r.cap))
        ev = ctx.make_event(r.h, semconv.EV_PRIV_CAPABLE, "", {semconv.CAPABILITY: name})
        ev.body = f"capability check {name}: " + ("granted" if r.h.ret == 0 else "denied")
        return ev

    def _mount(self, r: MountRecord, ctx: DecodeContext) -> Event:
        target_raw = c_string(r.target)
        target = ctx.resolve_path(int(r.h.pid), AT_FDCWD, target_raw) if target_raw else ""
        flags = int(r.flags)
        if flags & MS_MGC_MASK == MS_MGC_VAL:  # the historic magic in the high bits
            flags &= ~MS_MGC_MASK
        attrs: dict[str, AttrValue] = {
            semconv.MOUNT_SOURCE: c_string(r.source), semconv.MOUNT_TARGET: target,
            semconv.MOUNT_FSTYPE: c_string(r.fstype),
            semconv.MOUNT_FLAGS: flag_names(flags, MOUNT_FLAGS),
        }
        ev = ctx.make_event(r.h, semconv.EV_MOUNT, "mount", attrs)
        ev.body = (f"mount {attrs[semconv.MOUNT_SOURCE]} on {target} type "
                   f"{attrs[semconv.MOUNT_FSTYPE]}" + _failed(int(r.h.ret)))
        return ev

    def _named(self, type_id: int, r: NameRecord, ctx: DecodeContext) -> Event:
        ret = int(r.h.ret)
        pid = int(r.h.pid)
        attrs: dict[str, AttrValue] = {}
        if type_id == T_MEMFD:
            name = c_string(r.name)
            attrs[semconv.MEMFD_NAME] = name
            attrs[semconv.MEMFD_FLAGS] = flag_names(int(r.a[1]) & 0xFFFFFFFF, MEMFD_FLAG_NAMES)
            if ret >= 0:
                attrs[semconv.FILE_FD] = ret
                if implements(ctx, MemfdTracker):  # an exec through this fd is fileless
                    cast(MemfdTracker, ctx).on_memfd(r.h, ret, name, bool(int(r.a[1]) & MFD_CLOEXEC))
            ev = ctx.make_event(r.h, semconv.EV_MEMFD_CREATE, "memfd_create", attrs)
            ev.body = f"memfd_create {name!r}" + _failed(ret)
            return ev
        finit = r.which == 1
        if finit:
            fd = _s32(int(r.a[0]))
            attrs[semconv.FILE_FD] = fd
            path = _readlink(f"/proc/{pid}/fd/{fd}") if fd >= 0 else None
            if path:
                attrs[semconv.FILE_PATH] = path
                attrs[semconv.MODULE_NAME] = module_name_from_path(path)
        params = c_string(r.name)
        ev = ctx.make_event(r.h, semconv.EV_MODULE_LOAD,
                            "finit_module" if finit else "init_module", attrs)
        what = attrs.get(semconv.MODULE_NAME) or attrs.get(semconv.FILE_PATH) or "?"
        ev.body = f"load kernel module {what}" + (f" {params}" if params else "") + _failed(ret)
        return ev

    def _args(self, type_id: int, r: ArgsRecord, ctx: DecodeContext) -> Optional[Event]:
        ret = int(r.h.ret)
        a = [int(x) for x in r.a]
        attrs: dict[str, AttrValue] = {}
        if type_id == T_PTRACE:
            req = _s64(a[0])
            req_name = PTRACE_REQUESTS.get(req, f"PTRACE_{req}")
            attrs[semconv.PTRACE_REQUEST] = req_name
            if req != 0:  # PTRACE_TRACEME has no target
                attrs[semconv.TARGET_PID] = _s64(a[1])
            ev = ctx.make_event(r.h, semconv.EV_PTRACE, "ptrace", attrs)
            ev.body = f"ptrace {req_name}" + (f" pid {_s64(a[1])}" if req else "") + _failed(ret)
            return ev
        if type_id == T_KILL:
            syscall = KILL_SYSCALLS[r.which] if r.which < len(KILL_SYSCALLS) else "kill"
            target = _s64(a[0])
            sig = signal_name(int(a[2]))
            attrs[semconv.TARGET_PID] = target
            attrs[semconv.SIGNAL] = sig
            ev = ctx.make_event(r.h, semconv.EV_KILL, syscall, attrs)
            ev.body = f"{syscall} {sig} -> {target}" + _failed(ret)
            return ev
        if type_id == T_UNSHARE:
            flags = flag_names(a[0], CLONE_FLAGS)
            attrs[semconv.NAMESPACE_FLAGS] = flags
            ev = ctx.make_event(r.h, semconv.EV_UNSHARE, "unshare", attrs)
            ev.body = f"unshare {flags}" + _failed(ret)
            return ev
        if type_id == T_SETNS:
            fd = _s64(a[0])
            nstype = flag_names(a[1] & 0xFFFFFFFF, CLONE_FLAGS)
            attrs[semconv.FILE_FD] = fd
            attrs[semconv.NAMESPACE_FLAGS] = nstype
            link = _readlink(f"/proc/{int(r.h.pid)}/fd/{fd}") if fd >= 0 else None
            if link:
                attrs[semconv.FILE_PATH] = link
            ev = ctx.make_event(r.h, semconv.EV_SETNS, "setns", attrs)
            ev.body = f"setns fd {fd} ({link or '?'}) {nstype}" + _failed(ret)
            return ev
        if type_id == T_BPF:
            cmd = a[0] & 0xFFFFFFFF
            name = BPF_COMMANDS[cmd] if cmd < len(BPF_COMMANDS) else f"BPF_CMD_{cmd}"
            attrs[semconv.BPF_COMMAND] = name
            ev = ctx.make_event(r.h, semconv.EV_BPF, "bpf", attrs)
            ev.body = f"bpf {name}" + _failed(ret)
            return ev
        if type_id == T_DUP:
            old, new = _s32(a[0]), _s32(a[1])
            pid = int(r.h.pid)
            link = None
            if ret >= 0:
                link = _readlink(f"/proc/{pid}/fd/{new}")
            if link is None:
                link = _readlink(f"/proc/{pid}/fd/{old}")
            attrs[semconv.DUP_OLD_FD] = old
            attrs[semconv.DUP_NEW_FD] = new
            attrs[semconv.DUP_OLD_FD_TYPE] = fd_type(link)
            if attrs[semconv.DUP_OLD_FD_TYPE] == "socket":
                # the connection behind the redirected stdio (reverse shells): both endpoints
                found = socket_endpoints(pid, new if ret >= 0 else old)
                if found is not None:
                    transport, local, remote = found
                    attrs[semconv.NETWORK_TRANSPORT] = transport
                    attrs[semconv.NETWORK_TYPE] = local.network_type
                    attrs[semconv.NETWORK_LOCAL_ADDRESS] = local.address
                    attrs[semconv.NETWORK_LOCAL_PORT] = local.port
                    if remote is not None:
                        attrs[semconv.NETWORK_PEER_ADDRESS] = remote.address
                        attrs[semconv.NETWORK_PEER_PORT] = remote.port
            syscall = DUP_SYSCALLS[r.which] if r.which < len(DUP_SYSCALLS) else "dup2"
            ev = ctx.make_event(r.h, semconv.EV_DUP, syscall, attrs)
            ev.body = (f"{syscall} {old} ({attrs[semconv.DUP_OLD_FD_TYPE]}) -> {new}"
                       + _failed(ret))
            return ev
        return None


def create() -> PrivilegeProbe:
    """A new probe instance (one per sensor)."""
    return PrivilegeProbe()
