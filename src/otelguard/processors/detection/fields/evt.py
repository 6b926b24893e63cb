"""evt.* (and syscall.type): what happened, when, and with which syscall arguments.

``evt.type`` is the syscall name the agent recorded, or a stand-in derived from the event name
for records that are not one syscall; ``evt.arg.<name>`` maps each Falco argument name to the
attribute that holds it for that syscall family. The fd class uses :func:`event_type`,
:func:`syscall_ret` and :data:`OPEN_TYPES` too.
"""

from __future__ import annotations

import errno
import time
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.processors.detection.fields.registry import (
    FieldType as T, ResourceField, as_int, define, unavailable,
)
from otelguard.processors.detection.fields.view import MISSING, EventView


_EVENT_TYPE_BY_NAME = {
    S.EV_PROCESS_EXIT: "procexit",
    S.EV_PROCESS_FORK: "clone",
    S.EV_PROCESS_EXEC: "execve",
    S.EV_FILE_OPEN: "openat",
    S.EV_NETWORK_CONNECT: "connect",
    S.EV_NETWORK_ACCEPT: "accept",
    S.EV_NETWORK_CLOSE: "close",
    S.EV_DNS_QUERY: "sendto",
    S.EV_IO_URING: "io_uring_enter",  # SQPOLL submissions carry no syscall name
    S.EV_IO_URING_SETUP: "io_uring_setup",
    S.EV_PRIV_CAPABLE: "capable",
}


# Every evt.type a record of the otelguard sensor can carry (docs/architecture.md#event-names):
# the syscalls each probe names, and the stand-ins above for records that are not one syscall.
# A rule none of whose event types is here never fires on this sensor: the loader reports it
# as cannot-run with the types (tests/processors/detection/test_fields.py checks this set
# against the probes' own tables).
SENSOR_EVENT_TYPES = frozenset({
    # process probe
    "execve", "execveat", "clone", "procexit",
    # file probe
    "open", "openat", "openat2", "creat", "unlink", "unlinkat", "rmdir", "rename", "renameat",
    "renameat2", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchown",
    "fchownat", "symlink", "symlinkat", "link", "linkat", "mkdir", "mkdirat", "truncate",
    "ftruncate",
    # network probe (a DNS query is the send that carried it; close is a TCP state change)
    "socket", "connect", "accept", "accept4", "bind", "listen", "sendto", "sendmsg", "sendmmsg",
    "write", "close",
    # privilege probe
    "setuid", "setreuid", "setresuid", "setfsuid", "setgid", "setregid", "setresgid",
    "setfsgid", "capset", "capable", "ptrace", "kill", "tkill", "tgkill", "unshare", "setns",
    "mount", "init_module", "finit_module", "bpf", "memfd_create", "dup", "dup2", "dup3",
    # evasion probe
    "io_uring_enter", "io_uring_setup",
})


def event_type(ev: EventView) -> Optional[str]:
    """Falco's evt.type: the syscall name, or a stand-in for records that are not syscalls."""
    v = ev.cache.get("evt.type", MISSING)
    if v is MISSING:
        if ev.event_name in _NOT_SYSCALLS:  # a process exit is Falco's procexit, whichever
            v = _NOT_SYSCALLS[ev.event_name]  # syscall (exit_group, exit) ended the process
        else:
            name = ev.attr(S.SYSCALL_NAME)
            v = name if isinstance(name, str) and name else \
                _EVENT_TYPE_BY_NAME.get(ev.event_name)
        ev.cache["evt.type"] = v
    return v  # type: ignore[no-any-return]  # cache is Any: str | None


# events Falco names by themselves, not by the syscall the record carries
_NOT_SYSCALLS = {S.EV_PROCESS_EXIT: "procexit"}
# Falco's event direction: procexit is an enter-only event (">"); every other record describes
# a syscall's exit ("<"), as Falco 0.41+ sees syscalls (enter events are no longer emitted)
_ENTER_ONLY = frozenset({"procexit"})


def _evt_dir(ev: EventView, _arg: Optional[str]) -> str:
    return ">" if event_type(ev) in _ENTER_ONLY else "<"


def syscall_ret(ev: EventView) -> Optional[int]:
    """The syscall's return value, or None when the record carries none."""
    return as_int(ev.attr(S.SYSCALL_RET))


def _res(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    ret = syscall_ret(ev)
    err = ev.attr(S.ERROR_TYPE)
    if ret is None:
        return err if isinstance(err, str) and err else None
    if ret >= 0:
        return "SUCCESS"
    if isinstance(err, str) and err:
        return err
    return errno.errorcode.get(-ret, str(ret))


OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})


def _flags_str(ev: EventView) -> str:
    v = ev.attr(S.FILE_OPEN_FLAGS)
    return v if isinstance(v, str) else ""


def _flagset(ev: EventView) -> Optional[set[str]]:
    """The open flags as a set; None for a record that is not an open or carries no flags (a
    missing value: ``evt.is_open_read`` & co must not default to true on it)."""
    if event_type(ev) not in OPEN_TYPES:
        return None
    flags = _flags_str(ev)
    return set(flags.split("|")) if flags else None


def _is_open_read(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    f = _flagset(ev)
    return None if f is None else ("O_RDWR" in f or "O_WRONLY" not in f)


def _is_open_write(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    f = _flagset(ev)
    return None if f is None else bool(f & {"O_WRONLY", "O_RDWR"})


def _is_open_create(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    f = _flagset(ev)
    return None if f is None else "O_CREAT" in f or "O_TMPFILE" in f


def _is_open_exec(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    f = _flagset(ev)
    if f is None:
        return None
    if "O_CREAT" not in f:
        return False
    mode = _mode_number(ev.attr(S.FILE_MODE))  # a create without a mode says nothing
    return None if mode is None else bool(mode & 0o111)


def _exe_flags(ev: EventView) -> Optional[str]:
    """execve's flags as libs prints them; None (not "0") when the record carries neither
    fact, so ``not evt.arg.flags contains EXE_...`` is not true on a record that says nothing."""
    flags = []
    known = False
    for key, word in ((S.PROCESS_EXE_FROM_MEMFD, "EXE_FROM_MEMFD"),
                      (S.PROCESS_EXE_UPPER_LAYER, "EXE_UPPER_LAYER")):
        v = ev.attr(key)
        known = known or isinstance(v, bool)
        if v is True:
            flags.append(word)
    if not known:
        return None
    return "|".join(flags) if flags else "0"


# libs' chmod_mode table, in its order: evt.arg.mode of chmod/fchmod/fchmodat prints the names
# of the bits set, joined by '|' (evt.rawarg.mode is the number)
_MODE_BITS = (("S_IXOTH", 0o1), ("S_IWOTH", 0o2), ("S_IROTH", 0o4), ("S_IXGRP", 0o10),
              ("S_IWGRP", 0o20), ("S_IRGRP", 0o40), ("S_IXUSR", 0o100), ("S_IWUSR", 0o200),
              ("S_IRUSR", 0o400), ("S_ISVTX", 0o1000), ("S_ISGID", 0o2000), ("S_ISUID", 0o4000))
_CHMODS = frozenset({"chmod", "fchmod", "fchmodat", "fchmodat2"})


def _mode_number(raw: Any) -> Optional[int]:
    """file.mode ("0644", the agent's octal text, or a number) as an int."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw:
        try:
            return int(raw, 8)
        except ValueError:
            return None
    return None


def _mode_names(mode: int) -> str:
    names = [name for name, bit in _MODE_BITS if mode & bit]
    return "|".join(names) if names else str(mode)


def _user_of(ev: EventView, uid: Any) -> Any:
    """setuid's target uid as libs resolves PT_UID for evt.arg.uid: the user's name when known
    (root for 0; the process's own name when it sets its own uid), else the number."""
    n = as_int(uid)
    if n is None:
        return uid
    if n == 0:
        return "root"
    if n == as_int(ev.attr(S.PROCESS_USER_ID)):
        name = ev.attr(S.PROCESS_USER_NAME)
        if isinstance(name, str) and name:
            return name
    return str(n)


# evt.arg.<name>: which attribute holds that syscall argument, by event type family.
_ARGS: dict[str, tuple[tuple[frozenset[str], str], ...]] = {}


def _arg_map(name: str, *pairs: tuple[frozenset[str], str]) -> None:
    _ARGS[name] = pairs


_ANY: frozenset[str] = frozenset()
_LINKS = frozenset({"link", "linkat"})
_SYMLINKS = frozenset({"symlink", "symlinkat"})
_RENAMES = frozenset({"rename", "renameat", "renameat2"})
_DUPS = frozenset({"dup", "dup2", "dup3"})
_EXECS = frozenset({"execve", "execveat"})
_SETUIDS = frozenset({"setuid", "setreuid", "setresuid", "setfsuid"})
_arg_map("flags", (OPEN_TYPES, S.FILE_OPEN_FLAGS), (frozenset({"mount"}), S.MOUNT_FLAGS),
         (frozenset({"unshare", "clone", "clone3", "setns"}), S.NAMESPACE_FLAGS))
_arg_map("request", (frozenset({"ptrace"}), S.PTRACE_REQUEST))
_arg_map("domain", (frozenset({"socket", "socketpair"}), S.SOCKET_FAMILY))
_arg_map("type", (frozenset({"socket", "socketpair"}), S.SOCKET_TYPE),
         (frozenset({"mount"}), S.MOUNT_FSTYPE))
_arg_map("proto", (frozenset({"socket"}), S.SOCKET_PROTOCOL))
_arg_map("target", (_SYMLINKS, S.FILE_SYMLINK_TARGET))
_arg_map("linkpath", (_SYMLINKS, S.FILE_PATH))
_arg_map("oldpath", (_LINKS | _RENAMES, S.FILE_PATH))
_arg_map("newpath", (_LINKS | _RENAMES, S.FILE_TARGET_PATH))
_arg_map("name", (frozenset({"init_module", "finit_module", "delete_module"}), S.MODULE_NAME),
         (frozenset({"memfd_create"}), S.MEMFD_NAME), (_ANY, S.FILE_PATH))
_arg_map("path", (_ANY, S.FILE_PATH))
_arg_map("filename", (_EXECS, S.PROCESS_EXECUTABLE_PATH), (_ANY, S.FILE_PATH))
_arg_map("pathname", (_ANY, S.FILE_PATH))
_arg_map("mode", (_ANY, S.FILE_MODE))
_arg_map("uid", (_ANY, S.NEW_UID))
_arg_map("gid", (_ANY, S.NEW_GID))
_arg_map("cmd", (frozenset({"bpf"}), S.BPF_COMMAND))
_arg_map("pid", (_ANY, S.TARGET_PID))
_arg_map("sig", (_ANY, S.SIGNAL))
_arg_map("oldfd", (_DUPS, S.DUP_OLD_FD))
_arg_map("newfd", (_DUPS, S.DUP_NEW_FD))
_arg_map("fd", (_DUPS, S.DUP_OLD_FD), (_ANY, S.FILE_FD))
_arg_map("res", (_ANY, S.SYSCALL_RET))
_arg_map("res_or_fd", (_ANY, S.SYSCALL_RET))
_arg_map("dev", (frozenset({"mount"}), S.MOUNT_SOURCE))
_arg_map("dir", (frozenset({"mount", "umount", "umount2"}), S.MOUNT_TARGET))
_arg_map("opcode", (_ANY, S.IO_URING_OPCODE))


def _evt_arg(ev: EventView, arg: Optional[str]) -> Any:
    if arg is None:
        return None
    if arg == "flags" and event_type(ev) in _EXECS:
        return _exe_flags(ev)
    etype = event_type(ev) or ""
    for types, key in _ARGS.get(arg, ()):
        if not types or etype in types:
            return ev.attr(key)
    return None


def _evt_arg_resolved(ev: EventView, arg: Optional[str]) -> Any:
    """evt.arg: the resolved text libs prints (mode bit names of a chmod, user names of a
    setuid); evt.rawarg keeps the raw value."""
    v = _evt_arg(ev, arg)
    if v is None:
        return None
    if arg == "mode" and event_type(ev) in _CHMODS:
        n = _mode_number(v)
        return v if n is None else _mode_names(n)
    if arg == "uid" and event_type(ev) in _SETUIDS:
        return _user_of(ev, v)
    return v


def _evt_rawarg(ev: EventView, arg: Optional[str]) -> Any:
    v = _evt_arg(ev, arg)
    if arg == "mode" and v is not None:
        n = _mode_number(v)
        return v if n is None else n
    return v


def _evt_arg_ok(arg: Optional[str]) -> Optional[str]:
    if arg is None:
        return "needs an argument name (evt.arg.flags or evt.arg[flags])"
    if arg not in _ARGS:
        return "this syscall argument is not provided by the otelguard agent"
    return None


_ARG_KEYS = tuple(sorted({key for pairs in _ARGS.values() for _t, key in pairs}))


def _evt_args(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    parts = []
    for name in ("domain", "type", "flags", "request", "target", "linkpath", "oldpath",
                 "newpath", "cmd", "pid", "uid", "mode"):
        v = _evt_arg_resolved(ev, name)
        if v not in (None, "", "0") or (name == "flags" and v not in (None, "", "0")):
            parts.append(f"{name}={v}")
    return " ".join(parts) if parts else None


def _time_ns(ev: EventView) -> int:
    return int(ev.record.time_unix_nano or ev.record.observed_time_unix_nano or 0)


def _evt_time(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    ns = _time_ns(ev)
    if not ns:
        return None
    return time.strftime("%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}"


def _evt_iso(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    ns = _time_ns(ev)
    if not ns:
        return None
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
            + f".{ns % 1_000_000_000:09d}Z")


def _evt_datetime(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    ns = _time_ns(ev)
    if not ns:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // 1_000_000_000))


define("evt.type", T.STR, f"{S.SYSCALL_NAME}, else derived from event_name",
       lambda ev, _a: event_type(ev), (S.SYSCALL_NAME,))
define("syscall.type", T.STR, "alias of evt.type", lambda ev, _a: event_type(ev), (S.SYSCALL_NAME,))
define("evt.dir", T.STR, "'>' for procexit (an enter-only event), else '<' (syscall exits)",
       _evt_dir)
define("evt.res", T.STR, f"'SUCCESS' or {S.ERROR_TYPE} / errno name of {S.SYSCALL_RET}", _res,
       (S.SYSCALL_RET, S.ERROR_TYPE))
define("evt.rawres", T.NUM, S.SYSCALL_RET, lambda ev, _a: syscall_ret(ev), (S.SYSCALL_RET,))
define("evt.failed", T.BOOL, f"{S.SYSCALL_RET} < 0",
       lambda ev, _a: None if syscall_ret(ev) is None else (syscall_ret(ev) or 0) < 0,
       (S.SYSCALL_RET,))
define("evt.is_open_read", T.BOOL, f"{S.FILE_OPEN_FLAGS} has O_RDONLY/O_RDWR", _is_open_read,
       (S.FILE_OPEN_FLAGS,))
define("evt.is_open_write", T.BOOL, f"{S.FILE_OPEN_FLAGS} has O_WRONLY/O_RDWR", _is_open_write,
       (S.FILE_OPEN_FLAGS,))
define("evt.is_open_create", T.BOOL, f"{S.FILE_OPEN_FLAGS} has O_CREAT/O_TMPFILE", _is_open_create,
       (S.FILE_OPEN_FLAGS,))
define("evt.is_open_exec", T.BOOL, f"O_CREAT with an executable {S.FILE_MODE}", _is_open_exec,
       (S.FILE_OPEN_FLAGS, S.FILE_MODE))
define("evt.arg", T.STR, "syscall argument by name, from the attribute of that event type, "
       "resolved as libs prints it (chmod mode: S_I* bit names; setuid uid: the user name when "
       "known)", _evt_arg_resolved, _ARG_KEYS, arg="required", arg_ok=_evt_arg_ok)
define("evt.rawarg", T.STR, "as evt.arg, unresolved (mode: the number)", _evt_rawarg, _ARG_KEYS,
       arg="required", arg_ok=_evt_arg_ok)
define("evt.args", T.STR, "the syscall arguments the record carries, rendered", _evt_args,
       _ARG_KEYS)
define("evt.time", T.STR, "time_unix_nano as HH:MM:SS.ns (UTC)", _evt_time)
define("evt.time.iso8601", T.STR, "time_unix_nano, ISO 8601 UTC", _evt_iso)
define("evt.datetime", T.STR, "time_unix_nano as YYYY-MM-DD HH:MM:SS (UTC)", _evt_datetime)
define("evt.rawtime", T.NUM, "time_unix_nano", lambda ev, _a: _time_ns(ev) or None)
define("evt.num", T.NUM, "record sequence number in this engine (starts at 1)",
       lambda ev, _a: ev.num)
define("evt.hostname", T.STR, S.HOST_NAME, ResourceField(S.HOST_NAME))
define("evt.source", T.STR, "'syscall'", lambda ev, _a: "syscall")
unavailable("evt.buffer", T.STR, "records carry no I/O buffer: the only payload the sensor reads "
            "is the first 512 bytes a process sends to a DNS port, parsed into dns.question.name "
            "and otelguard.dns.question.type in the agent, and read/recv syscalls are not traced")
