"""The sensor's decode context: time, identity, process attributes and path resolution per record.

:class:`EventContext` is what every probe's ``decode`` gets (probe.DecodeContext) and the
process probe's ProcessLifecycle; the sensor's poll thread owns it (sensor.py). It builds a
process's attributes once per process version (:class:`~otelguard.ebpf.events.ProcessAttrs`)
and, when the native lane runs (lane.py), tells it the cgroups it resolves and shares its
record sequence counter with it.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import time
from typing import Callable, Optional

from otelguard import semconv
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock, iso8601
from otelguard.ebpf.events import UNRESOLVED_POD_UID, AttrValue, Event, ProcessAttrs
from otelguard.ebpf.lane import FastLane
from otelguard.ebpf.openfilter import normalize
from otelguard.ebpf.probe import Header, ProbeConfig, c_string
from otelguard.ebpf.proctable import ANCESTOR_DEPTH, ProcessInfo, ProcessTable

AT_FDCWD = -100
ATTRS_TTL_NS = 2_000_000_000  # a process's attributes are rebuilt after this (ancestors change)


class EventContext:
    """The DecodeContext the probes get: time, identity, process attributes, path resolution.

    Also the ProcessLifecycle the process probe uses to keep the table. Used only from the poll
    thread. Cost per event: a process-table hit, a cgroup-cache hit and ~25 dict inserts.
    """

    def __init__(self, table: ProcessTable, cgroups: CgroupResolver, clock: KernelClock,
                 probe_config: ProbeConfig) -> None:
        self.table = table
        self.cgroups = cgroups
        self.clock = clock
        self.probe_config = probe_config
        self.uid_prefix = secrets.token_hex(6)
        self._comms: dict[bytes, str] = {}  # raw comm -> text; bounded in make_event
        # record sequence numbers (log.record.uid); the native lane's counter when one runs
        self.next_seq: Callable[[], int] = itertools.count(1).__next__
        self.lane: Optional[FastLane] = None  # told the cgroups resolved, when it runs

    # --- DecodeContext -------------------------------------------------------------------------
    def make_event(self, hdr: Header, name: str, syscall: str,
                   attrs: dict[str, AttrValue]) -> Event:
        pid = hdr.pid
        wall = self.clock.to_wall_ns(hdr.ktime_ns)
        cg_path, ident = self.cgroups.resolve(hdr.cgroup_id, pid)
        pod_uid = ident.pod_uid
        if not cg_path and self.cgroups.root is not None:
            # the cgroup is gone and was never seen (a container shorter than the decode lag):
            # not the host, which would make `not container` true by default
            pod_uid = UNRESOLVED_POD_UID
        if self.lane is not None and cg_path:  # unresolved: asked again per record, not noted
            self.lane.note_cgroup(hdr.cgroup_id, cg_path, ident.container_id, ident.pod_uid)
        info = self.table.get(pid)
        ret = hdr.ret
        raw_comm = hdr.comm  # a ctypes char array field reads as bytes cut at the first NUL
        comm = self._comms.get(raw_comm)
        if comm is None:
            if len(self._comms) >= 4096:
                self._comms.clear()
            comm = self._comms[raw_comm] = c_string(raw_comm)
        a = attrs  # the event's own attributes; the process part is shared (see events.py)
        if info is None:
            ev = Event(name, wall, pid, hdr.tid, syscall, ret, ident.container_id,
                       pod_uid, cg_path, attrs=a, body=f"{syscall} by {comm}")
            a.setdefault(semconv.PROCESS_PID, pid)
            a.setdefault(semconv.PROCESS_EXECUTABLE_NAME, comm)
            a.setdefault(semconv.PROCESS_USER_ID, hdr.uid)
            a.setdefault(semconv.PROCESS_GROUP_ID, hdr.gid)
        else:
            start = info.start_ns
            ev = Event(name, wall, pid, hdr.tid, syscall, ret, ident.container_id,
                       pod_uid, cg_path, start, info.root_pid, info.root_start_ns,
                       a, f"{syscall} by {info.exe_name}", self._process_attrs(info))
            if start:
                a[semconv.PROCESS_DURATION_NS] = wall - start if wall > start else 0
        # none of these keys is in the process part, so setdefault on the event's own is exact
        a.setdefault(semconv.PROCESS_COMM, comm)  # Falco's proc.name
        a.setdefault(semconv.SYSCALL_NAME, syscall)
        a.setdefault(semconv.SYSCALL_RET, ret)
        if ret < 0:
            a.setdefault(semconv.ERROR_TYPE, errno.errorcode.get(-ret, str(-ret)))
        a[semconv.LOG_RECORD_UID] = f"{self.uid_prefix}-{self.next_seq():x}"
        if cg_path:
            a.setdefault(semconv.PROCESS_LINUX_CGROUP, cg_path)
        a.setdefault(semconv.PROCESS_REAL_USER_ID, hdr.uid)
        return ev

    def _process_attrs(self, info: ProcessInfo) -> ProcessAttrs:
        """The process's attributes as one shared, immutable object, rebuilt after exec/chdir or
        when older than ``ATTRS_TTL_NS`` (ancestors may have exec'd since). Every event of the
        process version points at the same object, so the exporter encodes it once."""
        now = time.monotonic_ns()
        cached = info.attrs_cache
        if cached is not None and now - cached.built_ns < ATTRS_TTL_NS:
            return cached
        a: dict[str, AttrValue] = {semconv.PROCESS_PID: info.pid,
                                   semconv.PROCESS_PARENT_PID: info.ppid,
                                   semconv.PROCESS_EXECUTABLE_NAME: info.exe_name}
        if info.exe_path:
            a[semconv.PROCESS_EXECUTABLE_PATH] = info.exe_path
        if info.args:
            a[semconv.PROCESS_COMMAND_LINE] = info.command_line
            a[semconv.PROCESS_COMMAND_ARGS] = list(info.args)
            a[semconv.PROCESS_ARGS_COUNT] = len(info.args)
        if info.user_name is None or info.group_name is None:  # one root lookup for both
            user, group = self.table.id_names(info.pid, info.uid, info.gid)
            if info.user_name is None:
                info.user_name = user
            if info.group_name is None:
                info.group_name = group
        if info.uid >= 0:
            a[semconv.PROCESS_USER_ID] = info.uid
            if info.user_name:
                a[semconv.PROCESS_USER_NAME] = info.user_name
        if info.gid >= 0:
            a[semconv.PROCESS_GROUP_ID] = info.gid
            if info.group_name:
                a[semconv.PROCESS_GROUP_NAME] = info.group_name
        if info.vpid:
            a[semconv.PROCESS_VPID] = info.vpid
        if info.vpgid:
            a[semconv.PROCESS_VPGID] = info.vpgid
        if info.cwd:
            a[semconv.PROCESS_WORKING_DIRECTORY] = info.cwd
        if info.start_ns:
            a[semconv.PROCESS_CREATION_TIME] = iso8601(info.start_ns)
        a[semconv.PROCESS_TTY] = info.tty
        a[semconv.PROCESS_INTERACTIVE] = info.tty != 0
        if info.login_uid >= 0:
            a[semconv.PROCESS_LOGIN_UID] = info.login_uid
        if info.caps:
            a[semconv.PROCESS_CAP_EFFECTIVE] = list(info.caps)
        if info.cap_permitted is not None:  # an empty set too: "holds none" is a fact rules test
            a[semconv.PROCESS_CAP_PERMITTED] = list(info.cap_permitted)
        if info.env:
            a[semconv.PROCESS_ENV] = list(info.env)
        a[semconv.PROCESS_EXE_FROM_MEMFD] = info.exe_from_memfd
        a[semconv.PROCESS_EXE_DELETED] = info.exe_deleted
        a[semconv.PROCESS_EXE_UPPER_LAYER] = info.exe_upper_layer
        ancestors, pids = self._ancestors(info, now)
        if ancestors:
            parent = ancestors[0]
            a[semconv.PROCESS_PARENT_EXECUTABLE_NAME] = parent.exe_name
            if parent.exe_path:
                a[semconv.PROCESS_PARENT_EXECUTABLE_PATH] = parent.exe_path
            if parent.command_line:
                a[semconv.PROCESS_PARENT_COMMAND_LINE] = parent.command_line
            # comms (the names exec'ed: an applet link's, not busybox), as Falco's proc.aname
            a[semconv.PROCESS_ANCESTORS] = [p.comm or p.exe_name for p in ancestors]
            a[semconv.PROCESS_ANCESTOR_PIDS] = list(pids)
        if info.sid:
            a[semconv.PROCESS_SESSION_LEADER_PID] = info.sid
            leader = session_leader(info, ancestors)
            if leader is not None:
                a[semconv.PROCESS_SID_EXE_NAME] = leader.comm or leader.exe_name
        process = ProcessAttrs(a, now)
        info.attrs_cache, info.attrs_cache_at = process, now / 1e9
        return process

    def _ancestors(self, info: ProcessInfo, now: int) -> tuple[list[ProcessInfo], list[int]]:
        """``table.ancestors(info)`` and their pids, kept on the process for the attributes'
        lifetime: a child's chain is its parent plus the parent's chain (walked once per
        lifetime), so a fork or exec storm costs O(1) per child, not a walk of up to 16
        table lookups. The entries are the table's live objects, so an ancestor's exec since
        shows; only which processes form the chain is as old as the lifetime."""
        c = info.chain
        if c is not None and now - c[2] < ATTRS_TTL_NS:
            return c[0], c[1]
        parent = self.table.get(info.ppid, load=False) if info.ppid > 0 else None
        if parent is None or parent.pid == info.pid:
            out = self.table.ancestors(info)  # may read an unknown parent from /proc
            pids = [p.pid for p in out]
        else:
            pc = parent.chain
            if pc is None or now - pc[2] >= ATTRS_TTL_NS:
                walked = self.table.ancestors(parent)
                pc = parent.chain = (walked, [p.pid for p in walked], now)
            rest, rest_pids = pc[0], pc[1]
            if info.pid in rest_pids:  # a pid taken again inside the chain: stop before it
                cut = rest_pids.index(info.pid)
                rest, rest_pids = rest[:cut], rest_pids[:cut]
            out = [parent, *rest[:ANCESTOR_DEPTH - 1]]
            pids = [parent.pid, *rest_pids[:ANCESTOR_DEPTH - 1]]
        info.chain = (out, pids, now)
        return out, pids

    def resolve_path(self, pid: int, dirfd: int, path: str) -> str:
        if path.startswith("/"):
            return normalize(path)
        if dirfd == AT_FDCWD or dirfd < 0:
            info = self.table.get(pid)
            base = info.cwd if info is not None and info.cwd else _readlink(f"/proc/{pid}/cwd")
        else:
            base = _readlink(f"/proc/{pid}/fd/{dirfd}")
        if not base:
            return path  # unknown base (process gone): keep it relative rather than guess
        if not path:
            return normalize(base)
        return normalize(f"{base}/{path}")

    # --- ProcessLifecycle ----------------------------------------------------------------------
    def on_exec(self, hdr: Header, path: str, argv: list[str], exec_fd: int = -1,
                env: Optional[list[str]] = None, argv_unread: bool = False) -> None:
        self.table.on_exec(int(hdr.pid), path, argv, int(hdr.uid), int(hdr.gid),
                           self.clock.to_wall_ns(int(hdr.ktime_ns)), c_string(hdr.comm),
                           exec_fd, env or [], argv_unread)

    def on_memfd(self, hdr: Header, fd: int, name: str, cloexec: bool) -> None:
        self.table.on_memfd(int(hdr.pid), fd, name, cloexec)

    def on_fork(self, hdr: Header, parent_pid: int, child_pid: int) -> None:
        self.table.on_fork(parent_pid, child_pid, self.clock.to_wall_ns(int(hdr.ktime_ns)))

    def on_exit(self, hdr: Header, code: Optional[int]) -> None:
        self.table.on_exit(int(hdr.pid), self.clock.to_wall_ns(int(hdr.ktime_ns)), code)

    def on_chdir(self, hdr: Header, fd: int, path: str) -> None:
        pid = int(hdr.pid)
        if fd >= 0:
            new = _readlink(f"/proc/{pid}/cwd")  # after fchdir the link is the new cwd
            if new:
                self.table.on_chdir(pid, new)
            return
        self.table.on_chdir(pid, self.resolve_path(pid, AT_FDCWD, path))


def session_leader(info: ProcessInfo, ancestors: list[ProcessInfo]) -> Optional[ProcessInfo]:
    """Falco's ``proc.sname`` process: the one whose pid is the session id, else the eldest
    ancestor in the same session (the leader itself may be outside the table or gone)."""
    chain = [info, *ancestors]
    for p in chain:
        if p.pid == info.sid:
            return p
    same = [p for p in chain if p.sid == info.sid]
    return same[-1] if same else None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
