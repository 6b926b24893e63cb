"""The one table from Falco field names to our OTel attributes (or derivations of them).

Rules are written against Falco's fields (``proc.name``, ``fd.sip``, ``k8s.ns.name``); records
carry OTel semantic-convention keys (DESIGN.md §4). Every Falco field the engine understands is a
:class:`FieldSpec` in :data:`FIELDS`; the compiler refuses (and reports, naming the field) any
field that is not here or is declared ``available=False``, so a rule never silently matches on
data we do not have. Extractors return ``None`` for "missing", which every operator treats as
"does not match", as Falco does.

Cost: an :class:`EventView` reads only the attributes asked for, each at the position its
event name's earlier records had it (one upb element access, verified by key); absent keys are
proven absent from the record's wire bytes (one serialisation, only when a rule asks for a key
the record lacks). Values and fields are computed at most once per record (cached in the view),
so twenty rules asking for ``proc.name`` pay once.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Optional, Union

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.processors.otlp import from_any

IPAddr = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
FieldValue = Union[str, int, bool, IPAddr, tuple[str, ...], None]

COMM_LEN = 15  # Falco's proc.name is the kernel comm: 15 characters
_MISSING: Any = object()


class FieldType(Enum):
    STR = "string"
    NUM = "number"
    BOOL = "bool"
    IP = "ipaddr"  # compared to IPs, or contained in CIDRs
    NET = "ipnet"  # fd.net & co: "in this CIDR"; the value is the tuple of candidate IPs
    MULTI = "multi"  # proc.aname without index: any of the values (tuple) matches
    LIST = "list"  # a list field: `in` = all in set, `intersects` = any in set


class AttrLayouts:
    """Where each attribute key sat in earlier records, per event name (one per engine).

    A producer writes the records of one event type with the same keys in the same order, so the
    position a key had in the last fully indexed record of that event name is, almost always,
    where it is now: reading it there is one element access and one key comparison instead of a
    pass over ~30 attributes (upb builds a Python object for every element touched, ~0.2-0.4 µs
    each). Positions are hints only; every hit is verified against the key. Duplicate keys are
    not allowed in OTLP; if a record has them anyway, a hit reads the one at the remembered
    position where a full read takes the last. Bounded: at most ``max_events`` event names and
    ``max_keys`` keys each (beyond that, no new hints are kept).
    """

    def __init__(self, max_events: int = 256, max_keys: int = 256) -> None:
        self.max_events = max_events
        self.max_keys = max_keys
        self._by_event: dict[str, dict[str, int]] = {}

    def for_event(self, name: str) -> dict[str, int]:
        layout = self._by_event.get(name)
        if layout is None:
            layout = {}
            if len(self._by_event) < self.max_events:
                self._by_event[name] = layout
        return layout

    def learn(self, layout: dict[str, int], index: dict[str, int]) -> None:
        if len(layout) + len(index) <= self.max_keys:
            layout.update(index)
        else:
            for k, i in index.items():
                if k in layout or len(layout) < self.max_keys:
                    layout[k] = i


def _value(av: AnyValue) -> Any:
    """``from_any`` for the values rules read, without ``WhichOneof`` where a non-default member
    read proves the case (upb's ``WhichOneof`` costs more than the read): arrays of strings are
    the common list (command args, ancestors, capabilities)."""
    v: Any = av.string_value
    if v:
        return v
    v = av.int_value
    if v:
        return v
    kind = av.WhichOneof("value")
    if kind == "array_value":
        out = []
        for x in av.array_value.values:
            s = x.string_value
            out.append(s if s else _value(x))
        return out
    if kind == "bool_value":
        return av.bool_value
    if kind == "int_value":
        return 0
    if kind == "string_value":
        return ""
    return from_any(av)


_TOKENS: dict[str, bytes] = {}


def _key_token(key: str) -> bytes:
    """The wire bytes a KeyValue with this key necessarily contains (field 1, length, UTF-8)."""
    tok = _TOKENS.get(key)
    if tok is None:
        raw = key.encode()
        n, size = len(raw), bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            size.append(byte | (0x80 if n else 0))
            if not n:
                break
        tok = b"\n" + bytes(size) + raw
        if len(_TOKENS) < 4096:
            _TOKENS[key] = tok
    return tok


class EventView:
    """One record seen through Falco's eyes: resource + record attributes + engine state.

    ``res`` is the resource attribute dict shared by every record of a ResourceLogs (built once
    per Resource by the engine). Record attributes are read one key at a time, never all at once:
    a key is looked for at the position its event name's :class:`AttrLayouts` remembers (verified);
    a key not there is proven absent by the record's wire bytes lacking its key token (one C-speed
    serialisation per record, only when needed), and only otherwise are all keys indexed (once
    per record, later duplicates winning, as before). Values are converted on first use and kept.
    """

    __slots__ = ("record", "res", "num", "state", "cache", "event_name", "_kvs", "_vals",
                 "_layout", "_layouts", "_index", "_wire")

    def __init__(self, record: LogRecord, res: dict[str, Any], num: int, state: Any = None,
                 layouts: Optional[AttrLayouts] = None) -> None:
        self.record = record
        self.res = res
        self.num = num
        self.state = state
        self.cache: dict[str, Any] = {}
        self.event_name: str = record.event_name
        self._kvs = record.attributes
        self._vals: dict[str, Any] = {}
        self._layouts = layouts
        layout = None if layouts is None else layouts._by_event.get(self.event_name)
        if layout is None:
            layout = {} if layouts is None else layouts.for_event(self.event_name)
        self._layout: dict[str, int] = layout
        self._index: Optional[dict[str, int]] = None
        self._wire: Optional[bytes] = None

    def attr(self, key: str) -> Any:
        """A record attribute as a Python value, or None."""
        vals = self._vals
        v = vals.get(key, _MISSING)
        if v is not _MISSING:
            return v
        if self._index is None:
            i = self._layout.get(key)
            if i is not None:
                try:
                    kv = self._kvs[i]
                except IndexError:
                    pass
                else:
                    if kv.key == key:
                        # a non-default member read proves the oneof's case; WhichOneof costs
                        # more than the read itself in upb
                        av = kv.value
                        v = av.string_value
                        if not v:
                            v = av.int_value
                            if not v:
                                v = _value(av)
                        vals[key] = v
                        return v
        v = vals[key] = self._lookup(key)
        return v

    def _lookup(self, key: str) -> Any:
        index = self._index
        if index is None:
            wire = self._wire
            if wire is None:
                wire = self._wire = self.record.SerializeToString()
            tok = _TOKENS.get(key)
            if (tok if tok is not None else _key_token(key)) not in wire:
                return None  # exact: a present key's token is always in the record's bytes
            index = self._index = {kv.key: i for i, kv in enumerate(self._kvs)}
            if self._layouts is not None:
                self._layouts.learn(self._layout, index)
            else:
                self._layout.update(index)
        i = index.get(key)
        return None if i is None else _value(self._kvs[i].value)

    def field(self, spec: "FieldSpec", arg: Optional[str]) -> Any:
        """Field value with per-record caching (the key includes the argument)."""
        key = spec.name if arg is None else f"{spec.name}[{arg}]"
        cache = self.cache
        v = cache.get(key, _MISSING)
        if v is _MISSING:
            v = cache[key] = spec.extract(self, arg)
        return v


Extractor = Callable[[EventView, Optional[str]], Any]
_ANY_OF_WITHOUT_INDEX = frozenset({"proc.aname", "proc.apid"})


@dataclass(frozen=True)
class FieldSpec:
    """A Falco field: its type, how we derive it, and which record attributes are evidence."""

    name: str
    type: FieldType
    source: str  # human text for docs/coverage: the attribute or the derivation
    extract: Extractor
    keys: tuple[str, ...] = ()  # record attribute keys copied to a detection as evidence
    arg: str = "none"  # "none" | "optional" | "required" | "index"
    available: bool = True  # False: known to Falco, not provided by our agent
    arg_ok: Optional[Callable[[Optional[str]], Optional[str]]] = None  # -> reason if unsupported

    def type_for(self, arg: Optional[str]) -> FieldType:
        """Indexed fields (proc.aname) without an index mean "any of them"."""
        if self.arg == "index" and arg is None and self.name in _ANY_OF_WITHOUT_INDEX:
            return FieldType.MULTI
        return self.type

    def unsupported_reason(self, arg: Optional[str]) -> Optional[str]:
        """None when ``name[arg]`` can be evaluated, else why not (named in warnings)."""
        if not self.available:
            return f"field {self.name} is not provided by the otelguard agent ({self.source})"
        if self.arg == "none" and arg is not None:
            return f"field {self.name} takes no argument"
        if self.arg == "required" and arg is None:
            return f"field {self.name} needs an argument"
        if self.arg == "index" and arg is not None and not arg.isdigit():
            return f"field {self.name} needs a numeric index, got [{arg}]"
        if self.arg_ok is not None:
            reason = self.arg_ok(arg)
            if reason is not None:
                return f"field {self.name}[{arg}]: {reason}" if arg is not None else \
                    f"field {self.name}: {reason}"
        return None


# --- small derivations ---------------------------------------------------------------------------

class AttrField:
    """Extractor of a field that is one record attribute as is (the compiler reads it through
    :meth:`EventView.attr` directly, whose own per-record cache suffices)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, ev: EventView, _arg: Optional[str]) -> Any:
        return ev.attr(self.key)


class ResourceField:
    """Extractor of a field that is one resource attribute as is."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, ev: EventView, _arg: Optional[str]) -> Any:
        return ev.res.get(self.key)


def _a(key: str) -> Extractor:
    return AttrField(key)


def _r(key: str) -> Extractor:
    return ResourceField(key)


def as_int(v: Any) -> Optional[int]:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            return None
    if isinstance(v, float):
        return int(v)
    return None


def _comm(name: Any) -> Optional[str]:
    return name[:COMM_LEN] if isinstance(name, str) and name else None


def _tokens(cmdline: Any) -> list[str]:
    return cmdline.split() if isinstance(cmdline, str) else []


def _args_list(ev: EventView) -> Optional[list[str]]:
    args = ev.attr(S.PROCESS_COMMAND_ARGS)
    if isinstance(args, list):
        return [str(a) for a in args]
    toks = _tokens(ev.attr(S.PROCESS_COMMAND_LINE))
    return toks or None


def _proc_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    # the kernel comm when the agent sent it: the name exec'ed (a busybox applet's link name),
    # never racing the /proc/<pid>/exe read that process.executable.name depends on
    name = ev.attr(S.PROCESS_COMM) or ev.attr(S.PROCESS_EXECUTABLE_NAME)
    if not name:
        args = _args_list(ev)
        if args:
            name = os.path.basename(args[0])
    return _comm(name)


def _proc_args(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    args = _args_list(ev)
    return None if args is None else " ".join(args[1:])


def _proc_cmdline(ev: EventView, arg: Optional[str]) -> Optional[str]:
    name = ev.field(FIELDS["proc.name"], None)
    if name is None:
        return None
    rest = _proc_args(ev, arg)
    return f"{name} {rest}" if rest else name


def _proc_exe(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    args = _args_list(ev)
    if args:
        return args[0]
    v = ev.attr(S.PROCESS_EXECUTABLE_PATH)
    return v if isinstance(v, str) else None


def _pname(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    # the parent's comm (first ancestor, as the agent sends them) like proc.name; else its
    # executable name, else the first word of its command line
    anc = ev.attr(S.PROCESS_ANCESTORS)
    name = anc[0] if isinstance(anc, list) and anc else None
    if not name:
        name = ev.attr(S.PROCESS_PARENT_EXECUTABLE_NAME)
    if not name:
        toks = _tokens(ev.attr(S.PROCESS_PARENT_COMMAND_LINE))
        name = os.path.basename(toks[0]) if toks else None
    return _comm(name)


def _pcmdline(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    pname = ev.field(FIELDS["proc.pname"], None)
    toks = _tokens(ev.attr(S.PROCESS_PARENT_COMMAND_LINE))
    if pname is None or not toks:
        return None
    return " ".join([pname] + toks[1:])


def _pexe(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    toks = _tokens(ev.attr(S.PROCESS_PARENT_COMMAND_LINE))
    if toks:
        return toks[0]
    v = ev.attr(S.PROCESS_PARENT_EXECUTABLE_PATH)
    return v if isinstance(v, str) else None


def _ancestors(ev: EventView) -> list[str]:
    anc = ev.attr(S.PROCESS_ANCESTORS)
    names = [str(a)[:COMM_LEN] for a in anc] if isinstance(anc, list) else []
    if not names:
        p = ev.field(FIELDS["proc.pname"], None)
        names = [p] if p else []
    return names


def _aname(ev: EventView, arg: Optional[str]) -> Any:
    if arg is None:
        return tuple(_ancestors(ev)) or None
    n = int(arg)
    if n == 0:
        return ev.field(FIELDS["proc.name"], None)
    if n == 1:
        return ev.field(FIELDS["proc.pname"], None)
    anc = _ancestors(ev)
    return anc[n - 1] if n - 1 < len(anc) else None


def _apid(ev: EventView, arg: Optional[str]) -> Any:
    pids = ev.attr(S.PROCESS_ANCESTOR_PIDS)
    pids = [int(p) for p in pids] if isinstance(pids, list) else []
    if not pids:
        ppid = as_int(ev.attr(S.PROCESS_PARENT_PID))
        pids = [ppid] if ppid is not None else []
    if arg is None:
        return tuple(str(p) for p in pids) or None
    n = int(arg)
    if n == 0:
        return as_int(ev.attr(S.PROCESS_PID))
    return pids[n - 1] if n - 1 < len(pids) else None


def _aexepath(ev: EventView, arg: Optional[str]) -> Any:
    n = int(arg or 0)
    if n == 0:
        return ev.attr(S.PROCESS_EXECUTABLE_PATH)
    if n == 1:
        return ev.attr(S.PROCESS_PARENT_EXECUTABLE_PATH)
    return None


def _aexe(ev: EventView, arg: Optional[str]) -> Any:
    n = int(arg or 0)
    if n == 0:
        return ev.field(FIELDS["proc.exe"], None)
    if n == 1:
        return ev.field(FIELDS["proc.pexe"], None)
    return None


def _only_first_two(arg: Optional[str]) -> Optional[str]:
    if arg is None or not arg.isdigit():
        return "needs a numeric index"
    if int(arg) > 1:
        return f"index [{arg}] beyond the parent: the agent records ancestor names, not paths"
    return None


def _cwd(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    v = ev.attr(S.PROCESS_WORKING_DIRECTORY)
    if not isinstance(v, str) or not v:
        return None
    return v if v.endswith("/") else v + "/"  # Falco's proc.cwd ends with '/'


def _duration(ev: EventView, _arg: Optional[str]) -> Optional[int]:
    v = as_int(ev.attr(S.PROCESS_DURATION_NS))
    if v is not None:
        return v
    created = ev.attr(S.PROCESS_CREATION_TIME)
    if isinstance(created, str) and created and ev.record.time_unix_nano:
        from datetime import datetime

        try:
            start = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
        return max(0, ev.record.time_unix_nano - int(start * 1e9))
    return None


def _caps(key: str) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Optional[str]:
        v = ev.attr(key)
        if isinstance(v, list):
            return " ".join(str(c) for c in v)
        return v if isinstance(v, str) else None
    return get


def _loginuid(ev: EventView, _arg: Optional[str]) -> Optional[int]:
    v = as_int(ev.attr(S.PROCESS_LOGIN_UID))
    if v is None:
        return None
    return -1 if v in (4294967295, -1) else v


def _loginname(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    luid = _loginuid(ev, None)
    if luid is None or luid < 0:
        return None
    if luid == 0:
        return "root"
    if luid == as_int(ev.attr(S.PROCESS_USER_ID)):
        v = ev.attr(S.PROCESS_USER_NAME)
        return v if isinstance(v, str) else None
    return None


# --- evt.* ---------------------------------------------------------------------------------------

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


def event_type(ev: EventView) -> Optional[str]:
    """Falco's evt.type: the syscall name, or a stand-in for records that are not syscalls."""
    v = ev.cache.get("evt.type", _MISSING)
    if v is _MISSING:
        name = ev.attr(S.SYSCALL_NAME)
        v = ev.cache["evt.type"] = name if isinstance(name, str) and name else \
            _EVENT_TYPE_BY_NAME.get(ev.event_name)
    return v  # type: ignore[no-any-return]  # cache is Any: str | None


def _ret(ev: EventView) -> Optional[int]:
    return as_int(ev.attr(S.SYSCALL_RET))


def _res(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    ret = _ret(ev)
    err = ev.attr(S.ERROR_TYPE)
    if ret is None:
        return err if isinstance(err, str) and err else None
    if ret >= 0:
        return "SUCCESS"
    if isinstance(err, str) and err:
        return err
    return errno.errorcode.get(-ret, str(ret))


_OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})


def _flags_str(ev: EventView) -> str:
    v = ev.attr(S.FILE_OPEN_FLAGS)
    return v if isinstance(v, str) else ""


def _flagset(ev: EventView) -> Optional[set[str]]:
    if event_type(ev) not in _OPEN_TYPES:
        return None
    return set(_flags_str(ev).split("|"))


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
    raw = ev.attr(S.FILE_MODE)
    try:
        mode = raw if isinstance(raw, int) else int(str(raw), 8) if raw is not None else 0
    except ValueError:
        mode = 0
    return "O_CREAT" in f and bool(mode & 0o111)


def _exe_flags(ev: EventView) -> Optional[str]:
    flags = []
    for key, word in ((S.PROCESS_EXE_FROM_MEMFD, "EXE_FROM_MEMFD"),
                      (S.PROCESS_EXE_UPPER_LAYER, "EXE_UPPER_LAYER")):
        if ev.attr(key) is True:
            flags.append(word)
    return "|".join(flags) if flags else "0"


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
_arg_map("flags", (_OPEN_TYPES, S.FILE_OPEN_FLAGS), (frozenset({"mount"}), S.MOUNT_FLAGS),
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
        v = _evt_arg(ev, name)
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


# --- fd.* ----------------------------------------------------------------------------------------

_FILE_EVENTS = frozenset({
    S.EV_FILE_OPEN, S.EV_FILE_UNLINK, S.EV_FILE_RENAME, S.EV_FILE_CHMOD, S.EV_FILE_CHOWN,
    S.EV_FILE_SYMLINK, S.EV_FILE_LINK, S.EV_FILE_MKDIR, S.EV_FILE_TRUNCATE, S.EV_MEMFD_CREATE,
})
_NET_EVENTS = frozenset({
    S.EV_NETWORK_SOCKET, S.EV_NETWORK_CONNECT, S.EV_NETWORK_ACCEPT, S.EV_NETWORK_BIND,
    S.EV_NETWORK_LISTEN, S.EV_NETWORK_CLOSE, S.EV_DNS_QUERY,
})
_SERVER_SIDE = frozenset({S.EV_NETWORK_ACCEPT, S.EV_NETWORK_BIND, S.EV_NETWORK_LISTEN})


def _fd_kind(ev: EventView) -> Optional[str]:
    """'file', 'directory', 'ipv4', 'ipv6', 'unix', 'packet', 'pipe', 'memfd' or None."""
    v = ev.cache.get("fd.kind", _MISSING)
    if v is not _MISSING:
        return v  # type: ignore[no-any-return]  # cache is Any: str | None
    name = ev.event_name
    kind: Optional[str] = None
    if name in _FILE_EVENTS:
        kind = "directory" if name == S.EV_FILE_MKDIR else "memfd" if name == S.EV_MEMFD_CREATE \
            else "file"
    elif name in _NET_EVENTS or (name == S.EV_DUP and ev.attr(S.DUP_OLD_FD_TYPE) == "socket"):
        kind = _net_kind(ev)
    elif name == S.EV_DUP:
        t = ev.attr(S.DUP_OLD_FD_TYPE)
        kind = {"file": "file", "pipe": "pipe", "directory": "directory"}.get(str(t))
    ev.cache["fd.kind"] = kind
    return kind


def _net(ev: EventView, key: str) -> Any:
    """A socket attribute of the record; for dup records, of the dup'ed socket (stage state)."""
    v = ev.attr(key)
    if v is None and ev.event_name == S.EV_DUP and ev.state is not None:
        v = ev.state.socket_attr(ev, key)
    return v


def _net_kind(ev: EventView) -> Optional[str]:
    fam = _net(ev, S.SOCKET_FAMILY)
    if fam == "AF_PACKET":
        return "packet"
    if fam == "AF_UNIX" or _net(ev, S.NETWORK_TRANSPORT) == "unix":
        return "unix"
    ntype = _net(ev, S.NETWORK_TYPE)
    if ntype in ("ipv4", "ipv6"):
        return str(ntype)
    if fam == "AF_INET":
        return "ipv4"
    if fam == "AF_INET6":
        return "ipv6"
    for key in (S.NETWORK_PEER_ADDRESS, S.NETWORK_LOCAL_ADDRESS):
        ip = _ip(_net(ev, key))
        if ip is not None:
            return "ipv4" if ip.version == 4 else "ipv6"
    return None


_TYPECHAR = {"file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u",
             "packet": "p", "pipe": "p", "memfd": "m"}


def _fd_type(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    return None if k is None else "pipe" if k == "pipe" else k


def _fd_typechar(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    return None if k is None else _TYPECHAR.get(k)


def _is_net(ev: EventView) -> bool:
    return _fd_kind(ev) in ("ipv4", "ipv6")


_IPS: dict[str, Optional[IPAddr]] = {}  # parsed addresses (peers repeat); bounded, cleared


def _ip(v: Any) -> Optional[IPAddr]:
    """Parse once per distinct string: ipaddress parsing is ~20 Python calls."""
    if not isinstance(v, str) or not v:
        return None
    ip = _IPS.get(v, _MISSING)
    if ip is _MISSING:
        try:
            ip = ipaddress.ip_address(v.strip("[]"))
        except ValueError:
            ip = None
        if len(_IPS) >= 8192:
            _IPS.clear()
        _IPS[v] = ip
    return ip  # type: ignore[no-any-return]  # _MISSING is Any: an IP or None


def _endpoints(ev: EventView) -> tuple[Optional[IPAddr], Optional[int], Optional[IPAddr], Optional[int]]:
    """(client ip, client port, server ip, server port) of the record's socket."""
    v = ev.cache.get("fd.endpoints", _MISSING)
    if v is not _MISSING:
        return v  # type: ignore[no-any-return]  # cache is Any: that tuple
    peer, pport = _ip(_net(ev, S.NETWORK_PEER_ADDRESS)), as_int(_net(ev, S.NETWORK_PEER_PORT))
    local, lport = _ip(_net(ev, S.NETWORK_LOCAL_ADDRESS)), as_int(_net(ev, S.NETWORK_LOCAL_PORT))
    if ev.event_name in _SERVER_SIDE:
        out = (peer, pport, local, lport)
    else:
        out = (local, lport, peer, pport)
    ev.cache["fd.endpoints"] = out
    return out


def _local_remote(ev: EventView) -> tuple[Optional[IPAddr], Optional[int], Optional[IPAddr], Optional[int]]:
    return (_ip(_net(ev, S.NETWORK_LOCAL_ADDRESS)), as_int(_net(ev, S.NETWORK_LOCAL_PORT)),
            _ip(_net(ev, S.NETWORK_PEER_ADDRESS)), as_int(_net(ev, S.NETWORK_PEER_PORT)))


def _ep(index: int, local: bool = False) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Any:
        if not _is_net(ev):
            return None
        return (_local_remote(ev) if local else _endpoints(ev))[index]
    return get


def _fd_ips(ev: EventView, _arg: Optional[str]) -> Optional[tuple[IPAddr, ...]]:
    if not _is_net(ev):
        return None
    c, _cp, s, _sp = _endpoints(ev)
    ips = tuple(ip for ip in (c, s) if ip is not None)
    return ips or None


def _fd_ip_of(index: int, local: bool = False) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Optional[tuple[IPAddr, ...]]:
        if not _is_net(ev):
            return None
        ip = (_local_remote(ev) if local else _endpoints(ev))[index]
        return (ip,) if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None
    return get


def _fd_port(ev: EventView, _arg: Optional[str]) -> Optional[tuple[str, ...]]:
    if not _is_net(ev):
        return None
    _c, cp, _s, sp = _endpoints(ev)
    ports = tuple(str(p) for p in (cp, sp) if p is not None)
    return ports or None


def _fmt_ep(ip: Optional[IPAddr], port: Optional[int]) -> str:
    host = "" if ip is None else str(ip) if ip.version == 4 else f"[{ip}]"
    return f"{host}:{'' if port is None else port}"


def _fd_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    if k is None:
        return None
    if k in ("ipv4", "ipv6"):
        c, cp, s, sp = _endpoints(ev)
        if c is None and s is None:
            return None
        return f"{_fmt_ep(c, cp)}->{_fmt_ep(s, sp)}"
    if k == "memfd":
        name = ev.attr(S.MEMFD_NAME)
        return f"memfd:{name}" if isinstance(name, str) else None
    v = ev.attr(S.FILE_PATH)
    if v is None and k == "unix":
        v = ev.attr(S.NETWORK_PEER_ADDRESS)
    return v if isinstance(v, str) else None


def _fd_nameraw(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    raw = ev.attr(S.FILE_RAW_PATH)
    if isinstance(raw, str):
        return raw
    return _fd_name(ev, None)


def _fd_directory(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if _fd_kind(ev) not in ("file", "directory"):
        return None
    d = ev.attr(S.FILE_DIRECTORY)
    if isinstance(d, str) and d:
        return d
    p = ev.attr(S.FILE_PATH)
    return os.path.dirname(p) or "/" if isinstance(p, str) and p else None


def _fd_filename(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if _fd_kind(ev) not in ("file", "directory"):
        return None
    n = ev.attr(S.FILE_NAME)
    if isinstance(n, str) and n:
        return n
    p = ev.attr(S.FILE_PATH)
    return os.path.basename(p) if isinstance(p, str) and p else None


def _fd_num(ev: EventView, _arg: Optional[str]) -> Optional[int]:
    if ev.event_name == S.EV_DUP:
        return as_int(ev.attr(S.DUP_OLD_FD))
    if event_type(ev) in _OPEN_TYPES or event_type(ev) in ("socket", "accept", "accept4"):
        ret = _ret(ev)
        if ret is not None:
            return ret if ret >= 0 else -1
    return as_int(ev.attr(S.FILE_FD))


def _l4proto(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    if k not in ("ipv4", "ipv6"):
        return None
    t = _net(ev, S.NETWORK_TRANSPORT)
    if t in ("tcp", "udp", "icmp", "raw"):
        return str(t)
    st = ev.attr(S.SOCKET_TYPE)
    return {"SOCK_STREAM": "tcp", "SOCK_DGRAM": "udp", "SOCK_RAW": "raw"}.get(str(st))


def _fd_connected(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    if not _is_net(ev):
        return None
    if event_type(ev) in ("connect", "accept", "accept4"):
        return (_ret(ev) or 0) >= 0 or ev.attr(S.ERROR_TYPE) == "EINPROGRESS"
    return False  # the agent reports sendto/sendmsg only with an explicit destination


def _fd_name_changed(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    if not _is_net(ev):
        return None
    return event_type(ev) in ("sendto", "sendmsg") and ev.attr(S.NETWORK_PEER_ADDRESS) is not None


def _peer_dns_name(ev: EventView) -> Optional[str]:
    """A peer's cluster DNS name: server.address when it is a name, else the k8s Service."""
    server = ev.attr(S.SERVER_ADDRESS)
    if isinstance(server, str) and server and _ip(server) is None:
        return server
    svc = ev.attr(S.PEER_K8S_SERVICE_NAME)
    ns = ev.attr(S.PEER_K8S_NAMESPACE_NAME)
    if isinstance(svc, str) and svc and isinstance(ns, str) and ns:
        return f"{svc}.{ns}.svc.cluster.local"
    return None


def _sip_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if not _is_net(ev) or ev.event_name in _SERVER_SIDE:
        return None
    return _peer_dns_name(ev)


def _cip_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if not _is_net(ev) or ev.event_name not in _SERVER_SIDE:
        return None
    return _peer_dns_name(ev)


def _rip_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    return _peer_dns_name(ev) if _is_net(ev) else None


def _sockfamily(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    k = _fd_kind(ev)
    return "ip" if k in ("ipv4", "ipv6") else "unix" if k == "unix" else None


def _fd_is_server(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    return ev.event_name in _SERVER_SIDE if _is_net(ev) else None


# --- container.* / k8s.* -------------------------------------------------------------------------

def _container_id(ev: EventView, _arg: Optional[str]) -> str:
    if ev.res.get(S.HOST_PROCESS) is True:
        return "host"
    cid = ev.res.get(S.CONTAINER_ID)
    return cid[:12] if isinstance(cid, str) and cid else "host"


def _container_full_id(ev: EventView, _arg: Optional[str]) -> str:
    if ev.res.get(S.HOST_PROCESS) is True:
        return "host"
    cid = ev.res.get(S.CONTAINER_ID)
    return cid if isinstance(cid, str) and cid else "host"


def _split_image(ref: str) -> tuple[str, Optional[str]]:
    ref = ref.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, None


def _image_repo(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    v = ev.res.get(S.CONTAINER_IMAGE_NAME)
    return _split_image(v)[0] if isinstance(v, str) and v else None


def _image_tag(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    tags = ev.res.get(S.CONTAINER_IMAGE_TAGS)
    if isinstance(tags, list) and tags:
        return str(tags[0])
    v = ev.res.get(S.CONTAINER_IMAGE_NAME)
    return _split_image(v)[1] if isinstance(v, str) and v else None


def _image(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    repo = _image_repo(ev, None)
    if repo is None:
        return None
    tag = _image_tag(ev, None)
    return f"{repo}:{tag}" if tag else repo


def _container_name(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    if _container_id(ev, None) == "host":
        return "host"
    v = ev.res.get(S.CONTAINER_NAME) or ev.res.get(S.K8S_CONTAINER_NAME)
    return v if isinstance(v, str) else None


def _privileged(ev: EventView, _arg: Optional[str]) -> Optional[bool]:
    v = ev.res.get(S.K8S_POD_PRIVILEGED)
    return v if isinstance(v, bool) else None


def _pod_labels(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    labels = sorted((k[len(S.K8S_POD_LABEL_PREFIX):], v) for k, v in ev.res.items()
                    if k.startswith(S.K8S_POD_LABEL_PREFIX))
    return ", ".join(f"{k}:{v}" for k, v in labels) if labels else None


def _pod_label(ev: EventView, arg: Optional[str]) -> Optional[str]:
    v = ev.res.get(S.K8S_POD_LABEL_PREFIX + (arg or ""))
    return None if v is None else str(v)


def _workload(ev: EventView, _arg: Optional[str]) -> Optional[str]:
    for key in (S.K8S_DEPLOYMENT_NAME, S.K8S_STATEFULSET_NAME, S.K8S_DAEMONSET_NAME,
                S.K8S_CRONJOB_NAME, S.K8S_JOB_NAME, S.K8S_REPLICASET_NAME):
        v = ev.res.get(key)
        if isinstance(v, str) and v:
            return v
    return None


# --- otelguard extensions (fields Falco lacks, derived from the stage's bounded state) -----------

def _state(name: str) -> Extractor:
    def get(ev: EventView, _arg: Optional[str]) -> Any:
        st = ev.state
        return None if st is None else st.field(name, ev)
    return get


# --- the table -----------------------------------------------------------------------------------

def _na(reason: str) -> Extractor:
    return lambda ev, _arg: None


FIELDS: dict[str, FieldSpec] = {}


def _f(name: str, ftype: FieldType, source: str, extract: Extractor, keys: tuple[str, ...] = (),
       arg: str = "none", arg_ok: Optional[Callable[[Optional[str]], Optional[str]]] = None) -> None:
    FIELDS[name] = FieldSpec(name, ftype, source, extract, keys, arg, True, arg_ok)


def _unavailable(name: str, ftype: FieldType, reason: str, arg: str = "none") -> None:
    FIELDS[name] = FieldSpec(name, ftype, reason, _na(reason), (), arg, False)


T = FieldType
# Falco field classes. A few Falco field names (container.id, k8s.pod.name, ...) are spelled
# like OTel attribute keys; they are rule-language names, not keys, so they are built from the
# class prefix and never confused with the semconv constants they are mapped to.
_CONTAINER = "container."
_K8S = "k8s."
_PROC_KEYS = (S.PROCESS_EXECUTABLE_NAME, S.PROCESS_COMM, S.PROCESS_COMMAND_ARGS,
              S.PROCESS_COMMAND_LINE)
_PARENT_KEYS = (S.PROCESS_PARENT_EXECUTABLE_NAME, S.PROCESS_ANCESTORS,
                S.PROCESS_PARENT_COMMAND_LINE)
_NET_KEYS = (S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT, S.NETWORK_LOCAL_ADDRESS,
             S.NETWORK_LOCAL_PORT, S.NETWORK_TRANSPORT, S.NETWORK_TYPE)

# evt.*
_f("evt.type", T.STR, f"{S.SYSCALL_NAME}, else derived from event_name",
   lambda ev, _a: event_type(ev), (S.SYSCALL_NAME,))
_f("syscall.type", T.STR, "alias of evt.type", lambda ev, _a: event_type(ev), (S.SYSCALL_NAME,))
_f("evt.dir", T.STR, "'<': every record describes the syscall's exit", lambda ev, _a: "<")
_f("evt.res", T.STR, f"'SUCCESS' or {S.ERROR_TYPE} / errno name of {S.SYSCALL_RET}", _res,
   (S.SYSCALL_RET, S.ERROR_TYPE))
_f("evt.rawres", T.NUM, S.SYSCALL_RET, lambda ev, _a: _ret(ev), (S.SYSCALL_RET,))
_f("evt.failed", T.BOOL, f"{S.SYSCALL_RET} < 0",
   lambda ev, _a: None if _ret(ev) is None else (_ret(ev) or 0) < 0, (S.SYSCALL_RET,))
_f("evt.is_open_read", T.BOOL, f"{S.FILE_OPEN_FLAGS} has O_RDONLY/O_RDWR", _is_open_read,
   (S.FILE_OPEN_FLAGS,))
_f("evt.is_open_write", T.BOOL, f"{S.FILE_OPEN_FLAGS} has O_WRONLY/O_RDWR", _is_open_write,
   (S.FILE_OPEN_FLAGS,))
_f("evt.is_open_create", T.BOOL, f"{S.FILE_OPEN_FLAGS} has O_CREAT/O_TMPFILE", _is_open_create,
   (S.FILE_OPEN_FLAGS,))
_f("evt.is_open_exec", T.BOOL, f"O_CREAT with an executable {S.FILE_MODE}", _is_open_exec,
   (S.FILE_OPEN_FLAGS, S.FILE_MODE))
_f("evt.arg", T.STR, "syscall argument by name, from the attribute of that event type",
   _evt_arg, _ARG_KEYS, arg="required", arg_ok=_evt_arg_ok)
_f("evt.rawarg", T.STR, "as evt.arg", _evt_arg, _ARG_KEYS, arg="required", arg_ok=_evt_arg_ok)
_f("evt.args", T.STR, "the syscall arguments the record carries, rendered", _evt_args, _ARG_KEYS)
_f("evt.time", T.STR, "time_unix_nano as HH:MM:SS.ns (UTC)", _evt_time)
_f("evt.time.iso8601", T.STR, "time_unix_nano, ISO 8601 UTC", _evt_iso)
_f("evt.datetime", T.STR, "time_unix_nano as YYYY-MM-DD HH:MM:SS (UTC)", _evt_datetime)
_f("evt.rawtime", T.NUM, "time_unix_nano", lambda ev, _a: _time_ns(ev) or None)
_f("evt.num", T.NUM, "record sequence number in this engine (starts at 1)",
   lambda ev, _a: ev.num)
_f("evt.hostname", T.STR, S.HOST_NAME, _r(S.HOST_NAME))
_f("evt.source", T.STR, "'syscall'", lambda ev, _a: "syscall")

# proc.* / thread.*
_f("proc.name", T.STR, f"{S.PROCESS_COMM}, else {S.PROCESS_EXECUTABLE_NAME} (15 chars)", _proc_name,
   _PROC_KEYS)
_f("proc.exe", T.STR, f"{S.PROCESS_COMMAND_ARGS}[0], else {S.PROCESS_EXECUTABLE_PATH}", _proc_exe,
   (S.PROCESS_COMMAND_ARGS, S.PROCESS_EXECUTABLE_PATH))
_f("proc.exepath", T.STR, S.PROCESS_EXECUTABLE_PATH, _a(S.PROCESS_EXECUTABLE_PATH),
   (S.PROCESS_EXECUTABLE_PATH,))
_f("proc.args", T.STR, f"{S.PROCESS_COMMAND_ARGS}[1:] joined by spaces", _proc_args, _PROC_KEYS)
_f("proc.cmdline", T.STR, "proc.name + ' ' + proc.args", _proc_cmdline, _PROC_KEYS)
_f("proc.pname", T.STR, f"{S.PROCESS_ANCESTORS}[0] (comm), else "
   f"{S.PROCESS_PARENT_EXECUTABLE_NAME} (15 chars)", _pname, _PARENT_KEYS)
_f("proc.pcmdline", T.STR, f"proc.pname + arguments of {S.PROCESS_PARENT_COMMAND_LINE}",
   _pcmdline, _PARENT_KEYS)
_f("proc.pexe", T.STR, f"first word of {S.PROCESS_PARENT_COMMAND_LINE}", _pexe, _PARENT_KEYS)
_f("proc.pexepath", T.STR, S.PROCESS_PARENT_EXECUTABLE_PATH,
   _a(S.PROCESS_PARENT_EXECUTABLE_PATH), (S.PROCESS_PARENT_EXECUTABLE_PATH,))
_f("proc.aname", T.STR, f"{S.PROCESS_ANCESTORS}: [0] self, [1] parent, [N]; no index = any",
   _aname, (S.PROCESS_ANCESTORS,), arg="index")
_f("proc.apid", T.NUM, f"{S.PROCESS_ANCESTOR_PIDS}: [0] self, [1] parent; no index = any",
   _apid, (S.PROCESS_ANCESTOR_PIDS,), arg="index")
_f("proc.aexepath", T.STR, "[0] proc.exepath, [1] proc.pexepath", _aexepath,
   (S.PROCESS_PARENT_EXECUTABLE_PATH,), arg="index", arg_ok=_only_first_two)
_f("proc.aexe", T.STR, "[0] proc.exe, [1] proc.pexe", _aexe, _PARENT_KEYS, arg="index",
   arg_ok=_only_first_two)
_f("proc.pid", T.NUM, S.PROCESS_PID, _a(S.PROCESS_PID), (S.PROCESS_PID,))
_f("proc.ppid", T.NUM, S.PROCESS_PARENT_PID, _a(S.PROCESS_PARENT_PID), (S.PROCESS_PARENT_PID,))
_f("proc.vpid", T.NUM, S.PROCESS_VPID, _a(S.PROCESS_VPID), (S.PROCESS_VPID,))
_f("thread.tid", T.NUM, f"{S.PROCESS_PID} (the agent reports processes)", _a(S.PROCESS_PID),
   (S.PROCESS_PID,))
_f("proc.cwd", T.STR, f"{S.PROCESS_WORKING_DIRECTORY} with a trailing '/'", _cwd,
   (S.PROCESS_WORKING_DIRECTORY,))
_f("proc.tty", T.NUM, S.PROCESS_TTY, _a(S.PROCESS_TTY), (S.PROCESS_TTY,))
_f("proc.duration", T.NUM, f"{S.PROCESS_DURATION_NS}, else time - {S.PROCESS_CREATION_TIME}",
   _duration, (S.PROCESS_DURATION_NS, S.PROCESS_CREATION_TIME))
_f("proc.sname", T.STR, S.PROCESS_SID_EXE_NAME, _a(S.PROCESS_SID_EXE_NAME),
   (S.PROCESS_SID_EXE_NAME,))
_f("proc.sid", T.NUM, S.PROCESS_SESSION_LEADER_PID, _a(S.PROCESS_SESSION_LEADER_PID),
   (S.PROCESS_SESSION_LEADER_PID,))
_f("proc.is_exe_from_memfd", T.BOOL, S.PROCESS_EXE_FROM_MEMFD, _a(S.PROCESS_EXE_FROM_MEMFD),
   (S.PROCESS_EXE_FROM_MEMFD,))
_f("proc.is_exe_upper_layer", T.BOOL, S.PROCESS_EXE_UPPER_LAYER, _a(S.PROCESS_EXE_UPPER_LAYER),
   (S.PROCESS_EXE_UPPER_LAYER,))
_f("proc.exe_deleted", T.BOOL, S.PROCESS_EXE_DELETED, _a(S.PROCESS_EXE_DELETED),
   (S.PROCESS_EXE_DELETED,))
_f("proc.is_container_healthcheck", T.BOOL, "always false (no probe metadata)",
   lambda ev, _a: False)
_f("proc.is_container_liveness_probe", T.BOOL, "always false", lambda ev, _a: False)
_f("proc.is_container_readiness_probe", T.BOOL, "always false", lambda ev, _a: False)
_f("thread.cap_effective", T.STR, f"{S.PROCESS_CAP_EFFECTIVE} joined by spaces",
   _caps(S.PROCESS_CAP_EFFECTIVE), (S.PROCESS_CAP_EFFECTIVE,))
_f("thread.cap_permitted", T.STR, f"{S.PROCESS_CAP_PERMITTED} joined by spaces",
   _caps(S.PROCESS_CAP_PERMITTED), (S.PROCESS_CAP_PERMITTED,))
_unavailable("thread.cap_inheritable", T.STR, "inheritable capabilities are not captured")
_unavailable("proc.env", T.STR, "environment variables are never captured (DESIGN.md §7)",
             arg="optional")
_unavailable("proc.vpgid", T.NUM, "process groups are not tracked")
_unavailable("proc.vpgid.name", T.STR, "process groups are not tracked")
_unavailable("proc.vpgid.exe", T.STR, "process groups are not tracked")
_unavailable("proc.is_vpgid_leader", T.BOOL, "process groups are not tracked")
_unavailable("proc.ppid.duration", T.NUM, "the parent's start time is not captured")
_unavailable("proc.exe_ino", T.NUM, "executable inodes are not captured")
_unavailable("proc.exe_ino.ctime", T.NUM, "executable inode times are not captured")
_unavailable("proc.exe_ino.mtime", T.NUM, "executable inode times are not captured")
_unavailable("proc.exe_ino.ctime_duration_proc_start", T.NUM,
             "executable inode times are not captured")
_unavailable("proc.is_exe_writable", T.BOOL, "executable permissions are not captured")
_unavailable("proc.stdin_type", T.STR, "use proc.stdin_is_socket (otelguard extension)")

# user.* / group.*
_f("user.uid", T.NUM, S.PROCESS_USER_ID, _a(S.PROCESS_USER_ID), (S.PROCESS_USER_ID,))
_f("user.name", T.STR, S.PROCESS_USER_NAME, _a(S.PROCESS_USER_NAME), (S.PROCESS_USER_NAME,))
_f("user.loginuid", T.NUM, f"{S.PROCESS_LOGIN_UID} (-1 when unset)", _loginuid,
   (S.PROCESS_LOGIN_UID,))
_f("user.loginname", T.STR, "root for login uid 0, user.name when login uid = uid", _loginname,
   (S.PROCESS_LOGIN_UID, S.PROCESS_USER_NAME))
_unavailable("user.shell", T.STR, "the agent reads no passwd database")
_unavailable("user.homedir", T.STR, "the agent reads no passwd database")
_f("group.gid", T.NUM, S.PROCESS_GROUP_ID, _a(S.PROCESS_GROUP_ID), (S.PROCESS_GROUP_ID,))
_f("group.name", T.STR, S.PROCESS_GROUP_NAME, _a(S.PROCESS_GROUP_NAME), (S.PROCESS_GROUP_NAME,))

# fd.*
_f("fd.name", T.STR, f"{S.FILE_PATH}; sockets 'cip:cport->sip:sport' from network.*", _fd_name,
   (S.FILE_PATH,) + _NET_KEYS)
_f("fd.nameraw", T.STR, f"{S.FILE_RAW_PATH}, else fd.name", _fd_nameraw,
   (S.FILE_RAW_PATH, S.FILE_PATH))
_f("fd.directory", T.STR, f"{S.FILE_DIRECTORY}, else dirname of {S.FILE_PATH}", _fd_directory,
   (S.FILE_PATH,))
_f("fd.filename", T.STR, f"{S.FILE_NAME}, else basename of {S.FILE_PATH}", _fd_filename,
   (S.FILE_PATH,))
_f("fd.type", T.STR, "file|directory|ipv4|ipv6|unix|pipe|memfd|packet from the event kind",
   _fd_type, (S.DUP_OLD_FD_TYPE, S.NETWORK_TYPE, S.SOCKET_FAMILY))
_f("fd.typechar", T.STR, "f d 4 6 u p m from fd.type", _fd_typechar,
   (S.DUP_OLD_FD_TYPE, S.NETWORK_TYPE, S.SOCKET_FAMILY))
_f("fd.num", T.NUM, f"open/socket/accept: {S.SYSCALL_RET} (-1 on failure); dup: old fd; else "
   f"{S.FILE_FD}", _fd_num, (S.SYSCALL_RET, S.DUP_OLD_FD, S.FILE_FD))
_f("fd.sockfamily", T.STR, "ip | unix", _sockfamily, (S.NETWORK_TYPE,))
_f("fd.l4proto", T.STR, f"{S.NETWORK_TRANSPORT} (tcp|udp|icmp|raw)", _l4proto,
   (S.NETWORK_TRANSPORT,))
_f("fd.cip", T.IP, "client IP: local on connect, peer on accept", _ep(0), _NET_KEYS)
_f("fd.cport", T.NUM, "client port", _ep(1), _NET_KEYS)
_f("fd.sip", T.IP, "server IP: peer on connect, local on accept/bind/listen", _ep(2), _NET_KEYS)
_f("fd.sport", T.NUM, "server port", _ep(3), _NET_KEYS)
_f("fd.lip", T.IP, S.NETWORK_LOCAL_ADDRESS, _ep(0, local=True), _NET_KEYS)
_f("fd.lport", T.NUM, S.NETWORK_LOCAL_PORT, _ep(1, local=True), _NET_KEYS)
_f("fd.rip", T.IP, S.NETWORK_PEER_ADDRESS, _ep(2, local=True), _NET_KEYS)
_f("fd.rport", T.NUM, S.NETWORK_PEER_PORT, _ep(3, local=True), _NET_KEYS)
_f("fd.ip", T.NET, "client or server IP (matches if either does)", _fd_ips, _NET_KEYS)
_f("fd.port", T.MULTI, "client or server port (matches if either does)", _fd_port, _NET_KEYS)
_f("fd.net", T.NET, "client or server IP in the CIDR", _fd_ips, _NET_KEYS)
_f("fd.cnet", T.NET, "client IP in the CIDR", _fd_ip_of(0), _NET_KEYS)
_f("fd.snet", T.NET, "server IP in the CIDR", _fd_ip_of(2), _NET_KEYS)
_f("fd.lnet", T.NET, "local IP in the CIDR", _fd_ip_of(0, local=True), _NET_KEYS)
_f("fd.rnet", T.NET, "remote IP in the CIDR", _fd_ip_of(2, local=True), _NET_KEYS)
_f("fd.sip.name", T.STR, f"{S.SERVER_ADDRESS} when a name, else <svc>.<ns>.svc.cluster.local "
   f"from {S.PEER_K8S_SERVICE_NAME}", _sip_name, (S.SERVER_ADDRESS, S.PEER_K8S_SERVICE_NAME,
                                                   S.PEER_K8S_NAMESPACE_NAME))
_f("fd.rip.name", T.STR, "as fd.sip.name, for the remote peer", _rip_name,
   (S.SERVER_ADDRESS, S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_NAMESPACE_NAME))
_f("fd.cip.name", T.STR, "as fd.sip.name, for the client of an accepted connection", _cip_name,
   (S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_NAMESPACE_NAME))
_unavailable("fd.lip.name", T.STR, "local DNS names are not resolved")
_f("fd.connected", T.BOOL, "connect/accept succeeded; false for sendto/sendmsg", _fd_connected,
   (S.SYSCALL_RET,))
_f("fd.name_changed", T.BOOL, "sendto/sendmsg with an explicit destination", _fd_name_changed,
   (S.NETWORK_PEER_ADDRESS,))
_f("fd.is_server", T.BOOL, "accept/bind/listen records", _fd_is_server)
_unavailable("fd.types", T.LIST, "the per-process fd table is not exported", arg="optional")
_unavailable("fd.ino", T.NUM, "inodes are not captured")
_unavailable("fd.dev", T.NUM, "devices are not captured")

# container.* / k8s.*
_f(_CONTAINER + "id", T.STR, f"{S.CONTAINER_ID} (12 chars); 'host' for host processes",
   _container_id)
_f("container.full_id", T.STR, f"{S.CONTAINER_ID}; 'host' for host processes",
   _container_full_id)
_f(_CONTAINER + "name", T.STR, f"{S.CONTAINER_NAME}, else {S.K8S_CONTAINER_NAME}", _container_name)
_f("container.image.repository", T.STR, f"{S.CONTAINER_IMAGE_NAME} without tag", _image_repo)
_f("container.image.tag", T.STR, f"{S.CONTAINER_IMAGE_TAGS}[0], else the name's tag", _image_tag)
_f("container.image", T.STR, "repository:tag", _image)
_f("container.privileged", T.BOOL, S.K8S_POD_PRIVILEGED, _privileged)
_unavailable("container.start_ts", T.NUM, "container start time is not known to the processor")
_unavailable("container.mounts", T.STR, "container mounts are not known to the processor")
_unavailable("container.mount.dest", T.STR, "container mounts are not known to the processor",
             arg="required")
_unavailable("container.image.id", T.STR, "image digests are not known to the processor")
_f("k8s.ns.name", T.STR, S.K8S_NAMESPACE_NAME, _r(S.K8S_NAMESPACE_NAME))
_f(_K8S + "pod.name", T.STR, S.K8S_POD_NAME, _r(S.K8S_POD_NAME))
_f(_K8S + "pod.uid", T.STR, S.K8S_POD_UID, _r(S.K8S_POD_UID))
_f(_K8S + "pod.ip", T.STR, S.K8S_POD_IP, _r(S.K8S_POD_IP))
_f("k8s.pod.labels", T.STR, f"{S.K8S_POD_LABEL_PREFIX}* as 'k:v, k:v'", _pod_labels)
_f("k8s.pod.label", T.STR, f"{S.K8S_POD_LABEL_PREFIX}<key>", _pod_label, arg="required")
_f("k8s.workload.name", T.STR, "deployment/statefulset/daemonset/cronjob/job name", _workload)
_f(_K8S + "node.name", T.STR, S.K8S_NODE_NAME, _r(S.K8S_NODE_NAME))

# otelguard extensions: per-process / per-container state kept by the falco_rules stage
_f("proc.stdin_is_socket", T.BOOL, "stage state: a socket was dup'ed onto fd 0 of this "
   "process (or its parent before the fork)", _state("stdin_is_socket"))
_f("proc.stdout_is_socket", T.BOOL, "stage state: a socket was dup'ed onto fd 1 or 2",
   _state("stdout_is_socket"))
_f("proc.exe_written_recently", T.BOOL, "stage state: proc.exepath was opened for writing, "
   "renamed or chmod'ed in the same container within the configured window",
   _state("exe_written_recently"))

EXTENSION_FIELDS = frozenset({"proc.stdin_is_socket", "proc.stdout_is_socket",
                              "proc.exe_written_recently"})


def resolve(name: str, arg: Optional[str]) -> tuple[Optional[FieldSpec], Optional[str], Optional[str]]:
    """(spec, arg, None) or (None, None, reason). Accepts Falco's ``evt.arg.flags`` spelling."""
    spec = FIELDS.get(name)
    if spec is None:
        # dotted argument forms: evt.arg.flags, evt.rawarg.res, k8s.pod.label.app
        for prefix in ("evt.arg.", "evt.rawarg.", _K8S + "pod.label.", "container.mount.dest."):
            if name.startswith(prefix) and arg is None:
                spec = FIELDS.get(prefix[:-1])
                arg = name[len(prefix):]
                break
    if spec is None:
        return None, None, f"unknown field {name}"
    reason = spec.unsupported_reason(arg)
    if reason is not None:
        return None, None, reason
    return spec, arg, None
