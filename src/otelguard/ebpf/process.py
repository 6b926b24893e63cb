"""Process probe: exec (argv from user memory), fork, exit (with code), chdir/fchdir.

Records (``probes/process.bpf.c``, type ids 1-4):

* exec: ``sys_enter_execve(at)`` reads the filename and up to ``argv_max`` arguments of
  ``arg_len`` bytes from user memory and stashes them per thread group; ``sys_exit_execve(at)``
  emits with the return value. Failed execs are events too (``error.type``; ``file.path`` = the
  attempted executable, ``process.*`` = the caller). Successful ones update the process table
  first, so the record's ``process.*`` describe the new image.
  The environment (Falco's ``proc.env``): the same entry walks ``envp`` (at most
  ``ENV_SCAN`` entries, pointers read 8 at a time) and copies up to ``env_max`` variables of
  ``env_len`` bytes whose NAME is in ``env_names`` (compared without case on a fixed head; the
  value of any other variable is never read); user space re-checks the name and redacts
  (``redact_env``). Read at entry, so a program that exits at once has it too.
* fork: ``sched_process_fork`` for new processes; new threads are skipped in the kernel (the
  ``CLONE_THREAD`` flag is remembered from ``sys_enter_clone``/``clone3``). The record describes
  the child (``process.pid`` = child, ``process.parent_pid`` = the forking process).
* exit: ``sched_process_exit`` of the thread-group leader, with the code ``exit_group`` was given
  (absent when the process died from a signal).
* chdir/fchdir: bookkeeping only (cwd tracking for relative paths), no event.

Forks by the sensor's own process or by a parent outside the cgroup scope are not recorded (the
filter runs in the forking task); such a child's parent pid and start time come from ``/proc``
at first sight, so a child that already exited when its exec is decoded has parent pid 0
(unknown) and its exec time as start time.

Overhead (measured roughly on the 2-core VM under load, /bin/true spawned 300 times, traced
vs untraced in the same run): 0.95-0.97x the exec rate, i.e. 40-90 µs per exec, mostly the
user-space side (five small ``/proc`` reads for caps/exe/tty/login uid, redaction); the kernel
side copies at most ``argv_max`` x ``arg_len`` bytes (2.5 KiB by default); the environment
scan adds ~60-100 ns per variable of the exec's environment (+4 µs for 40 variables, +16 µs
for 250; ``bench/exec_env_scan.py``) and ``env_max`` x ``env_len`` bytes (1 KiB) per record. Forks cost one
record, plus one ``stat`` of the parent's ``/proc/<pid>/root`` in user space (a root not seen
before: one ``mountinfo`` read), kept so an exec decoded after the process is gone is still
judged; thread creation one map update and no record.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from typing import Optional, Protocol, cast, runtime_checkable

from otelguard import semconv
from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.probe import (
    PATH_LEN, DecodeContext, Header, ProbeConfig, c_string, implements, probe_source,
)

T_EXEC, T_FORK, T_EXIT, T_CHDIR = 1, 2, 3, 4
ENV_SCAN = 256  # envp entries the kernel examines per exec (more: env_more bit 2)
AT_EMPTY_PATH = 0x1000
ARGV_UNREAD = 2  # ExecRecord.truncated bit: part of argv was in a page not resident at entry
SC_NAMES = ("execve", "execveat", "chdir", "fchdir")

TRACEPOINTS = (
    "syscalls:sys_enter_execve", "syscalls:sys_exit_execve",
    "syscalls:sys_enter_execveat", "syscalls:sys_exit_execveat",
    "syscalls:sys_enter_clone", "syscalls:sys_enter_clone3", "sched:sched_process_fork",
    "syscalls:sys_enter_exit_group", "sched:sched_process_exit",
    "syscalls:sys_enter_chdir", "syscalls:sys_exit_chdir",
    "syscalls:sys_enter_fchdir", "syscalls:sys_exit_fchdir",
)


class ExecRecord(ctypes.Structure):
    """Fixed part of ``struct og_exec_rec``; ``argv_max`` slots of ``arg_len`` bytes follow."""

    _fields_ = [
        ("h", Header),
        ("dirfd", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("sc", ctypes.c_uint16),
        ("argc", ctypes.c_uint16),
        ("argv_max", ctypes.c_uint16),
        ("arg_len", ctypes.c_uint16),
        ("truncated", ctypes.c_uint32),
        ("envc", ctypes.c_uint16),
        ("env_max", ctypes.c_uint16),
        ("env_len", ctypes.c_uint16),
        ("env_more", ctypes.c_uint16),
        ("pad", ctypes.c_uint32),
        ("filename", ctypes.c_char * PATH_LEN),
    ]


class ForkRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("parent_pid", ctypes.c_uint32), ("child_pid", ctypes.c_uint32)]


class ExitRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("code", ctypes.c_int32), ("has_code", ctypes.c_uint32)]


class ChdirRecord(ctypes.Structure):
    _fields_ = [("h", Header), ("fd", ctypes.c_int32), ("sc", ctypes.c_uint32),
                ("path", ctypes.c_char * PATH_LEN)]


@runtime_checkable
class ProcessLifecycle(Protocol):
    """What the sensor's DecodeContext offers the process probe to keep the process table."""

    def on_exec(self, hdr: Header, path: str, argv: list[str], exec_fd: int = -1,
                env: Optional[list[str]] = None, argv_unread: bool = False) -> None: ...

    def on_fork(self, hdr: Header, parent_pid: int, child_pid: int) -> None: ...

    def on_exit(self, hdr: Header, code: Optional[int]) -> None: ...

    def on_chdir(self, hdr: Header, fd: int, path: str) -> None: ...


_FD_PATH = re.compile(r"^/(?:proc/(?:self|thread-self|(\d+))|dev)/fd/(\d+)$")


def exec_fd(rec: ExecRecord, raw: str) -> int:
    """The descriptor an exec went through, or -1: ``execveat(fd, "", AT_EMPTY_PATH)``
    (fexecve) or a path naming one of the caller's own descriptors (``/proc/self/fd/N``,
    ``/proc/<own pid>/fd/N``, ``/dev/fd/N``). The process table knows which are memfds."""
    if rec.sc == 1 and rec.flags & AT_EMPTY_PATH and not raw:
        return int(rec.dirfd)
    m = _FD_PATH.match(raw)
    if m is None or (m.group(1) is not None and int(m.group(1)) != rec.h.pid):
        return -1
    return int(m.group(2))


def exec_args(data: bytes, rec: ExecRecord) -> list[str]:
    """The argv slots that follow the fixed record (bounded by the record's own sizes)."""
    base = ctypes.sizeof(ExecRecord)
    n, size = min(rec.argc, rec.argv_max), rec.arg_len
    return [c_string(data[base + i * size: base + (i + 1) * size]) for i in range(n)
            if base + (i + 1) * size <= len(data)]


def exec_env(data: bytes, rec: ExecRecord, names: frozenset[str]) -> list[str]:
    """The ``NAME=VALUE`` slots after the argv slots whose NAME is allowlisted (``names``,
    upper case: the kernel compared without case, this re-checks the whole name)."""
    base = ctypes.sizeof(ExecRecord) + rec.argv_max * rec.arg_len
    n, size = min(rec.envc, rec.env_max), rec.env_len
    out = []
    for i in range(n):
        if base + (i + 1) * size > len(data):
            break
        entry = c_string(data[base + i * size: base + (i + 1) * size])
        if entry.partition("=")[0].upper() in names:
            out.append(entry)
    return out


def render_env_match(names: tuple[str, ...]) -> str:
    """``og_env_wanted(h)``: true when the head ``h`` (``OG_ENV_HEAD`` bytes as 64-bit words)
    starts with one of ``names`` followed by ``=``, letters compared without case (bit 0x20
    or'ed in), other bytes exact; 8 bytes per compare, in the host's byte order (the program
    runs where it is rendered): fewer instructions per variable, at run time and for the
    verifier, than one compare per byte."""
    lines = ["static __always_inline int og_env_wanted(const u64 *h) {"]
    for name in names:
        text = name + "="
        conds = []
        for w in range(0, len(text), 8):
            chunk = text[w:w + 8]
            keep, fold, want = (int.from_bytes(b.ljust(8, b"\0"), sys.byteorder) for b in (
                b"\xff" * len(chunk), bytes(0x20 if c.isalpha() else 0 for c in chunk),
                chunk.lower().encode()))
            word = f"h[{w // 8}]" if len(chunk) == 8 else f"(h[{w // 8}] & {keep:#x}ULL)"
            conds.append(f"({word} | {fold:#x}ULL) == {want:#x}ULL")
        lines.append(f"    if ({' && '.join(conds)}) {{ return 1; }}  // {name}")
    lines.append("    return 0;")
    lines.append("}")
    return "\n".join(lines)


class ProcessProbe:
    """See the module docstring for records, attributes and overhead."""

    name = "process"
    source_file = "process.bpf.c"
    type_ids = range(1, 20)

    def tracepoints(self) -> list[str]:
        return list(TRACEPOINTS)

    def render(self, config: ProbeConfig, available: frozenset[str]) -> str:
        if not 1 <= config.argv_max <= 64 or not 16 <= config.arg_len <= 1024:
            raise ValueError("argv_max must be 1..64 and arg_len 16..1024")
        lines = [f"#define OG_ARGV_MAX {config.argv_max}", f"#define OG_ARG_LEN {config.arg_len}"]
        names = config.env_names
        lines += [f"#define OG_ENV_MAX {config.env_max if names else 0}",
                  f"#define OG_ENV_LEN {config.env_len}", f"#define OG_ENV_SCAN {ENV_SCAN}",
                  # the longest name, its '=' and the NUL, rounded up to 8 bytes
                  f"#define OG_ENV_HEAD {(max((len(n) for n in names), default=0) + 2 + 7) // 8 * 8}"]
        if names:
            lines.append(render_env_match(names))
        for tp in TRACEPOINTS:
            lines.append(f"#define OG_TP_{tp.split(':')[1]} {int(tp in available)}")
        return "\n".join(lines) + "\n" + probe_source(self.source_file)

    def decode(self, type_id: int, data: bytes, ctx: DecodeContext) -> Optional[Event]:
        life = cast(ProcessLifecycle, ctx) if implements(ctx, ProcessLifecycle) else None
        if type_id == T_EXEC and len(data) >= ctypes.sizeof(ExecRecord):
            return self._exec(ExecRecord.from_buffer_copy(data), data, ctx, life)
        if type_id == T_FORK and len(data) >= ctypes.sizeof(ForkRecord):
            f = ForkRecord.from_buffer_copy(data)
            if life is not None:
                life.on_fork(f.h, f.parent_pid, f.child_pid)
            child = Header.from_buffer_copy(bytes(f.h))
            child.pid = child.tid = f.child_pid
            ev = ctx.make_event(child, semconv.EV_PROCESS_FORK, "clone", {})
            ev.body = f"fork {f.parent_pid} -> {f.child_pid} ({c_string(f.h.comm)})"
            return ev
        if type_id == T_EXIT and len(data) >= ctypes.sizeof(ExitRecord):
            x = ExitRecord.from_buffer_copy(data)
            code = x.code if x.has_code else None
            attrs: dict[str, AttrValue] = {}
            if code is not None:
                attrs[semconv.PROCESS_EXIT_CODE] = code
            ev = ctx.make_event(x.h, semconv.EV_PROCESS_EXIT,
                                "exit_group" if x.has_code else "exit", attrs)
            if life is not None:
                life.on_exit(x.h, code)
            ev.body = f"exit {ev.attrs.get(semconv.PROCESS_EXECUTABLE_NAME, '')} " + (
                f"code {code}" if code is not None else "(no exit_group: signal or thread exit)")
            return ev
        if type_id == T_CHDIR and len(data) >= ctypes.sizeof(ChdirRecord):
            c = ChdirRecord.from_buffer_copy(data)
            if c.h.ret == 0 and life is not None:
                life.on_chdir(c.h, c.fd, c_string(c.path))
            return None
        return None

    def _exec(self, rec: ExecRecord, data: bytes, ctx: DecodeContext,
              life: Optional[ProcessLifecycle]) -> Event:
        argv = exec_args(data, rec)
        cfg: Optional[ProbeConfig] = getattr(ctx, "probe_config", None)
        names = frozenset(n.upper() for n in (cfg.env_names if cfg is not None else ()))
        env = exec_env(data, rec, names) if names else []
        raw = c_string(rec.filename)
        dirfd = rec.dirfd
        if rec.sc == 1 and rec.flags & AT_EMPTY_PATH and not raw:  # execveat: the fd itself
            path = ctx.resolve_path(rec.h.pid, dirfd, "")
        else:
            path = ctx.resolve_path(rec.h.pid, dirfd, raw)
        syscall = SC_NAMES[rec.sc] if rec.sc < 2 else "execve"
        attrs: dict[str, AttrValue] = {}
        if rec.h.ret == 0:
            if life is not None:
                life.on_exec(rec.h, path, argv, exec_fd(rec, raw), env,
                             argv_unread=bool(rec.truncated & ARGV_UNREAD))
        else:
            attrs[semconv.FILE_PATH] = path
        if raw != path:
            attrs[semconv.FILE_RAW_PATH] = raw
        ev = ctx.make_event(rec.h, semconv.EV_PROCESS_EXEC, syscall, attrs)
        if rec.h.ret == 0 and semconv.PROCESS_ARGS_COUNT in ev.attrs and rec.truncated & 1:
            ev.attrs[semconv.PROCESS_ARGS_COUNT] = len(argv)  # more existed; slots were full
        if rec.env_more and names:
            # more allowlisted variables than slots, or an envp longer than the kernel scans:
            # proc.env may miss some (a rule can test this)
            ev.attrs[semconv.PROCESS_ENV_TRUNCATED] = True
        cmd = ev.attrs.get(semconv.PROCESS_COMMAND_LINE, "")
        ev.body = f"exec {path}" + (f": {cmd}"[:240] if rec.h.ret == 0 and cmd else "")
        if rec.h.ret < 0:
            ev.body += f" failed: {os.strerror(-int(rec.h.ret))}"
        return ev


def create() -> ProcessProbe:
    """A new probe instance (one per sensor)."""
    return ProcessProbe()
