"""Bounded per-process and per-container memory for rules that need more than one record.

Falco sees one event at a time plus the kernel's fd table; we see records. Two facts need
history, so the stage keeps them here and exposes them as fields (the otelguard
extensions in fields/extensions.py):

* ``proc.stdin_is_socket`` / ``proc.stdout_is_socket``: a ``otelguard.process.dup`` record put a
  socket on fd 0 (or 1/2) of (container, pid). Inherited across a fork record, checked against
  the parent pid as well (a child forked after the dup inherits the fds), forgotten on exit or
  after ``socket_window_seconds``. This is the reverse-shell sequence "socket dup'ed onto stdio,
  then a shell exec".
* the socket behind a dup'ed fd: ``socket``/``connect``/``accept``/``bind`` records carry the fd
  and its addresses; a later ``dup2``/``dup3`` of that fd (same container and pid) borrows them,
  so ``fd.type``, ``fd.sip``, ``fd.name`` ... of a dup record describe the socket, as in Falco.
* ``proc.aexe[N]`` / ``proc.aexepath[N]`` beyond the parent: the exe (first argument) and path
  each exec record gave (container, pid), and what an exec record says of its parent; a fork
  copies the parent's entry (the child runs its image until it execs), an exit drops it. The
  records name ancestors by pid (``otelguard.process.ancestor_pids``), so the Nth ancestor's exe
  is the one remembered for that pid, as Falco reads its thread table. Missing when unseen.
  Tracked only when a loaded rule uses them (``images``, set by the engine from the rules):
  reading an exec record's arguments costs ~10 us, paid by every exec otherwise.
* ``proc.exe_written_recently``: the exec'ed path was opened for writing (or created, renamed to,
  chmod'ed) in the same container within ``written_window_seconds``: "drop and execute".

Bounds: at most ``max_processes`` process entries, ``max_sockets`` sockets and
``max_containers`` x ``max_paths_per_container`` paths, least recently used evicted first; each eviction is counted in
``otelguard_dropped_total{stage="detection",reason="state_evicted"}`` so lost memory is visible.
Records must reach one processor per container (the Collector routes by resource), which is the
deployment the design already assumes. Cost: one dict lookup per record, plus one small update on
dup/fork/exit/write records.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

from otelguard import semconv as S
from otelguard import telemetry
from otelguard.config import Checks
from otelguard.processors.detection.fields import EventView, as_int

_WRITE_FLAGS = frozenset({"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"})
_SOCKET_EVENTS = frozenset({S.EV_NETWORK_SOCKET, S.EV_NETWORK_CONNECT, S.EV_NETWORK_ACCEPT,
                            S.EV_NETWORK_BIND})
_OBSERVED = frozenset({S.EV_DUP, S.EV_PROCESS_EXEC, S.EV_PROCESS_FORK, S.EV_PROCESS_EXIT, S.EV_FILE_OPEN,
                       S.EV_FILE_RENAME, S.EV_FILE_CHMOD, S.EV_FILE_LINK,
                       S.EV_NETWORK_CLOSE}) | _SOCKET_EVENTS
# fields whose values beyond the parent come from remembered exec'ed images
ANCESTOR_IMAGE_FIELDS = frozenset({"proc.aexe", "proc.aexepath"})
# what a dup record of a socket borrows from the record that created/connected that socket
SOCKET_KEYS = (S.NETWORK_TYPE, S.NETWORK_TRANSPORT, S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT,
               S.NETWORK_LOCAL_ADDRESS, S.NETWORK_LOCAL_PORT, S.SOCKET_FAMILY)


@dataclass(frozen=True)
class StateLimits:
    """Bounds of the stage's per-process / per-container memory; also the ``state:`` section of
    the falco_rules stage config (detection/config.py)."""

    socket_window_seconds: float = 600.0  # a socket dup'ed onto stdio is remembered this long
    # a path written in a container makes its exec "written recently" for this long
    written_window_seconds: float = 600.0
    max_processes: int = 65536  # process entries held (LRU, evictions counted)
    max_containers: int = 4096  # containers whose written paths are held
    max_paths_per_container: int = 1024  # written paths held per container
    max_sockets: int = 65536  # sockets held for dup'ed fds (fd.type, fd.sip of a dup record)

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "socket_window_seconds", "written_window_seconds")
        checks.at_least(self, 1, "max_processes", "max_containers", "max_paths_per_container",
                        "max_sockets")
        checks.done()


class DetectionState:
    """The stage's bounded memory; ``observe`` every record, then read through fields."""

    def __init__(self, limits: StateLimits = StateLimits()) -> None:
        self.limits = limits
        # (container, pid) -> [stdin_ns, stdout_ns] (0 = not a socket)
        self._stdio: OrderedDict[tuple[str, int], list[int]] = OrderedDict()
        # container -> path -> write time ns
        self._written: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()
        # (container, pid, fd) -> socket attributes from socket/connect/accept/bind records
        self._sockets: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()
        # (container, pid) -> (exe: first argument, exe path) from exec records, kept only
        # for the ANCESTOR_IMAGE_FIELDS in ``images`` (the engine sets it from its rules)
        self.images: frozenset[str] = frozenset()
        self._exes: OrderedDict[tuple[str, int], tuple[Optional[str], Optional[str]]] = \
            OrderedDict()

    # -- updates --------------------------------------------------------------------------------
    def observe(self, ev: EventView) -> None:
        name = ev.event_name
        if name not in _OBSERVED or (name == S.EV_PROCESS_EXEC and not self.images):
            return
        if name == S.EV_FILE_OPEN:
            flags = ev.attr(S.FILE_OPEN_FLAGS)
            if isinstance(flags, str) and _WRITE_FLAGS.intersection(flags.split("|")) \
                    and _succeeded(ev):
                self._remember_path(ev, ev.attr(S.FILE_PATH))
            return
        if name in (S.EV_FILE_RENAME, S.EV_FILE_LINK):
            if _succeeded(ev):
                self._remember_path(ev, ev.attr(S.FILE_TARGET_PATH))
            return
        if name == S.EV_FILE_CHMOD:
            if _succeeded(ev):
                self._remember_path(ev, ev.attr(S.FILE_PATH))
            return
        key = _proc_key(ev)
        if key is None:
            return
        if name in _SOCKET_EVENTS or name == S.EV_NETWORK_CLOSE:
            self._track_socket(ev, key, name)
            return
        if name == S.EV_PROCESS_EXEC:
            self._track_exec(ev, key)
            return
        if name == S.EV_DUP:
            if ev.attr(S.DUP_OLD_FD_TYPE) != "socket" or not _succeeded(ev):
                return
            newfd = as_int(ev.attr(S.DUP_NEW_FD))
            if newfd is None:
                newfd = as_int(ev.attr(S.SYSCALL_RET))
            if newfd not in (0, 1, 2):
                return
            entry = self._stdio.get(key) or [0, 0]
            entry[0 if newfd == 0 else 1] = _now(ev)
            self._put(key, entry)
        elif name == S.EV_PROCESS_FORK:
            parent = as_int(ev.attr(S.PROCESS_PARENT_PID))
            inherited = self._stdio.get((key[0], parent)) if parent is not None else None
            if inherited is not None:
                self._put(key, list(inherited))
            image = self._exes.get((key[0], parent)) if parent is not None and self.images \
                else None
            if image is not None:
                self._put_exe(key, image)
        elif name == S.EV_PROCESS_EXIT:
            self._stdio.pop(key, None)
            self._exes.pop(key, None)

    def _track_exec(self, ev: EventView, key: tuple[str, int]) -> None:
        if not _succeeded(ev):
            return
        want_exe = "proc.aexe" in self.images  # the arguments: read only when a rule needs them
        path = _text(ev.attr(S.PROCESS_EXECUTABLE_PATH))
        exe = path
        if want_exe:
            args = ev.attr(S.PROCESS_COMMAND_ARGS)
            exe = str(args[0]) if isinstance(args, list) and args else path
        self._put_exe(key, (exe, path))
        ppid = as_int(ev.attr(S.PROCESS_PARENT_PID))
        if ppid is not None and (key[0], ppid) not in self._exes:
            ppath = _text(ev.attr(S.PROCESS_PARENT_EXECUTABLE_PATH))
            pexe = ppath
            if want_exe:
                words = str(ev.attr(S.PROCESS_PARENT_COMMAND_LINE) or "").split()
                pexe = words[0] if words else ppath
            if pexe or ppath:
                self._put_exe((key[0], ppid), (pexe, ppath))

    def _put_exe(self, key: tuple[str, int], image: tuple[Optional[str], Optional[str]]) -> None:
        self._exes[key] = image
        self._exes.move_to_end(key)
        while len(self._exes) > self.limits.max_processes:
            self._exes.popitem(last=False)
            _evicted()

    def ancestor_exe(self, ev: EventView, n: int, path: bool) -> Optional[str]:
        """The exe (``path``: the exe path) of the record's Nth ancestor (N >= 1), if seen."""
        pids = ev.attr(S.PROCESS_ANCESTOR_PIDS)
        if not isinstance(pids, list) or n - 1 >= len(pids):
            return None
        pid = as_int(pids[n - 1])
        image = None if pid is None else self._exes.get((_container(ev), pid))
        return None if image is None else image[1 if path else 0]

    def _track_socket(self, ev: EventView, key: tuple[str, int], name: str) -> None:
        fd = as_int(ev.attr(S.FILE_FD))
        if fd is None or fd < 0:
            return
        skey = (key[0], key[1], fd)
        if name == S.EV_NETWORK_CLOSE:
            self._sockets.pop(skey, None)
            return
        if not _succeeded(ev) and ev.attr(S.ERROR_TYPE) != "EINPROGRESS":
            return
        entry = self._sockets.get(skey)
        if entry is None or name == S.EV_NETWORK_SOCKET:  # a new socket() reuses the number
            entry = {}
        for k in SOCKET_KEYS:
            v = ev.attr(k)
            if v is not None:
                entry[k] = v
        self._sockets[skey] = entry
        self._sockets.move_to_end(skey)
        while len(self._sockets) > self.limits.max_sockets:
            self._sockets.popitem(last=False)
            _evicted()

    def socket_attr(self, ev: EventView, key: str) -> Any:
        """For a dup record: ``key`` of the socket being dup'ed (its old fd), if tracked."""
        pkey = _proc_key(ev)
        old = as_int(ev.attr(S.DUP_OLD_FD))
        if pkey is None or old is None:
            return None
        entry = self._sockets.get((pkey[0], pkey[1], old))
        return None if entry is None else entry.get(key)

    def _put(self, key: tuple[str, int], entry: list[int]) -> None:
        self._stdio[key] = entry
        self._stdio.move_to_end(key)
        while len(self._stdio) > self.limits.max_processes:
            self._stdio.popitem(last=False)
            _evicted()

    def _remember_path(self, ev: EventView, path: Any) -> None:
        if not isinstance(path, str) or not path:
            return
        cid = _container(ev)
        paths = self._written.get(cid)
        if paths is None:
            paths = self._written[cid] = OrderedDict()
            while len(self._written) > self.limits.max_containers:
                self._written.popitem(last=False)
                _evicted()
        else:
            self._written.move_to_end(cid)
        paths[path] = _now(ev)
        paths.move_to_end(path)
        while len(paths) > self.limits.max_paths_per_container:
            paths.popitem(last=False)
            _evicted()

    # -- reads (fields/extensions.py) -------------------------------------------------------------
    def field(self, name: str, ev: EventView) -> Optional[bool]:
        if name == "exe_written_recently":
            return self._exe_written(ev)
        index = 0 if name == "stdin_is_socket" else 1
        key = _proc_key(ev)
        if key is None:
            return None
        now = _now(ev)
        window = int(self.limits.socket_window_seconds * 1e9)
        candidates = [key]
        ppid = as_int(ev.attr(S.PROCESS_PARENT_PID))
        if ppid is not None:
            candidates.append((key[0], ppid))
        for k in candidates:
            entry = self._stdio.get(k)
            if entry is not None and entry[index] and now - entry[index] <= window:
                return True
        return False

    def _exe_written(self, ev: EventView) -> Optional[bool]:
        path = ev.attr(S.PROCESS_EXECUTABLE_PATH)
        if not isinstance(path, str) or not path:
            return None
        paths = self._written.get(_container(ev))
        if not paths:
            return False
        ts = paths.get(path)
        window = int(self.limits.written_window_seconds * 1e9)
        return ts is not None and _now(ev) - ts <= window

    def sizes(self) -> dict[str, int]:
        return {"processes": len(self._stdio), "images": len(self._exes),
                "sockets": len(self._sockets),
                "containers": len(self._written),
                "paths": sum(len(p) for p in self._written.values())}


def _text(v: Any) -> Optional[str]:
    return v if isinstance(v, str) and v else None


def _succeeded(ev: EventView) -> bool:
    ret = as_int(ev.attr(S.SYSCALL_RET))
    return ret is None or ret >= 0


def _container(ev: EventView) -> str:
    """The state's container key; the host and a container whose id did not resolve are kept
    apart (the latter is not the host: docs/architecture.md#falco-rule-semantics)."""
    cid = ev.res.get(S.CONTAINER_ID)
    if isinstance(cid, str) and cid:
        return cid
    return "host" if ev.res.get(S.HOST_PROCESS) is True else "unknown"


def _proc_key(ev: EventView) -> Optional[tuple[str, int]]:
    pid = as_int(ev.attr(S.PROCESS_PID))
    return None if pid is None else (_container(ev), pid)


def _now(ev: EventView) -> int:
    return int(ev.record.time_unix_nano or ev.record.observed_time_unix_nano or time.time_ns())


def _evicted() -> None:
    telemetry.dropped.labels(stage="detection", reason="state_evicted").inc()
