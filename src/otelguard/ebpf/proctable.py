"""ProcessTable: what otelguard knows about every live process, so events carry full context.

Seeded from ``/proc`` at start, then kept by the process probe's fork/exec/exit/chdir records;
a pid seen for the first time is read from ``/proc`` once ("first sight"). Bounded: least
recently used entries are evicted beyond ``max_entries``; exited processes stay in a small
graveyard so late records of a dying process still resolve. Costs: a dict hit per event; an exec
reads five small ``/proc`` files of the new image (caps, exe link, tty, login uid); a fork
stats the parent's root (one ``stat``; a root not seen before also reads its ``mountinfo``).

Facts about an executable are decided from what the sensor saw up to the exec, so a payload
that exits before its record is decoded is still judged (docs/architecture.md#kernel-facts):

* **from a memfd**: the process (or the parent it was forked from) created a memfd with that
  fd number (the privilege probe's ``memfd_create`` record, ``on_memfd``) and the exec went
  through that fd: ``execveat(fd, "", AT_EMPTY_PATH)`` (fexecve) or ``/proc/self/fd/N``,
  ``/dev/fd/N``. The ``/proc/<pid>/exe`` link wins while it is readable.
* **in the overlay upper layer**: the root the process had at its fork (stat of the forking
  parent's ``/proc/<pid>/root``, kept per process) names the overlay mount whose upper
  directory is learnt from the mount table of a process with that root, once per root; the
  executable is upper-layer when ``upperdir + path`` exists.

pid namespaces, sessions, process groups (``NSpid``/``NSpgid`` of ``/proc/<pid>/status``,
``session``/``pgrp`` of ``stat``) and the permitted capabilities (``CapPrm``) are read with
the files the exec already reads; a forked child keeps its parent's until its own exec.

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

import os
import stat
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.events import ProcessAttrs
from otelguard.ebpf.procfs import (
    CAP_NAMES, NO_LOGIN_UID, ProcSnapshot, cap_names, exe_flags, is_self_exe, read_proc, read_text,
    resolve_under,
)
from otelguard.ebpf.redact import command_line, redact_args, redact_env

ANCESTOR_DEPTH = 16
ROOT_BREAKERS = frozenset({
    "systemd", "init", "containerd-shim", "containerd-shim-runc-v2", "containerd", "dockerd",
    "runc", "crun", "conmon", "tini", "dumb-init", "sshd", "kubelet", "cron", "crond",
    "supervisord", "s6-supervise", "runsv",
})


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
    cap_permitted: Optional[list[str]] = None  # CapPrm; None = unknown
    vpid: int = 0  # pid in the process's own pid namespace (0 = unknown)
    vpgid: int = 0  # process group id in that namespace (0 = unknown)
    sid: int = 0  # session id (host pid namespace; 0 = unknown)
    # allowlisted environment variables as NAME=VALUE, redacted: from the exec's envp (process
    # probe), inherited at fork; empty for a process older than the agent until it execs
    env: list[str] = field(default_factory=list)
    # memfds created by this process or inherited at fork: fd -> (memfd name, close-on-exec)
    memfds: dict[int, tuple[str, bool]] = field(default_factory=dict)
    root_key: Optional[tuple[int, int]] = None  # (st_dev, st_ino) of its root, seen at fork
    gone: bool = False  # /proc had nothing of it at its exec's decode: its root is not asked
    exe_deleted: bool = False
    exe_from_memfd: bool = False
    exe_upper_layer: bool = False
    root_pid: int = 0
    root_start_ns: int = 0
    exit_ns: int = 0
    exit_code: Optional[int] = None
    exec_seen: bool = False
    user_name: Optional[str] = None  # resolved lazily, reset when the uid changes
    group_name: Optional[str] = None  # resolved lazily, reset when the gid changes
    # the event attributes derived from this entry, built by the sensor's EventContext and
    # shared by every event of the process until it changes (exec, chdir) or ages out
    attrs_cache: Optional[ProcessAttrs] = None
    attrs_cache_at: float = 0.0
    # (ancestors, their pids, CLOCK_MONOTONIC ns when found): a child's chain is its parent
    # plus this while it is younger than the attributes' lifetime (context.py)
    chain: Optional[tuple[list["ProcessInfo"], list[int], int]] = None

    @property
    def exe_name(self) -> str:
        if self.exe_path:
            return self.exe_path.rsplit("/", 1)[-1]
        return self.comm


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
        self._passwd: dict[tuple[int, int, str], dict[int, str]] = {}
        self._upper: dict[tuple[int, int], Optional[str]] = {}
        # root (st_dev, st_ino) -> a pid last seen with that root: it answers for a process
        # and parent both gone (checked again before use; any holder of that root will do)
        self._root_holder: dict[tuple[int, int], int] = {}
        self.first_sight_reads = 0
        # called with a pid whose entry was added, changed in a way its attributes show
        # (exec, fork, chdir, memfd), ended or evicted: the sensor's native lane forgets it
        self.changed: Optional[Callable[[int], None]] = None

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
        self._changed(info.pid)
        while len(self._procs) > self.max_entries:
            self._changed(self._procs.popitem(last=False)[0])
        return info

    def _changed(self, pid: int) -> None:
        if self.changed is not None:
            self.changed(pid)

    def _from_snapshot(self, pid: int, snap: ProcSnapshot) -> ProcessInfo:
        path, deleted, memfd = exe_flags(snap.exe_link)
        args = redact_args(snap.args) if snap.args else []
        info = ProcessInfo(
            pid=pid, ppid=snap.ppid or 0, comm=snap.comm or "", exe_path=path, args=args,
            command_line=" ".join(args), uid=_or(snap.uid), gid=_or(snap.gid),
            real_uid=_or(snap.real_uid), login_uid=_login(snap.login_uid), cwd=snap.cwd or "",
            tty=snap.tty or 0, caps=snap.caps or [], exe_deleted=deleted, exe_from_memfd=memfd,
            cap_permitted=snap.cap_permitted, vpid=snap.vpid or 0, vpgid=snap.vpgid or 0,
            sid=snap.sid or 0,
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
        # the parent's attributes do not change (its root_key is bookkeeping, not an
        # attribute): it is not reported changed, so the native lane keeps encoding its records
        # (a process that forks often, a shell or a server, would otherwise fall back to the
        # Python path after every fork); the child's pid is, by _put
        parent = self.get(parent_pid)
        self._dead.pop(child_pid, None)
        child = ProcessInfo(pid=child_pid, ppid=parent_pid, start_ns=wall_ns)
        if parent is not None:
            child.comm, child.exe_path = parent.comm, parent.exe_path
            child.args, child.command_line = parent.args, parent.command_line
            child.uid, child.gid, child.real_uid = parent.uid, parent.gid, parent.real_uid
            child.login_uid, child.cwd, child.tty = parent.login_uid, parent.cwd, parent.tty
            child.caps, child.cap_permitted = parent.caps, parent.cap_permitted
            child.exe_deleted, child.exe_from_memfd = parent.exe_deleted, parent.exe_from_memfd
            child.exe_upper_layer = parent.exe_upper_layer
            child.sid, child.memfds = parent.sid, dict(parent.memfds)
            child.env = parent.env
            # the root the child starts with: the parent's now (it may have pivoted since its
            # own fork); kept for an exec decoded after the child is gone
            child.root_key = parent.root_key = self._root_key(parent_pid) or parent.root_key
        self._assign_root(child)
        return self._put(child)

    def on_memfd(self, pid: int, fd: int, name: str, cloexec: bool) -> None:
        """A memfd_create that returned ``fd`` (exec through it is fileless, see above)."""
        info = self.get(pid)
        self._changed(pid)
        if info is not None and fd >= 0:
            if len(info.memfds) >= 64:
                info.memfds.clear()
            info.memfds[fd] = (name, cloexec)

    def on_exec(self, pid: int, path: str, argv: list[str], uid: int, gid: int, wall_ns: int,
                comm: str, exec_fd: int = -1, env: Optional[list[str]] = None,
                argv_unread: bool = False) -> ProcessInfo:
        """A successful exec: new image, same pid. ``path`` is already absolute; ``exec_fd`` is
        the descriptor the exec went through (fexecve, ``/proc/self/fd/N``), else -1; ``env``
        the allowlisted variables of the exec's envp (the new image's environment).
        ``argv_unread``: the kernel could not read part of argv (a page not resident at entry,
        docs/architecture.md#kernel-facts); the arguments come from ``/proc/<pid>/cmdline``
        while the process lives, else the part the kernel read stands."""
        self._changed(pid)
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
        same_image = is_self_exe(path, pid) and bool(info.exe_path)
        if same_image:
            path = info.exe_path
        info.exe_path, info.comm = path, comm
        if not same_image:
            # flags of the old image (copied at fork) must not describe the new one when /proc
            # is gone before the read below; an fd exec (execveat AT_EMPTY_PATH, path unknown)
            # whose comm the kernel took from a memfd's name ("memfd:<name>") is fileless too
            info.exe_deleted = info.exe_upper_layer = False
            memfd = info.memfds.get(exec_fd)
            info.exe_from_memfd = memfd is not None or (not path and comm.startswith("memfd:"))
            if memfd is not None:  # as the exe link reads: "/memfd:<name> (deleted)"
                info.exe_path, info.exe_deleted = f"/memfd:{memfd[0]}", True
        # close-on-exec descriptors are gone in the new image
        info.memfds = {fd: m for fd, m in info.memfds.items() if not m[1]}
        info.args = redact_args(argv)
        info.command_line = " ".join(info.args)
        info.env = redact_env(env) if env else []
        info.uid, info.gid, info.real_uid = uid, gid, uid
        info.user_name = info.group_name = None
        info.attrs_cache = None
        info.exec_seen = True
        snap = read_proc(pid, with_args=argv_unread, with_cwd=False)
        info.gone = snap is None  # a short exec (`sh -c true`) often is, in an exec flood
        link_path = ""
        if snap is not None:
            if argv_unread and snap.args:
                info.args = redact_args(snap.args)
                info.command_line = " ".join(info.args)
            if snap.exe_link:  # an exiting process still has status but no exe link
                link_path, info.exe_deleted, info.exe_from_memfd = exe_flags(snap.exe_link)
            if link_path and not info.exe_from_memfd:
                info.exe_path = link_path  # symlinks resolved by the kernel
            elif info.exe_from_memfd and link_path:  # not when the link is already gone
                info.exe_path = link_path
            info.caps = snap.caps if snap.caps is not None else info.caps
            if snap.cap_permitted is not None:
                info.cap_permitted = snap.cap_permitted
            info.vpid, info.vpgid = snap.vpid or info.vpid, snap.vpgid or info.vpgid
            info.sid = snap.sid or info.sid
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
            # no exe link: the process is gone (or a zombie), its root with it; its parent's
            # root, else the one it had at fork, held by a live process (asked only when the
            # parent is gone too)
            root_pid = info.ppid if info.ppid > 0 and os.path.isdir(f"/proc/{info.ppid}/root") \
                else self._holder_of(info.root_key)
            if root_pid and info.exe_path.startswith("/"):
                info.exe_path = resolve_under(f"/proc/{root_pid}/root", info.exe_path)
        if not same_image:
            # the parent shares the container's root: it answers for a process already gone
            # (a dropped binary that ran for a moment is the case that matters)
            info.exe_upper_layer = self._on_upper_layer(info, info.exe_path)
        self._procs.move_to_end(pid)
        return info

    def on_exit(self, pid: int, wall_ns: int, code: Optional[int]) -> Optional[ProcessInfo]:
        self._changed(pid)
        info = self._procs.pop(pid, None)
        if info is None:
            return None
        info.exit_ns, info.exit_code = wall_ns, code
        self._dead[pid] = info
        while len(self._dead) > self.graveyard_size:
            self._changed(self._dead.popitem(last=False)[0])
        return info

    def on_chdir(self, pid: int, path: str) -> None:
        info = self.get(pid)
        self._changed(pid)
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
        return self.id_names(pid, uid, -1)[0]

    def group_name(self, pid: int, gid: int) -> str:
        """The name of ``gid`` in the process's own root's ``/etc/group``, as ``user_name``."""
        return self.id_names(pid, -1, gid)[1]

    def id_names(self, pid: int, uid: int, gid: int) -> tuple[str, str]:
        """(user name of ``uid``, group name of ``gid``) as ``user_name`` and ``group_name``,
        the process's root found once for both (a negative id: no name asked)."""
        if uid < 0 and gid < 0:
            return "", ""
        root: Optional[str] = f"/proc/{pid}/root"
        info = self._procs.get(pid) or self._dead.get(pid)
        rk = None if info is not None and info.gone else self._root_key(pid)
        if rk is None:
            # gone before its record was decoded: the root it had at fork, read through a live
            # process that still has it (a container's user is not the host's user of that uid)
            rk = info.root_key if info is not None else None
            if rk is None:  # never seen at a fork: the agent's own root
                rk, root = (0, 0), ""
            else:
                root = None  # a holder is looked for only when the names are not cached
        out = []
        for num, database in ((uid, "passwd"), (gid, "group")):
            if num < 0:
                out.append("")
                continue
            key = (rk[0], rk[1], database)
            names = self._passwd.get(key)
            if names is None:
                if root is None:
                    holder = self._holder_of(rk)
                    root = f"/proc/{holder}/root" if holder else ""
                if not root and rk != (0, 0):
                    out.append("")  # a root nobody alive holds, not read before: unknown
                    continue
                text = read_text(f"{root}/etc/{database}")
                if text is None and root and not os.path.isdir(root):
                    # the process left between the stat and the read: nothing learnt about
                    # that root, so nothing cached (an empty map would stand for every later
                    # process there); a root that lacks the file (distroless) is cached empty
                    out.append("")
                    continue
                names = {}
                for line in (text or "").splitlines():
                    parts = line.split(":")
                    if len(parts) > 2 and parts[2].isdigit():
                        names.setdefault(int(parts[2]), parts[0])
                if len(self._passwd) > 256:
                    self._passwd.clear()
                self._passwd[key] = names
            out.append(names.get(num, ""))
        return out[0], out[1]

    def _root_key(self, pid: int) -> Optional[tuple[int, int]]:
        """(st_dev, st_ino) of ``/proc/<pid>/root``; a root not seen before has its overlay
        upper directory looked up in that process's mount table now, while it is alive."""
        try:
            st = os.stat(f"/proc/{pid}/root")
        except OSError:
            return None
        key = (st.st_dev, st.st_ino)
        if len(self._root_holder) > 256 and key not in self._root_holder:
            self._root_holder.clear()
        self._root_holder[key] = pid
        if key not in self._upper:
            upper: Optional[str] = None
            text = read_text(f"/proc/{pid}/mountinfo") or ""
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
        return key

    def _holder_of(self, key: Optional[tuple[int, int]]) -> int:
        """A live pid whose root is ``key`` (the last one seen with it, if it still has it),
        else 0: a short-lived process and its parent can both be gone before their execs are
        decoded while the container's (or the host's) root lives on in other processes."""
        if key is None:
            return 0
        pid = self._root_holder.get(key)
        if pid is None:
            return 0
        try:
            st = os.stat(f"/proc/{pid}/root")
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != key:
            del self._root_holder[key]
            return 0
        return pid

    def _on_upper_layer(self, info: ProcessInfo, exe_path: str) -> bool:
        """The process's root is overlayfs and the executable exists in its upper dir (written
        after the container started). The root is the live process's, else the one it had at
        its fork, else its parent's (a shell that ran a dropped binary for a moment). False
        when unknown."""
        if not exe_path.startswith("/"):
            return False
        key = (None if info.gone else self._root_key(info.pid)) or info.root_key \
            or self._root_key(info.ppid)
        upper_dir = self._upper.get(key) if key is not None else None
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
    return -1 if v is None or v == NO_LOGIN_UID else v


__all__ = ["ProcessTable", "ProcessInfo", "read_proc", "cap_names", "command_line", "CAP_NAMES"]
