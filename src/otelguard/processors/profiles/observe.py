"""What one event record says a workload did, as profile observations (kind, value), and
which of them must never be learned without a human (docs/profiles.md#never-auto-learned).

Kinds and values:

- ``process``: ``EXE|PARENT EXE|ARGV SHAPE`` of a successful exec; the argv shape keeps flags
  and replaces values by their class (``python3 <path> --port <num>``);
- ``untrusted_exec``: an exec from the container's writable layer, a memfd or a deleted file;
- ``file_write``: the path written, created, renamed to, linked, chmod'ed, truncated, made;
- ``file_read``: a sensitive path opened for reading (credentials, keys, the SA token);
- ``egress``: ``PEER PORT/PROTO`` of a connect; the peer is ``workload:NS/KIND/NAME``,
  ``service:NS/NAME`` or ``pod:NS/NAME`` when the enricher resolved it, else the address;
- ``dns``: the question name, lower case, without the final dot;
- ``listen``: ``PORT/PROTO``;
- ``capability``: the capability name of a granted capability check, except CAP_SYS_ADMIN:
  the kernel checks that one (without audit, so the check looks like any other) in the memory
  accounting of every root process, so a check says nothing; its uses are read from the
  syscalls that need it instead (unshare of a namespace, setns, mount, when they succeed).
  A denied check is no use (non-root processes fail such checks all the time).

Cost: event names the stage does not read cost one dict lookup; the others the reads of the
keys their observations need (:class:`FieldReader`), then one dict hit (:class:`Observer`)
for values seen before; string work only for new ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from otelguard import semconv as S
from otelguard.risk.reach.tiers import (  # the sensitive systems the reach analyser knows
    API_SERVICE, ETCD_PORTS, KUBELET_PORT, METADATA_ADDRESSES,
)

PROCESS = "process"
UNTRUSTED_EXEC = "untrusted_exec"
FILE_WRITE = "file_write"
FILE_READ = "file_read"
EGRESS = "egress"
DNS = "dns"
LISTEN = "listen"
CAPABILITY = "capability"
KINDS = (PROCESS, UNTRUSTED_EXEC, FILE_WRITE, FILE_READ, EGRESS, DNS, LISTEN, CAPABILITY)

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "csh", "tcsh", "fish",
                    "busybox"})
INTERPRETERS = ("python", "perl", "ruby", "node", "php", "lua", "java", "pwsh")
NETWORK_TOOLS = frozenset({"nc", "ncat", "netcat", "curl", "wget", "socat", "telnet", "nmap",
                           "ssh", "scp", "sftp", "ftp", "tftp"})
PACKAGE_MANAGERS = frozenset({"apt", "apt-get", "dpkg", "yum", "dnf", "rpm", "apk", "zypper",
                              "pip", "pip3", "npm", "yarn", "gem", "cargo", "conda"})
LAUNCHERS = frozenset({"", "containerd-shim", "containerd-shim-runc-v2", "runc", "crun",
                       "conmon", "tini", "dumb-init", "docker-init", "systemd", "init",
                       "kubelet", "pause", "s6-svscan", "supervisord", "cron", "crond"})
SYSTEM_DIRS = ("/etc/", "/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/boot/",
               "/root/.ssh/")
SA_TOKEN_DIRS = ("/var/run/secrets/kubernetes.io/serviceaccount/",
                 "/run/secrets/kubernetes.io/serviceaccount/")
SENSITIVE_READS = SA_TOKEN_DIRS + ("/etc/shadow", "/etc/gshadow", "/etc/sudoers",
                                   "/root/.ssh/", "/etc/kubernetes/", "/etc/ssl/private/",
                                   "/etc/pki/", "/root/.aws/", "/root/.kube/", "/root/.docker/")
RISKY_CAPABILITIES = frozenset({"CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_SYS_PTRACE",
                                "CAP_SYS_MODULE"})
SYS_ADMIN = "CAP_SYS_ADMIN"
# unshare flags that need CAP_SYS_ADMIN (CLONE_NEWUSER alone needs none)
_SYS_ADMIN_NAMESPACES = frozenset({"CLONE_NEWNS", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWPID",
                                   "CLONE_NEWNET", "CLONE_NEWCGROUP", "CLONE_NEWTIME"})
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "O_TMPFILE")
_NOT_FILES = ("/proc/", "/sys/", "/dev/")
_EINPROGRESS = -115
_MAX_SHAPE = 8
_API_SERVER = f"service:{API_SERVICE[0]}/{API_SERVICE[1]}"  # the API server, as peer_of names it


@dataclass(frozen=True)
class Observation:
    kind: str
    value: str
    risky: str = ""  # why it never auto-learns ('' when it may)


def _str(kv: Any) -> Any:
    return kv.value.string_value


def _int(kv: Any) -> Any:
    return kv.value.int_value


def _bool(kv: Any) -> Any:
    return kv.value.bool_value


def _strs(kv: Any) -> Any:
    return tuple(v.string_value for v in kv.value.array_value.values)  # hashable: Observer


_S, _I, _B, _A = range(4)  # a getter's value kind, as FieldReader's layouts hold it
_KIND_OF: dict[Callable[[Any], Any], int] = {_str: _S, _int: _I, _bool: _B, _strs: _A}
_GETTERS: dict[str, Callable[[Any], Any]] = {
    S.PROCESS_EXECUTABLE_PATH: _str, S.PROCESS_EXECUTABLE_NAME: _str,
    S.PROCESS_PARENT_EXECUTABLE_PATH: _str, S.PROCESS_PARENT_EXECUTABLE_NAME: _str,
    S.PROCESS_COMMAND_ARGS: _strs, S.PROCESS_EXE_UPPER_LAYER: _bool,
    S.PROCESS_EXE_FROM_MEMFD: _bool, S.PROCESS_EXE_DELETED: _bool, S.SYSCALL_RET: _int,
    S.FILE_PATH: _str, S.FILE_TARGET_PATH: _str, S.FILE_OPEN_FLAGS: _str,
    S.NETWORK_PEER_ADDRESS: _str, S.NETWORK_PEER_PORT: _int, S.NETWORK_TRANSPORT: _str,
    S.NETWORK_LOCAL_PORT: _int, S.DNS_QUESTION_NAME: _str, S.CAPABILITY: _str,
    S.PEER_K8S_NAMESPACE_NAME: _str, S.PEER_K8S_WORKLOAD_NAME: _str,
    S.PEER_K8S_WORKLOAD_KIND: _str, S.PEER_K8S_SERVICE_NAME: _str, S.PEER_K8S_POD_NAME: _str,
    S.PROCESS_LINUX_CGROUP: _str, S.LOG_RECORD_UID: _str, S.PROCESS_PID: _int,
    S.PROCESS_PARENT_PID: _int, S.NAMESPACE_FLAGS: _str,
    S.PROCESS_CAP_EFFECTIVE: _strs,  # read by the risk stage's grants analyser
}
_FILE_WRITES = frozenset({S.EV_FILE_UNLINK, S.EV_FILE_CHMOD, S.EV_FILE_CHOWN, S.EV_FILE_MKDIR,
                          S.EV_FILE_TRUNCATE, S.EV_FILE_SYMLINK})
_TARGET_WRITES = frozenset({S.EV_FILE_RENAME, S.EV_FILE_LINK})
_SYS_ADMIN_EVENTS = frozenset({S.EV_UNSHARE, S.EV_SETNS, S.EV_MOUNT})
READ_EVENTS = frozenset({S.EV_PROCESS_EXEC, S.EV_FILE_OPEN, S.EV_NETWORK_CONNECT, S.EV_DNS_QUERY,
                         S.EV_NETWORK_LISTEN, S.EV_PRIV_CAPABLE}) | _FILE_WRITES | _TARGET_WRITES \
    | _SYS_ADMIN_EVENTS
# The process context of a record: read only when something needs it (a trigger to find, a
# flagged process to skip, a host record's workload, a deviation's trigger uid)
CONTEXT = (S.LOG_RECORD_UID, S.PROCESS_PID, S.PROCESS_PARENT_PID, S.PROCESS_LINUX_CGROUP,
           S.PROCESS_EXECUTABLE_PATH)
# exactly what each event's observations read (a key no record of the event carries would
# make every layout incomplete: FieldReader then proves it absent on each record)
_EVENT_KEYS = {
    S.EV_FILE_OPEN: (S.SYSCALL_RET, S.FILE_PATH, S.FILE_OPEN_FLAGS),
    **{e: (S.SYSCALL_RET, S.FILE_PATH) for e in _FILE_WRITES},
    **{e: (S.SYSCALL_RET, S.FILE_TARGET_PATH) for e in _TARGET_WRITES},
    S.EV_PROCESS_EXEC: (S.SYSCALL_RET, S.PROCESS_EXECUTABLE_PATH, S.PROCESS_EXECUTABLE_NAME,
                        S.PROCESS_PARENT_EXECUTABLE_PATH, S.PROCESS_PARENT_EXECUTABLE_NAME,
                        S.PROCESS_COMMAND_ARGS, S.PROCESS_EXE_UPPER_LAYER,
                        S.PROCESS_EXE_FROM_MEMFD, S.PROCESS_EXE_DELETED),
    S.EV_NETWORK_CONNECT: (S.SYSCALL_RET, S.NETWORK_PEER_ADDRESS, S.NETWORK_PEER_PORT,
                           S.NETWORK_TRANSPORT, S.PEER_K8S_NAMESPACE_NAME,
                           S.PEER_K8S_WORKLOAD_NAME, S.PEER_K8S_WORKLOAD_KIND,
                           S.PEER_K8S_SERVICE_NAME, S.PEER_K8S_POD_NAME),
    S.EV_DNS_QUERY: (S.DNS_QUESTION_NAME,),
    S.EV_NETWORK_LISTEN: (S.NETWORK_LOCAL_PORT, S.NETWORK_TRANSPORT),
    S.EV_PRIV_CAPABLE: (S.SYSCALL_RET, S.CAPABILITY),
    S.EV_UNSHARE: (S.SYSCALL_RET, S.NAMESPACE_FLAGS), S.EV_SETNS: (S.SYSCALL_RET,),
    S.EV_MOUNT: (S.SYSCALL_RET,),
}
Getters = dict[str, Callable[[Any], Any]]
# event name -> key -> getter: only what that event's observations read
OBSERVED: dict[str, Getters] = {
    name: {k: _GETTERS[k] for k in _EVENT_KEYS[name]} for name in READ_EVENTS
}
CONTEXT_READ: Getters = {k: _GETTERS[k] for k in CONTEXT}


def getters_for(keys: frozenset[str]) -> Optional[Getters]:
    """Getters for ``keys`` (a FieldReader table entry), None when one has no known type (the
    risk stage then decodes that event's attributes in a full pass)."""
    if not keys <= _GETTERS.keys():
        return None
    return {k: _GETTERS[k] for k in keys}


class FieldReader:
    """Reads the attributes ``table`` names for a record's event (``default`` for the others)
    by remembered position: a producer writes one event type with the same keys in the same
    order, so per (event name, attribute count) the positions of the keys a full pass found are
    read directly (one element access and one key check each; upb builds a Python object per
    element touched). A record of the same length may hold a wanted key its layout's learning
    record lacked, where that one had another key: so a layout that lacks a wanted key also
    checks the keys at its other positions (no value read), and one of them wanted means the
    layout does not fit. Up to ``VARIANTS`` layouts per (event, count) are kept (records with
    and without an optional key alternate); none fitting means a full pass that learns one.
    Bounded to ``max_layouts`` keys (then full passes only)."""

    VARIANTS = 4

    def __init__(self, table: dict[str, Getters], default: Getters,
                 max_layouts: int = 1024) -> None:
        self.table = table
        self.default = default
        self.max_layouts = max_layouts
        # (event, count) -> layouts, each (positions of the wanted keys its record had, the
        # wanted keys it lacked as wire tokens, None when none)
        self._layouts: dict[tuple[str, int], list[tuple[tuple[tuple[int, str, int], ...],
                                                        Optional[tuple[bytes, ...]]]]] = {}

    def read(self, record: Any, event_name: str) -> dict[str, Any]:
        """``event_name``: the record's (the caller read it already; each access costs)."""
        attrs = record.attributes
        key = (event_name, len(attrs))
        layouts = self._layouts.get(key)
        getters = self.table.get(event_name, self.default)
        wire: Optional[bytes] = None
        if layouts is not None:
            for found_at, others in layouts:
                out: dict[str, Any] = {}
                for i, name, kind in found_at:
                    kv = attrs[i]
                    if kv.key != name:
                        break
                    v = kv.value  # the getters inlined: a call per key costs as much as a read
                    out[name] = v.string_value if kind == _S else v.int_value if kind == _I \
                        else v.bool_value if kind == _B else _strs(kv)
                else:
                    if others is None:
                        return out
                    if wire is None:
                        wire = record.SerializeToString()
                    for token in others:
                        if token in wire:
                            break
                    else:
                        return out
        out = {}
        found = []
        for i, kv in enumerate(attrs):
            get = getters.get(kv.key)
            if get is not None:
                out[kv.key] = get(kv)
                found.append((i, kv.key, _KIND_OF[get]))
        if layouts is None and len(self._layouts) < self.max_layouts:
            layouts = self._layouts[key] = []
        if layouts is not None:
            layouts.insert(0, (tuple(found), None if len(out) == len(getters) else
                               tuple(k.encode() for k in getters if k not in out)))
            del layouts[self.VARIANTS:]
        return out


class Observer:
    """:func:`observe` remembered per (event name, fields read): a workload repeats itself, so
    nearly every record's observations were computed before (a dict hit instead of string
    work and new objects). Bounded to ``max_entries`` (then forgotten at once and refilled)."""

    def __init__(self, internal: tuple[Any, ...], max_entries: int = 8192) -> None:
        self.internal = internal
        self.max_entries = max_entries
        self._memo: dict[tuple[Any, ...], tuple[Observation, ...]] = {}

    def __call__(self, event_name: str, f: dict[str, Any]) -> tuple[Observation, ...]:
        key = (event_name, *f.items())
        obs = self._memo.get(key)
        if obs is None:
            obs = tuple(observe(event_name, f, self.internal))
            if len(self._memo) >= self.max_entries:
                self._memo.clear()
            self._memo[key] = obs
        return obs


def base(path: str) -> str:
    return path.rpartition("/")[2]


def _is_interpreter(name: str) -> bool:
    return name in SHELLS or name.startswith(INTERPRETERS)


def argv_shape(args: Sequence[str], exe: str) -> str:
    """Flags kept, values classed: ``python3 <path> --port <num>`` (at most 8 arguments)."""
    parts = [base(args[0]) if args else base(exe)]
    for arg in args[1:_MAX_SHAPE + 1]:
        if arg.startswith("-"):
            flag, eq, _ = arg.partition("=")
            parts.append(f"{flag[:32]}=<v>" if eq else flag[:32])
        elif arg.isdigit():
            parts.append("<num>")
        elif arg.startswith(("/", "./", "../", "~")):
            parts.append("<path>")
        else:
            parts.append("<arg>")
    if len(args) > _MAX_SHAPE + 1:
        parts.append("...")
    return " ".join(parts)


def _exec(f: dict[str, Any]) -> list[Observation]:
    if f.get(S.SYSCALL_RET, 0) < 0:
        return []
    exe = f.get(S.PROCESS_EXECUTABLE_PATH) or f.get(S.PROCESS_EXECUTABLE_NAME) or ""
    if not exe:
        return []
    if f.get(S.PROCESS_EXE_UPPER_LAYER) or f.get(S.PROCESS_EXE_FROM_MEMFD) or \
            f.get(S.PROCESS_EXE_DELETED):
        return [Observation(UNTRUSTED_EXEC, exe, "exec from the writable layer or memory")]
    parent = f.get(S.PROCESS_PARENT_EXECUTABLE_PATH) or f.get(
        S.PROCESS_PARENT_EXECUTABLE_NAME) or ""
    name, parent_name = base(exe), base(parent)
    risky = ""
    if name in NETWORK_TOOLS:
        risky = "network tool"
    elif name in PACKAGE_MANAGERS:
        risky = "package manager"
    elif _is_interpreter(name) and parent_name not in SHELLS and parent_name not in LAUNCHERS:
        risky = "shell or interpreter spawned by a non-shell service"
    shape = argv_shape(f.get(S.PROCESS_COMMAND_ARGS) or (), exe)
    return [Observation(PROCESS, f"{exe}|{parent}|{shape}", risky)]


def _write(path: str) -> list[Observation]:
    if not path or path.startswith(_NOT_FILES) and not path.startswith("/dev/shm/"):
        return []
    risky = "write under a system directory" if path.startswith(SYSTEM_DIRS) else ""
    return [Observation(FILE_WRITE, path, risky)]


def _open(f: dict[str, Any]) -> list[Observation]:
    if f.get(S.SYSCALL_RET, 0) < 0:
        return []
    path = f.get(S.FILE_PATH) or ""
    flags = f.get(S.FILE_OPEN_FLAGS) or ""
    if any(flag in flags for flag in _WRITE_FLAGS):
        return _write(path)
    if path.startswith(SENSITIVE_READS) or "/.ssh/" in path:
        risky = "service-account token read" if path.startswith(SA_TOKEN_DIRS) else ""
        return [Observation(FILE_READ, path, risky)]
    return []


def peer_of(f: dict[str, Any]) -> str:
    """The peer as the enricher named it, else its address."""
    ns = f.get(S.PEER_K8S_NAMESPACE_NAME) or ""
    if f.get(S.PEER_K8S_WORKLOAD_NAME):
        return f"workload:{ns}/{f.get(S.PEER_K8S_WORKLOAD_KIND) or ''}/" \
               f"{f[S.PEER_K8S_WORKLOAD_NAME]}"
    if f.get(S.PEER_K8S_SERVICE_NAME):
        return f"service:{ns}/{f[S.PEER_K8S_SERVICE_NAME]}"
    if f.get(S.PEER_K8S_POD_NAME):
        return f"pod:{ns}/{f[S.PEER_K8S_POD_NAME]}"
    return str(f.get(S.NETWORK_PEER_ADDRESS) or "")


def _connect(f: dict[str, Any], internal: tuple[Any, ...]) -> list[Observation]:
    ret = f.get(S.SYSCALL_RET, 0)
    if ret < 0 and ret != _EINPROGRESS:
        return []
    peer = peer_of(f)
    port = f.get(S.NETWORK_PEER_PORT) or 0
    if not peer or not port:
        return []
    risky = ""
    if peer == _API_SERVER or port in ETCD_PORTS or port == KUBELET_PORT:
        risky = "sensitive system (the API server, etcd, a kubelet)"
    elif ":" not in peer or peer.count(":") > 1:  # an address, not workload:/service:/pod:
        address = peer
        if address in METADATA_ADDRESSES:
            risky = "cloud metadata address"
        else:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return []
            if not any(ip in net for net in internal):
                risky = "egress outside the cluster"
    proto = f.get(S.NETWORK_TRANSPORT) or "tcp"
    return [Observation(EGRESS, f"{peer} {port}/{proto}", risky)]


def observe(event_name: str, f: dict[str, Any], internal: tuple[Any, ...]) -> list[Observation]:
    """The observations of one record (``f`` from :func:`fields`)."""
    if event_name == S.EV_PROCESS_EXEC:
        return _exec(f)
    if event_name == S.EV_FILE_OPEN:
        return _open(f)
    if event_name == S.EV_NETWORK_CONNECT:
        return _connect(f, internal)
    if event_name == S.EV_DNS_QUERY:
        name = (f.get(S.DNS_QUESTION_NAME) or "").lower().rstrip(".")
        return [Observation(DNS, name)] if name else []
    if event_name == S.EV_NETWORK_LISTEN:
        port = f.get(S.NETWORK_LOCAL_PORT) or 0
        return [Observation(LISTEN, f"{port}/{f.get(S.NETWORK_TRANSPORT) or 'tcp'}")] \
            if port else []
    if event_name == S.EV_PRIV_CAPABLE:
        cap = f.get(S.CAPABILITY) or ""
        if not cap or cap == SYS_ADMIN or f.get(S.SYSCALL_RET, 0) != 0:
            return []
        risky = "privileged capability" if cap in RISKY_CAPABILITIES else ""
        return [Observation(CAPABILITY, cap, risky)]
    if f.get(S.SYSCALL_RET, 0) < 0:
        return []
    if event_name in _SYS_ADMIN_EVENTS:
        if event_name == S.EV_UNSHARE and _SYS_ADMIN_NAMESPACES.isdisjoint(
                (f.get(S.NAMESPACE_FLAGS) or "").split("|")):
            return []
        return [Observation(CAPABILITY, SYS_ADMIN, "privileged capability")]
    if event_name in _TARGET_WRITES:
        return _write(f.get(S.FILE_TARGET_PATH) or "")
    if event_name in _FILE_WRITES:
        return _write(f.get(S.FILE_PATH) or "")
    return []


def networks(cidrs: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def parent_pid(f: dict[str, Any]) -> Optional[int]:
    value = f.get(S.PROCESS_PARENT_PID)
    return value if isinstance(value, int) and value > 0 else None
