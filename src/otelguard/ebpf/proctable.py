"""ProcessTable: what otelguard knows about every live process, so events carry full context.

Seeded from ``/proc`` at start, then kept by the process probe's fork/exec/exit/chdir records;
a pid seen for the first time is read from ``/proc`` once ("first sight"). Bounded: least
recently used entries are evicted beyond ``max_entries``; exited processes stay in a small
graveyard so late records of a dying process still resolve. Costs: a dict hit per event; an exec
reads five small ``/proc`` files of the new image (caps, exe link, tty, login uid).

Trace roots (docs/architecture.md#spans): every process has a ``root_pid``/``root_start_ns`` that
names the trace it belongs to. A process starts its own trace (is its own root) when, at its
creation (fork) or first exec without a seen fork:

* its parent is unknown, pid 1, or a known launcher (``ROOT_BREAKERS``: init systems, container
  shims and runtimes, sshd, cron, kubelet...), or
* its parent had been running longer than ``long_lived_s`` (default 30 s) when it was created:
  work spawned by servers, daemons and interactive shells starts new, short traces.

Otherwise it joins its parent's trace. So ``bash -c 'curl | sh'`` run by a container entrypoint
is one trace, and each command a long-lived shell or server runs is its own trace.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Optional

from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.events import ProcessAttrs
from otelguard.ebpf.redact import command_line, redact_args

ANCESTOR_DEPTH = 16
ROOT_BREAKERS = frozenset({
    "systemd", "init", "containerd-shim", "containerd-shim-runc-v2", "containerd", "dockerd",
    "runc", "crun", "conmon", "tini", "dumb-init", "sshd", "kubelet", "cron", "crond",
    "supervisord", "s6-supervise", "runsv",
})

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NO_LOGIN_UID = 4294967295


def cap_names(mask: int) -> list[str]:
    """``CapEff`` bit mask to ``CAP_*`` names (unknown bits as ``CAP_<n>``)."""
    out = []
    bit = 0
    while mask >> bit:
        if (mask >> bit) & 1:
            out.append(CAP_NAMES[bit] if bit < len(CAP_NAMES) else f"CAP_{bit}")
        bit += 1
    return out


@dataclass(slots=True)
class ProcessInfo:
    """One process as the table knows it. ``args`` and ``command_line`` are already redacted."""

    pid: int
    ppid: int = 0
    comm: str = ""
    exe_path: str = ""
    args: list[str] = field(default_factory=list)
    command_line: str = ""
    uid: int = -1
    gid: int = -1
    real_uid: int = -1
    login_uid: int = -1
    cwd: str = ""
    tty: int = 0
    start_ns: int = 0  # wall clock
    caps: list[str] = field(default_factory=list)
    exe_deleted: bool = False
    exe_from_memfd: bool = False
    exe_upper_layer: bool = False
    root_pid: int = 0
    root_start_ns: int = 0
    exit_ns: int = 0
    exit_code: Optional[int] = None
    exec_seen: bool = False
    user_name: Optional[str] = None  # resolved lazily, reset when the uid changes
    # the event attributes derived from this entry, built by the sensor's EventContext and
    # shared by every event of the process until it changes (exec, chdir) or ages out
    attrs_cache: Optional[ProcessAttrs] = None
    attrs_cache_at: float = 0.0

    @property
    def exe_name(self) -> str:
        if self.exe_path:
            return self.exe_path.rsplit("/", 1)[-1]
        return self.comm


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "backslashreplace")
    except OSError:
        return None


def _readlink(path: str) -> Optional[str]:
    try:
        return os.readlink(path)
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ProcSnapshot:
    """What ``/proc/<pid>`` says right now (None fields: unreadable or gone)."""

    ppid: Optional[int] = None
    comm: Optional[str] = None
    uid: Optional[int] = None
    real_uid: Optional[int] = None
    gid: Optional[int] = None
    caps: Optional[list[str]] = None
    exe_link: Optional[str] = None
    args: Optional[list[str]] = None
    cwd: Optional[str] = None
    tty: Optional[int] = None
    start_ticks: Optional[int] = None
    login_uid: Optional[int] = None


def read_proc(pid: int, with_args: bool = True, with_cwd: bool = True) -> Optional[ProcSnapshot]:
    """Read the ``/proc/<pid>`` files the table uses; None when the process is gone."""
    status = _read(f"/proc/{pid}/status")
    if status is None:
        return None
    fields: dict[str, str] = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    ppid = int(fields["PPid"]) if "PPid" in fields else None
    uids = fields.get("Uid", "").split()
    gids = fields.get("Gid", "").split()
    caps = cap_names(int(fields["CapEff"], 16)) if "CapEff" in fields else None
    tty = start = None
    st = _read(f"/proc/{pid}/stat")
    if st:
        rest = st[st.rfind(")") + 2:].split()
        # fields after "pid (comm) ": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) ... starttime(22)
        if len(rest) > 19:
            tty = int(rest[4])
            start = int(rest[19])
    args = None
    if with_args:
        raw = _read(f"/proc/{pid}/cmdline")
        if raw is not None:
            args = [a for a in raw.split("\x00")][:-1] if raw.endswith("\x00") else raw.split("\x00")
    login = _read(f"/proc/{pid}/loginuid")
    return ProcSnapshot(
        ppid=ppid, comm=fields.get("Name"),
        uid=int(uids[1]) if len(uids) > 1 else None,
        real_uid=int(uids[0]) if uids else None,
        gid=int(gids[1]) if len(gids) > 1 else None,
        caps=caps, exe_link=_readlink(f"/proc/{pid}/exe"), args=args,
        cwd=_readlink(f"/proc/{pid}/cwd") if with_cwd else None,
        tty=tty, start_ticks=start,
        login_uid=int(login) if login and login.strip().isdigit() else None,
    )


def _is_self_exe(path: str, pid: int) -> bool:
    """``path`` names the caller's own executable through procfs (``/proc/self/exe``,
    ``/proc/thread-self/exe``, ``/proc/<pid>/exe`` of the caller)."""
    return path in ("/proc/self/exe", "/proc/thread-self/exe", f"/proc/{pid}/exe")


def resolve_in_root(pids: tuple[int, ...], path: str, max_links: int = 40) -> str:
    """``path`` with its symlinks resolved in the root of the first of ``pids`` whose
    ``/proc/<pid>/root`` is readable, as the exe link names a file (else ``path`` unchanged).
    For a process gone before its exe link was read: ``/bin/sh`` would otherwise name what a
    longer run names ``/usr/bin/dash``, and behaviour profiles would see two executables.
    Cost: one readlink per path component, only for such processes."""
    if not path.startswith("/"):
        return path
    for pid in pids:
        root = f"/proc/{pid}/root"
        if pid > 0 and os.path.isdir(root):
            break
    else:
        return path
    todo = [p for p in path.split("/") if p][::-1]
    out: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == ".":
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        try:
            target = os.readlink(root + "/" + "/".join([*out, part]))
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a link
                return path
            out.append(part)
            continue
        links += 1
        if links > max_links:
            return path
        if target.startswith("/"):
            out = []
        todo.extend([p for p in target.split("/") if p][::-1])
    return "/" + "/".join(out)


def _exe_flags(link: Optional[str]) -> tuple[str, bool, bool]:
    """(path, deleted, from_memfd) from a ``/proc/<pid>/exe`` link."""
    if not link:
        return "", False, False
    deleted = link.endswith(" (deleted)")
    path = link[: -len(" (deleted)")] if deleted else link
    return path, deleted, path.startswith("/memfd:")


class ProcessTable:
    """Live processes by pid (see the module docstring for bounds, costs and trace roots)."""

    def __init__(self, clock: Optional[KernelClock] = None, max_entries: int = 32768,
                 graveyard: int = 1024, long_lived_s: float = 30.0) -> None:
        self.clock = clock or KernelClock()
        self.max_entries = max_entries
        self.graveyard_size = graveyard
        self.long_lived_ns = int(long_lived_s * 1e9)
        self._procs: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._dead: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._passwd: dict[tuple[int, int], dict[int, str]] = {}
        self._upper: dict[tuple[int, int], Optional[str]] = {}
        self.first_sight_reads = 0

    def __len__(self) -> int:
        return len(self._procs)

    def __iter__(self) -> Iterator[ProcessInfo]:
        return iter(list(self._procs.values()))

    # --- filling -------------------------------------------------------------------------------
    def seed(self) -> int:
        """Load every process in ``/proc`` (parents first so roots are assigned top-down)."""
        snaps: dict[int, ProcSnapshot] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                snap = read_proc(int(name))
                if snap is not None:
                    snaps[int(name)] = snap
        for pid in sorted(snaps, key=lambda p: snaps[p].start_ticks or 0):
            self._from_snapshot(pid, snaps[pid])
        return len(snaps)

    def _put(self, info: ProcessInfo) -> ProcessInfo:
        self._procs[info.pid] = info
        self._procs.move_to_end(info.pid)
        while len(self._procs) > self.max_entries:
            self._procs.popitem(last=False)
        return info

    def _from_snapshot(self, pid: int, snap: ProcSnapshot) -> ProcessInfo:
        path, deleted, memfd = _exe_flags(snap.exe_link)
        args = redact_args(snap.args) if snap.args else []
        info = ProcessInfo(
            pid=pid, ppid=snap.ppid or 0, comm=snap.comm or "", exe_path=path, args=args,
            command_line=" ".join(args), uid=_or(snap.uid), gid=_or(snap.gid),
            real_uid=_or(snap.real_uid), login_uid=_login(snap.login_uid), cwd=snap.cwd or "",
            tty=snap.tty or 0, caps=snap.caps or [], exe_deleted=deleted, exe_from_memfd=memfd,
            start_ns=self.clock.boottime_ticks_to_wall_ns(snap.start_ticks)
            if snap.start_ticks is not None else 0,
        )
        self._assign_root(info)
        return self._put(info)

    def _assign_root(self, info: ProcessInfo) -> None:
        parent = self._procs.get(info.ppid) or self._dead.get(info.ppid)
        if (
            parent is None or info.ppid <= 1 or parent.exe_name in ROOT_BREAKERS
            or parent.root_pid == 0
            or (info.start_ns and parent.start_ns
                and info.start_ns - parent.start_ns > self.long_lived_ns)
        ):
            info.root_pid, info.root_start_ns = info.pid, info.start_ns
        else:
            info.root_pid, info.root_start_ns = parent.root_pid, parent.root_start_ns

    def get(self, pid: int, load: bool = True) -> Optional[ProcessInfo]:
        """The entry for ``pid``; first sight reads ``/proc`` (None if the process is gone)."""
        info = self._procs.get(pid)
        if info is not None:
            return info
        dead = self._dead.get(pid)
        if dead is not None or not load:
            return dead
        snap = read_proc(pid)
        self.first_sight_reads += 1
        if snap is None:
            return None
        return self._from_snapshot(pid, snap)

    # --- lifecycle (called by the process probe's decoder) ---------------------------------------
    def on_fork(self, parent_pid: int, child_pid: int, wall_ns: int) -> ProcessInfo:
        parent = self.get(parent_pid)
        self._dead.pop(child_pid, None)
        child = ProcessInfo(pid=child_pid, ppid=parent_pid, start_ns=wall_ns)
        if parent is not None:
            child.comm, child.exe_path = parent.comm, parent.exe_path
            child.args, child.command_line = parent.args, parent.command_line
            child.uid, child.gid, child.real_uid = parent.uid, parent.gid, parent.real_uid
            child.login_uid, child.cwd, child.tty = parent.login_uid, parent.cwd, parent.tty
            child.caps = parent.caps
            child.exe_deleted, child.exe_from_memfd = parent.exe_deleted, parent.exe_from_memfd
            child.exe_upper_layer = parent.exe_upper_layer
        self._assign_root(child)
        return self._put(child)

    def on_exec(self, pid: int, path: str, argv: list[str], uid: int, gid: int, wall_ns: int,
                comm: str) -> ProcessInfo:
        """A successful exec: new image, same pid. ``path`` is already absolute."""
        info = self._procs.get(pid)
        if info is None:
            snap_first = read_proc(pid, with_args=False)
            self.first_sight_reads += 1
            if snap_first is not None:
                info = self._from_snapshot(pid, snap_first)
            else:
                info = ProcessInfo(pid=pid, start_ns=wall_ns)
                self._assign_root(info)
                self._put(info)
        # execve("/proc/self/exe"): the new image is the old one (busybox runs its applets this
        # way); the path must not stay a procfs alias when /proc is gone before the read below
        same_image = _is_self_exe(path, pid) and bool(info.exe_path)
        if same_image:
            path = info.exe_path
        info.exe_path, info.comm = path, comm
        if not same_image:
            # flags of the old image (copied at fork) must not describe the new one when /proc
            # is gone before the read below; an fd exec (execveat AT_EMPTY_PATH, path unknown)
            # whose comm the kernel took from a memfd's name ("memfd:<name>") is fileless too
            info.exe_deleted = info.exe_upper_layer = False
            info.exe_from_memfd = not path and comm.startswith("memfd:")
        info.args = redact_args(argv)
        info.command_line = " ".join(info.args)
        info.uid, info.gid, info.real_uid = uid, gid, uid
        info.user_name = None
        info.attrs_cache = None
        info.exec_seen = True
        snap = read_proc(pid, with_args=False, with_cwd=False)
        link_path = ""
        if snap is not None:
            if snap.exe_link:  # an exiting process still has status but no exe link
                link_path, info.exe_deleted, info.exe_from_memfd = _exe_flags(snap.exe_link)
            if link_path and not info.exe_from_memfd:
                info.exe_path = link_path  # symlinks resolved by the kernel
            elif info.exe_from_memfd:
                info.exe_path = link_path
            info.caps = snap.caps if snap.caps is not None else info.caps
            info.tty = snap.tty if snap.tty is not None else info.tty
            info.login_uid = _login(snap.login_uid)
            if snap.real_uid is not None:
                info.real_uid = snap.real_uid
            if snap.uid is not None:  # effective ids (the record header has the real ones)
                info.uid = snap.uid
            if snap.gid is not None:
                info.gid = snap.gid
        if not link_path and not same_image and not info.exe_from_memfd:
            # gone before its exe link was read: name the file as the link would have
            info.exe_path = resolve_in_root((pid, info.ppid), info.exe_path)
        if not same_image:
            # the parent shares the container's root: it answers for a process already gone
            # (a dropped binary that ran for a moment is the case that matters)
            info.exe_upper_layer = self._on_upper_layer((pid, info.ppid), info.exe_path)
        self._procs.move_to_end(pid)
        return info

    def on_exit(self, pid: int, wall_ns: int, code: Optional[int]) -> Optional[ProcessInfo]:
        info = self._procs.pop(pid, None)
        if info is None:
            return None
        info.exit_ns, info.exit_code = wall_ns, code
        self._dead[pid] = info
        while len(self._dead) > self.graveyard_size:
            self._dead.popitem(last=False)
        return info

    def on_chdir(self, pid: int, path: str) -> None:
        info = self.get(pid)
        if info is not None:
            info.cwd = path
            info.attrs_cache = None

    # --- queries -------------------------------------------------------------------------------
    def ancestors(self, info: ProcessInfo, depth: int = ANCESTOR_DEPTH) -> list[ProcessInfo]:
        """Parent, grandparent, ... (nearest first), bounded by ``depth`` and loop-safe."""
        out: list[ProcessInfo] = []
        seen = {info.pid}
        ppid = info.ppid
        while ppid > 0 and len(out) < depth and ppid not in seen:
            parent = self.get(ppid, load=True)
            if parent is None:
                break
            out.append(parent)
            seen.add(ppid)
            ppid = parent.ppid
        return out

    def user_name(self, pid: int, uid: int) -> str:
        """The name of ``uid`` in the process's own root (``/proc/<pid>/root/etc/passwd``),
        cached per root directory; empty when unknown."""
        if uid < 0:
            return ""
        root = f"/proc/{pid}/root"
        try:
            st = os.stat(root)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = (0, 0)
            root = ""
        names = self._passwd.get(key)
        if names is None:
            names = {}
            text = _read(f"{root}/etc/passwd")
            for line in (text or "").splitlines():
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    names.setdefault(int(parts[2]), parts[0])
            if len(self._passwd) > 256:
                self._passwd.clear()
            self._passwd[key] = names
        return names.get(uid, "")

    def _on_upper_layer(self, pids: tuple[int, ...], exe_path: str) -> bool:
        """Best effort: the root of the first readable of ``pids`` is overlayfs and the
        executable exists in its upper dir (written after the container started). False when
        unknown."""
        if not exe_path.startswith("/"):
            return False
        for pid in pids:
            try:
                st = os.stat(f"/proc/{pid}/root")
                key = (st.st_dev, st.st_ino)
                break
            except OSError:
                continue
        else:
            return False
        if key not in self._upper:
            upper: Optional[str] = None
            text = _read(f"/proc/{pid}/mountinfo") or ""
            for line in text.splitlines():
                left, _, right = line.partition(" - ")
                lf, rf = left.split(), right.split()
                if len(lf) > 4 and lf[4] == "/" and rf and rf[0] == "overlay":
                    for opt in (rf[2] if len(rf) > 2 else "").split(","):
                        if opt.startswith("upperdir="):
                            upper = opt[len("upperdir="):]
            if len(self._upper) > 256:
                self._upper.clear()
            self._upper[key] = upper
        upper_dir = self._upper[key]
        if not upper_dir:
            return False
        # upperdir is a path of the host's mount namespace: in the agent's pod (hostPID, its own
        # root) it is reached through the root of the agent's parent, containerd's shim, a host
        # process; on the host itself that root is "/" and the plain path is the same file
        for root in (f"/proc/{os.getppid()}/root", ""):
            try:
                return stat.S_ISREG(os.lstat(root + upper_dir + exe_path).st_mode)
            except FileNotFoundError:
                return False
            except OSError:
                continue  # the parent's root is not readable (not ours to ptrace): plain path
        return False


def _or(v: Optional[int]) -> int:
    return -1 if v is None else v


def _login(v: Optional[int]) -> int:
    return -1 if v is None or v == _NO_LOGIN_UID else v


__all__ = ["ProcessTable", "ProcessInfo", "read_proc", "cap_names", "command_line"]
