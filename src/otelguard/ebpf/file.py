"""File probe: opens with write intent (or under watched prefixes) and namespace changes.

Records (``probes/file.bpf.c``, type ids 20-28; ``creat`` is an open record with the flags it
implies, ``O_WRONLY|O_CREAT|O_TRUNC``) carry up to two user-memory paths read at syscall
entry, the dirfds, flags/mode/owner, and the return value from syscall exit. Paths are resolved
to absolute in user space against the tracked cwd or the dirfd (``DecodeContext.resolve_path``).

Attributes: ``file.path`` (resolved), ``otelguard.file.path_raw`` (as passed), ``file.name``,
``file.directory``; opens add ``otelguard.file.open_flags`` (``O_WRONLY|O_CREAT|O_TRUNC``),
``file.mode`` (octal, with O_CREAT/O_TMPFILE) and ``otelguard.file.fd`` (the returned fd);
chmod/mkdir add ``file.mode``; chown adds ``file.owner.id``/``file.group.id`` (-1 = unchanged);
rename: path = old name, ``otelguard.file.target_path`` = new name; link: path = existing file,
target = new link; symlink: path = the new link, target (and
``file.symbolic_link.target_path``) = its content as given; fchmod/fchown/ftruncate resolve
their fd through ``/proc/<pid>/fd`` (only while the process lives: decoding is asynchronous, so
a process that exits first leaves ``file.path`` empty and ``otelguard.file.fd`` set).

In-kernel filter (opens only, ``openfilter.py``): write intent (O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|
O_APPEND), or the path is one of ``ProbeConfig.read_paths`` or starts with one of its read
prefixes (derived from the loaded rules when they are known). The flags decide first: when no
read entry is watched, a read-only open is rejected before any user memory is read. Relative
and not normalised paths of read-only opens pass the kernel filter whenever read entries exist
(``cd /etc && cat shadow``, ``/etc//shadow`` must not escape); decode() resolves them and drops
(as filtering, not loss) those the filter does not want.

In-kernel deduplication (``ProbeConfig.dedup_window_ms``): an open identical to one the same
process sent within the window is counted, not sent; the next one sent carries the count as
``otelguard.file.repeat_count``, and :func:`flush_repeats` (called by the sensor once a second)
emits the counts whose window passed with no further repeat. See
docs/architecture.md#kernel-facts.

Overhead (docs/benchmarks.md, bench/agent_overhead.py and bench/bpf_program_cost.py, 2-core VM
under load): an open the filter rejects costs ~220-235 ns of BPF (entry ~150 ns: flags test,
scratch, the path read ~50 ns, trie ~5 ns, not-normalised scan ~25 ns; exit ~70 ns), a
read-only open when no rule reads ~4 ns over an empty program; a repeat counted by dedup
~0.4 µs at exit instead of a ring record and ~10-20 µs of Python decode; a sent open ~1 µs in
the kernel plus the decode, which competes for the same cores (an open-heavy loop outruns the
consumer: counted kernel_ring drops). Scope the sensor (``cgroup_scope``).
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from otelguard import semconv
from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.openfilter import render_defines, render_read_match, read_wanted
from otelguard.ebpf.probe import PATH_LEN, DecodeContext, Header, ProbeConfig, c_string, probe_source
from otelguard.ebpf.tables import Table

EXEC_TRACEPOINT = "sched:sched_process_exec"  # dedup forgets a process's entries at its exec
DEDUP_TABLE = "og_file_dedup"
REPEATS_TABLE = "og_file_repeats"
AT_FDCWD = -100
AT_REMOVEDIR = 0x200

T_OPEN, T_UNLINK, T_RENAME, T_CHMOD, T_CHOWN, T_SYMLINK, T_LINK, T_MKDIR, T_TRUNCATE = range(20, 29)

_EVENT_NAMES = {
    T_OPEN: semconv.EV_FILE_OPEN, T_UNLINK: semconv.EV_FILE_UNLINK,
    T_RENAME: semconv.EV_FILE_RENAME, T_CHMOD: semconv.EV_FILE_CHMOD,
    T_CHOWN: semconv.EV_FILE_CHOWN, T_SYMLINK: semconv.EV_FILE_SYMLINK,
    T_LINK: semconv.EV_FILE_LINK, T_MKDIR: semconv.EV_FILE_MKDIR,
    T_TRUNCATE: semconv.EV_FILE_TRUNCATE,
}
_VERBS = {
    T_OPEN: "open", T_UNLINK: "unlink", T_RENAME: "rename", T_CHMOD: "chmod", T_CHOWN: "chown",
    T_SYMLINK: "symlink", T_LINK: "link", T_MKDIR: "mkdir", T_TRUNCATE: "truncate",
}


@dataclass(frozen=True)
class Syscall:
    """One traced syscall: record type and C assignments from tracepoint args to record fields."""

    name: str
    type_id: int
    fields: tuple[tuple[str, str], ...]  # (record field, C expression); path fields are read
    how: bool = False  # openat2: flags/mode from struct open_how in user memory
    flags: int = 0  # flags the syscall implies (creat: O_WRONLY|O_CREAT|O_TRUNC)


def _s(name: str, type_id: int, *fields: tuple[str, str], how: bool = False,
       flags: int = 0) -> Syscall:
    return Syscall(name, type_id, fields, how, flags)


SYSCALLS: tuple[Syscall, ...] = (
    _s("open", T_OPEN, ("path", "filename"), ("flags", "flags"), ("mode", "mode")),
    _s("openat", T_OPEN, ("dfd", "dfd"), ("path", "filename"), ("flags", "flags"),
       ("mode", "mode")),
    _s("openat2", T_OPEN, ("dfd", "dfd"), ("path", "filename"), how=True),
    _s("unlink", T_UNLINK, ("path", "pathname")),
    _s("unlinkat", T_UNLINK, ("dfd", "dfd"), ("path", "pathname"), ("flags", "flag")),
    _s("rename", T_RENAME, ("path", "oldname"), ("path2", "newname")),
    _s("renameat", T_RENAME, ("dfd", "olddfd"), ("path", "oldname"), ("dfd2", "newdfd"),
       ("path2", "newname")),
    _s("renameat2", T_RENAME, ("dfd", "olddfd"), ("path", "oldname"), ("dfd2", "newdfd"),
       ("path2", "newname"), ("flags", "flags")),
    _s("chmod", T_CHMOD, ("path", "filename"), ("mode", "mode")),
    _s("fchmod", T_CHMOD, ("dfd", "fd"), ("mode", "mode")),
    _s("fchmodat", T_CHMOD, ("dfd", "dfd"), ("path", "filename"), ("mode", "mode")),
    _s("fchmodat2", T_CHMOD, ("dfd", "dfd"), ("path", "filename"), ("mode", "mode"),
       ("flags", "flags")),
    _s("chown", T_CHOWN, ("path", "filename"), ("uid", "user"), ("gid", "group")),
    _s("lchown", T_CHOWN, ("path", "filename"), ("uid", "user"), ("gid", "group")),
    _s("fchown", T_CHOWN, ("dfd", "fd"), ("uid", "user"), ("gid", "group")),
    _s("fchownat", T_CHOWN, ("dfd", "dfd"), ("path", "filename"), ("uid", "user"),
       ("gid", "group"), ("flags", "flag")),
    _s("symlink", T_SYMLINK, ("path2", "oldname"), ("path", "newname")),
    _s("symlinkat", T_SYMLINK, ("path2", "oldname"), ("dfd", "newdfd"), ("path", "newname")),
    _s("link", T_LINK, ("path", "oldname"), ("path2", "newname")),
    _s("linkat", T_LINK, ("dfd", "olddfd"), ("path", "oldname"), ("dfd2", "newdfd"),
       ("path2", "newname"), ("flags", "flags")),
    _s("mkdir", T_MKDIR, ("path", "pathname"), ("mode", "mode")),
    _s("mkdirat", T_MKDIR, ("dfd", "dfd"), ("path", "pathname"), ("mode", "mode")),
    _s("truncate", T_TRUNCATE, ("path", "path"), ("arg", "length")),
    _s("ftruncate", T_TRUNCATE, ("dfd", "fd"), ("arg", "length")),
    _s("rmdir", T_UNLINK, ("path", "pathname")),  # reported as unlink with AT_REMOVEDIR
    # open(path, O_WRONLY|O_CREAT|O_TRUNC, mode): always write intent, never filtered
    _s("creat", T_OPEN, ("path", "pathname"), ("mode", "mode"), flags=0o1101),
)
_FD_ONLY = frozenset({"fchmod", "fchown", "ftruncate"})

# x86-64 kernel open flag bits (the syscall argument, not libc's view)
_O_FLAGS = (
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"),
    (0o4000000, "O_SYNC"), (0o10000000, "O_PATH"), (0o20000000, "O_TMPFILE"),
)
_AT_FLAGS = ((0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"), (0x400, "AT_SYMLINK_FOLLOW"),
             (0x800, "AT_NO_AUTOMOUNT"), (0x1000, "AT_EMPTY_PATH"))
_RENAME_FLAGS = ((1, "RENAME_NOREPLACE"), (2, "RENAME_EXCHANGE"), (4, "RENAME_WHITEOUT"))


_FLAG_NAMES_CACHE: dict[int, str] = {}


def open_flag_names(flags: int) -> str:
    """Open flags as ``O_WRONLY|O_CREAT|O_CLOEXEC`` (unknown bits as hex); memoised, since a
    workload uses a handful of distinct flag sets."""
    hit = _FLAG_NAMES_CACHE.get(flags)
    if hit is None:
        hit = _open_flag_names(flags)
        if len(_FLAG_NAMES_CACHE) < 4096:
            _FLAG_NAMES_CACHE[flags] = hit
    return hit


def _open_flag_names(flags: int) -> str:
    acc = flags & 3
    names = [("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[acc]]
    rest = flags & ~3
    for bit, name in _O_FLAGS:
        if rest & bit:
            names.append(name)
            rest &= ~bit
    if "O_TMPFILE" in names and "O_DIRECTORY" in names:
        names.remove("O_DIRECTORY")  # O_TMPFILE is defined as __O_TMPFILE|O_DIRECTORY
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def _bit_names(flags: int, table: tuple[tuple[int, str], ...]) -> str:
    names = [n for b, n in table if flags & b]
    rest = flags & ~sum(b for b, _ in table)
    if rest:
        names.append(hex(rest))
    return "|".join(names)


class FileRecord(ctypes.Structure):
    """Mirror of ``struct og_file_rec``."""

    _fields_ = [
        ("h", Header),
        ("dfd", ctypes.c_int32),
        ("dfd2", ctypes.c_int32),
        ("sc", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("repeat", ctypes.c_uint32),
        ("arg", ctypes.c_int64),
        ("path", ctypes.c_char * PATH_LEN),
        ("path2", ctypes.c_char * PATH_LEN),
    ]


_RECORD_SIZE = ctypes.sizeof(FileRecord)


def render_handlers(available: frozenset[str]) -> str:
    """One enter/exit TRACEPOINT_PROBE pair per syscall whose tracepoints both exist."""
    out: list[str] = []
    for index, sc in enumerate(SYSCALLS):
        if f"syscalls:sys_enter_{sc.name}" not in available or \
                f"syscalls:sys_exit_{sc.name}" not in available:
            out.append(f"// {sc.name}: tracepoint missing, not traced")
            continue
        body = []
        if sc.type_id == T_OPEN and not sc.how and not sc.flags:
            # the cheap fact before anything else: flags (a tracepoint field, no user memory)
            body.append(f"    if (!og_file_flags_wanted((u64)(u32)args->flags)) {{ return 0; }}")
        body += [f"    struct og_file_rec *r = og_file_begin({index}, {sc.type_id});",
                 "    if (!r) { return 0; }"]
        for field, expr in sc.fields:
            if field in ("path", "path2"):  # the open path's length feeds the filter
                var = "plen" if field == "path" else "plen2"
                body += [f"    long {var} = bpf_probe_read_user_str(r->{field}, "
                         f"sizeof(r->{field}), args->{expr});",
                         f"    if ({var} < 0) {{ og_file_late(r)->late_{field} = "
                         f"(u64)args->{expr}; }}  // read again at exit"]
            elif field in ("dfd", "dfd2"):
                body.append(f"    r->{field} = (s32)args->{expr};")
            elif field == "arg":
                body.append(f"    r->arg = (s64)args->{expr};")
            elif field == "flags":
                body.append(f"    r->flags = (u64)(u32)args->{expr};")
            else:
                body.append(f"    r->{field} = (u32)args->{expr};")
        if sc.flags:
            body.append(f"    r->flags = 0{sc.flags:o};  // as open(2) flags")
        if sc.how:
            body += ["    struct og_open_how how = {};",
                     "    bpf_probe_read_user(&how, sizeof(how), (void *)args->how);",
                     "    r->flags = how.flags;", "    r->mode = (u32)how.mode;"]
        if sc.type_id == T_OPEN:
            body.append("    if (!og_file_open_wanted(r, plen)) { return 0; }")
        body.append("    return og_file_stash_it(r);")
        out.append(f"TRACEPOINT_PROBE(syscalls, sys_enter_{sc.name}) {{\n" + "\n".join(body)
                   + "\n}")
        out.append(f"TRACEPOINT_PROBE(syscalls, sys_exit_{sc.name}) "
                   "{ return og_file_exit(args->ret); }")
    return "\n".join(out)


class FileProbe:
    """See the module docstring for records, attributes, filter and overhead."""

    name = "file"
    source_file = "file.bpf.c"
    type_ids = range(20, 40)

    def tracepoints(self) -> list[str]:
        return [f"syscalls:sys_{d}_{sc.name}" for sc in SYSCALLS
                for d in ("enter", "exit")] + [EXEC_TRACEPOINT]

    def render(self, config: ProbeConfig, available: frozenset[str]) -> str:
        prefixes, paths = config.read_prefixes, config.read_paths
        # dedup needs to see execs (a new program's opens are never taken for repeats)
        dedup_ns = config.dedup_window_ms * 1_000_000 if EXEC_TRACEPOINT in available else 0
        fills = {"OG_FILE_DEFINES": render_defines(bool(prefixes or paths), dedup_ns,
                                                   config.dedup_entries),
                 "OG_FILE_READ_MATCH": render_read_match(prefixes, paths),
                 "OG_FILE_HANDLERS": render_handlers(available)}
        # placeholders stand alone on their line (the header comment names them too)
        return "\n".join(fills.get(line.strip(), line)
                         for line in probe_source(self.source_file).splitlines()) + "\n"

    def decode(self, type_id: int, data: bytes, ctx: DecodeContext) -> Optional[Event]:
        if len(data) < _RECORD_SIZE or type_id not in _EVENT_NAMES:
            return None
        r = FileRecord.from_buffer_copy(data)
        if r.sc >= len(SYSCALLS):
            return None
        sc = SYSCALLS[r.sc]
        pid = r.h.pid
        raw = c_string(r.path)
        raw2 = c_string(r.path2)
        if sc.name in _FD_ONLY:
            path = ctx.resolve_path(pid, r.dfd, "")
        elif raw:
            path = ctx.resolve_path(pid, r.dfd, raw)
        else:
            # the user page was not resident at syscall entry (tracepoints cannot fault it in)
            # or the path was really empty (AT_EMPTY_PATH): never guess the cwd
            path = ctx.resolve_path(pid, r.dfd, "") if r.dfd >= 0 else ""
        attrs: dict[str, AttrValue] = {}
        if type_id == T_OPEN:
            if not (r.flags & 0o3103) and raw:
                cfg: Optional[ProbeConfig] = getattr(ctx, "probe_config", None)
                # kept: a traversal ("../" in the path as passed: Falco's directory_traversal)
                if cfg is not None and "../" not in raw and \
                        not read_wanted(path, cfg.read_prefixes, cfg.read_paths) and \
                        not read_wanted(raw, cfg.read_prefixes, cfg.read_paths):
                    return None  # relative or not normal, resolved outside the filter: filtered
            if r.repeat:
                attrs[semconv.FILE_REPEAT_COUNT] = int(r.repeat)
            attrs[semconv.FILE_OPEN_FLAGS] = open_flag_names(int(r.flags))
            if r.flags & (0o100 | 0o20000000):
                attrs[semconv.FILE_MODE] = f"{r.mode & 0o7777:04o}"
            if r.h.ret >= 0:
                attrs[semconv.FILE_FD] = int(r.h.ret)
        elif type_id in (T_CHMOD, T_MKDIR):
            attrs[semconv.FILE_MODE] = f"{r.mode & 0o7777:04o}"
        elif type_id == T_CHOWN:
            attrs[semconv.FILE_OWNER_ID] = ctypes.c_int32(r.uid).value
            attrs[semconv.FILE_GROUP_ID] = ctypes.c_int32(r.gid).value
        if sc.name in _FD_ONLY:
            attrs[semconv.FILE_FD] = int(r.dfd)
        if type_id in (T_RENAME, T_LINK):
            attrs[semconv.FILE_TARGET_PATH] = ctx.resolve_path(pid, r.dfd2, raw2)
        elif type_id == T_SYMLINK:
            attrs[semconv.FILE_TARGET_PATH] = raw2
            attrs[semconv.FILE_SYMLINK_TARGET] = raw2
        if type_id == T_RENAME and r.flags:
            attrs[semconv.FILE_OPEN_FLAGS] = _bit_names(int(r.flags), _RENAME_FLAGS)
        elif type_id != T_OPEN and (r.flags or sc.name == "rmdir"):
            flags = int(r.flags) | (AT_REMOVEDIR if sc.name == "rmdir" else 0)
            attrs[semconv.FILE_OPEN_FLAGS] = _bit_names(flags, _AT_FLAGS)
        attrs[semconv.FILE_PATH] = path
        if raw:
            attrs[semconv.FILE_RAW_PATH] = raw
        if path:
            directory, _, base = path.rpartition("/")
            attrs[semconv.FILE_NAME] = base
            attrs[semconv.FILE_DIRECTORY] = directory or "/"
        event = ctx.make_event(r.h, _EVENT_NAMES[type_id], sc.name, attrs)
        verb = _VERBS[type_id]
        if type_id in (T_RENAME, T_LINK, T_SYMLINK):
            event.body = f"{verb} {path} -> {attrs[semconv.FILE_TARGET_PATH]}"
        elif type_id == T_OPEN:
            event.body = f"{verb} {path} {attrs[semconv.FILE_OPEN_FLAGS]}"
        else:
            event.body = f"{verb} {path or '<path unreadable>'}"
        if r.h.ret < 0:
            event.body += f" failed: {os.strerror(-int(r.h.ret))}"
        if r.repeat:
            event.body += f" (+{r.repeat} identical)"
        return event


def flush_repeats(tables: Mapping[str, Table], window_ns: int, now_ns: int) -> list[bytes]:
    """Records for the repeat counts the kernel holds whose window passed (the last identical
    one sent ``window_ns`` or longer before ``now_ns``, CLOCK_MONOTONIC): each is the last
    counted open (the record first sent, at the time of the last repeat) with ``repeat`` set to
    the ones counted before it. Expired
    entries are deleted, so the LRU holds only the last window's opens and this walk stays
    short on a quiet node. A repeat counted between the read and the delete is lost (a race
    of a few µs once per window). Called by the sensor once a second."""
    table = tables.get(DEDUP_TABLE)
    if table is None:
        return []  # dedup compiled out
    out: list[bytes] = []
    for key, seen in list(table.items()):
        if now_ns - int(seen.sent_ns) < window_ns:
            continue
        count = int(seen.count)
        if not table.delete(key):
            continue  # evicted meanwhile
        if count:
            # the last counted open itself, carrying the ones counted before it: so every
            # record stands for 1 + repeat_count opens, sent by the kernel or flushed here
            rec = FileRecord.from_buffer_copy(bytes(seen.rec))
            rec.repeat = min(count - 1, 0xFFFFFFFF)
            rec.h.ktime_ns = int(seen.last_ns)
            out.append(bytes(rec))
    return out


def due_repeats(tables: Mapping[str, Table], probes: Sequence[Any], config: ProbeConfig,
                stopping: bool = False) -> list[bytes]:
    """:func:`flush_repeats` for the sensor's once-a-second tick (every count when
    ``stopping``); nothing when the file probe is not loaded or dedup is off."""
    window_ns = config.dedup_window_ms * 1_000_000
    if not window_ns or not any(p.name == "file" for p in probes):
        return []
    return flush_repeats(tables, window_ns, time.monotonic_ns() + (window_ns if stopping else 0))


def kernel_repeats(tables: Optional[Mapping[str, Table]]) -> tuple[int, int]:
    """(repeats counted in the kernel, counts overwritten before they were reported: an
    exec or a hash collision replaced the entry), summed over CPUs; (0, 0) when dedup is
    compiled out or nothing is loaded (``tables`` None)."""
    table = tables.get(REPEATS_TABLE) if tables is not None else None
    if table is None:
        return 0, 0
    return table.percpu_sum(0), table.percpu_sum(1)


def create() -> FileProbe:
    """A new probe instance (one per sensor)."""
    return FileProbe()
