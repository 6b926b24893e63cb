"""The contract between a probe module and the loader.

A probe is one area (process, file, network, privilege, evasion): a ``<area>.bpf.c`` file in
``probes/`` beside a Python module holding the ctypes structs that mirror its C records, a pure
``render()`` that fills the C placeholders from config, and a pure ``decode()``. The loader
concatenates ``common.bpf.h`` and every enabled probe's rendered C into one BPF program, so one
compile serves all probes; probes whose tracepoints are missing are left out and reported.

Record type ids are allocated per probe so one ring buffer carries all of them:
process 1-19, file 20-39, network 40-59, privilege 60-79, evasion 80-99.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Mapping, Optional, Protocol, Sequence, TypeVar

from otelguard.config import INTERNAL, Checks
from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.openfilter import MAX_ENTRY_LEN, MAX_PATHS, MAX_PREFIXES

RecordT = TypeVar("RecordT", bound=ctypes.Structure)

COMM_LEN = 16
PATH_LEN = 256
ENV_NAME_LEN = 30  # longest allowlisted variable name (the kernel compares a fixed head)
ENV_NAMES_MAX = 16
# read-only opens sent when neither the config nor the loaded rules say which (an agent without
# sensor.read_rules): the places sensitive reads usually are
DEFAULT_READ_PREFIXES: tuple[str, ...] = (
    "/etc/", "/root/", "/boot/", "/proc/sys/", "/sys/fs/cgroup", "/dev/", "/var/run/secrets",
    "/run/secrets", "/home/", "/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/var/log/",
)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,%d}" % (ENV_NAME_LEN - 1))


class Header(ctypes.Structure):
    """Mirror of ``struct og_hdr`` in ``probes/common.bpf.h``; every record starts with it."""

    _fields_ = [
        ("ktime_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("ret", ctypes.c_int64),
        ("type", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


@dataclass(frozen=True)
class ProbeConfig:
    """Kernel-side buffers and filters of the probes (what render() may use); defaults are the
    default configuration."""

    # 8 MiB, one ring for all CPUs: ~13k file records (~630 B each), i.e. ~0.5 s of a 25k/s
    # burst while the Python consumer waits for a core; 1 MiB dropped at 12k/s on a loaded
    # 2-CPU node where 8 MiB did not (bench/agent_throughput.py, docs/benchmarks.md)
    ringbuf_pages: int = 2048
    self_tgid: int = field(default=0, metadata=INTERNAL)  # the agent's own pid, not a YAML key
    # Set by the sensor when SensorConfig.cgroup_scope is given (like self_tgid, not a YAML key):
    # probes whose records fire outside the task's context (TCP state changes in softirq) then
    # know that an owner they never saw was filtered out of scope in the kernel, not lost.
    scoped: bool = field(default=False, metadata=INTERNAL)
    # File opens without write intent are sent only under these prefixes or for exactly the
    # read_paths (kernel-side filter). null (default): when the loaded rules are known (`otelguard
    # run`, sensor.read_rules) exactly what they need, else the built-in list (/etc/, /root/,
    # /boot/, /proc/sys/, /dev/, /home/, ...); a list is added to what the rules need.
    # docs/architecture.md#kernel-facts
    read_path_prefixes: Optional[tuple[str, ...]] = None
    # exact file names whose read-only opens are sent (besides the prefixes); the rules' exact
    # names (fd.name = / in) are added here
    read_paths: tuple[str, ...] = ()
    # Repeated identical opens (same process, path, flags, result) within this window are
    # counted in the kernel instead of sent again; the next one sent (or the flush once the
    # window passed) carries the count (otelguard.file.repeat_count). 0: every open is sent.
    dedup_window_ms: int = 1000
    dedup_entries: int = 4096  # kernel LRU entries for dedup (~0.7 KiB each)
    dns_ports: tuple[int, ...] = (53,)  # UDP/TCP peer ports whose payload is decoded as DNS
    argv_max: int = 20  # arguments captured per exec (1..64)
    arg_len: int = 128  # bytes captured per argument (16..1024)
    # Environment variables captured at exec (Falco's proc.env), by NAME, matched regardless of
    # case (HTTP_PROXY also takes http_proxy); no other variable's value is read. Values are
    # redacted (docs/architecture.md#redaction). [] compiles the scan out.
    env_names: tuple[str, ...] = (
        "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GLIBC_TUNABLES", "HTTP_PROXY", "HTTPS_PROXY",
        "ALL_PROXY",
    )
    env_max: int = 4  # allowlisted variables captured per exec (1..16)
    env_len: int = 256  # bytes captured per variable, NAME=VALUE (32..1024)

    @property
    def read_prefixes(self) -> tuple[str, ...]:
        """The read prefixes in force: ``read_path_prefixes``, else the default list."""
        return DEFAULT_READ_PREFIXES if self.read_path_prefixes is None else \
            self.read_path_prefixes

    def __post_init__(self) -> None:
        """The limits the BPF programs are built for (render() refuses others too)."""
        checks = Checks()
        pages = self.ringbuf_pages
        if pages < 1 or pages & (pages - 1):
            checks.add("ringbuf_pages", f"must be a power of two >= 1, got {pages}")
        if not 1 <= self.argv_max <= 64:
            checks.add("argv_max", f"must be 1..64, got {self.argv_max}")
        if not 16 <= self.arg_len <= 1024:
            checks.add("arg_len", f"must be 16..1024, got {self.arg_len}")
        if not 1 <= self.env_max <= 16:
            checks.add("env_max", f"must be 1..16, got {self.env_max}")
        if not 32 <= self.env_len <= 1024:
            checks.add("env_len", f"must be 32..1024, got {self.env_len}")
        if len(self.env_names) > ENV_NAMES_MAX:
            checks.add("env_names", f"at most {ENV_NAMES_MAX} names")
        for i, name in enumerate(self.env_names):
            if not ENV_NAME.fullmatch(name):
                checks.add(f"env_names[{i}]", "must be a variable name (letters, digits, _; "
                           f"not starting with a digit) of at most {ENV_NAME_LEN} bytes, "
                           f"got {name!r}")
        for key, values, most in (("read_path_prefixes", self.read_path_prefixes or (),
                                   MAX_PREFIXES), ("read_paths", self.read_paths, MAX_PATHS)):
            for i, prefix in enumerate(values):
                if not prefix.startswith("/") or not prefix.isascii() or \
                        len(prefix) > MAX_ENTRY_LEN:
                    checks.add(f"{key}[{i}]", "must be an absolute ASCII path of at most "
                               f"{MAX_ENTRY_LEN} bytes, got {prefix!r}")
            if len(values) > most:
                checks.add(key, f"at most {most} entries")
        if not 0 <= self.dedup_window_ms <= 60_000:
            checks.add("dedup_window_ms", f"must be 0..60000, got {self.dedup_window_ms}")
        if not 16 <= self.dedup_entries <= 1 << 20:
            checks.add("dedup_entries", f"must be 16..1048576, got {self.dedup_entries}")
        checks.done()


_IMPLEMENTS: dict[tuple[type, type], bool] = {}


def implements(obj: object, protocol: type) -> bool:
    """``isinstance(obj, protocol)`` for a runtime-checkable Protocol, answered once per type:
    the check walks the protocol's members on every call (~10 µs each, a fifth of the poll
    thread's CPU in an exec loop when the process probe asked per record). The decode
    contexts' protocol members are methods of their class, so the type decides."""
    key = (type(obj), protocol)
    hit = _IMPLEMENTS.get(key)
    if hit is None:
        hit = _IMPLEMENTS[key] = isinstance(obj, protocol)
    return hit


class DecodeContext(Protocol):
    """What a probe's decode() gets from the sensor: process table, clocks, path resolution."""

    def make_event(
        self, hdr: Header, name: str, syscall: str, attrs: dict[str, AttrValue]
    ) -> Event:
        """An Event with time, pid/tid, container identity and the acting process's attributes
        (from the process table) filled in, plus ``attrs``; success/errno from ``hdr.ret``."""
        ...

    def resolve_path(self, pid: int, dirfd: int, path: str) -> str:
        """Absolute path for ``path`` as given to a syscall with ``dirfd`` (AT_FDCWD = -100)."""
        ...


@dataclass
class DecodeResult:
    events: list[Event] = field(default_factory=list)


class Probe(Protocol):
    """One capture area. Implementations live in ``otelguard/ebpf/<area>.py``."""

    name: str
    source_file: str  # file name in otelguard/ebpf/probes/
    type_ids: range

    def tracepoints(self) -> list[str]:
        """``category:name`` of every tracepoint the C attaches to (doctor checks these)."""
        ...

    def render(self, config: ProbeConfig, available: frozenset[str]) -> str:
        """The probe's C with placeholders filled; handlers whose tracepoint is not in
        ``available`` are compiled out (``#if``), so a missing tracepoint never fails the load."""
        ...

    def decode(self, type_id: int, data: bytes, ctx: DecodeContext) -> Optional[Event]:
        """One record (``data`` starts with Header) to an Event, or None when it is only
        bookkeeping (e.g. it updates the process table). Never raises on short data."""
        ...


def probe_source(file_name: str) -> str:
    """The text of a file in ``otelguard/ebpf/probes/``."""
    return resources.files("otelguard.ebpf.probes").joinpath(file_name).read_text()


def c_string(raw: bytes) -> str:
    """A NUL-terminated C buffer as text (undecodable bytes escaped, never an exception)."""
    end = raw.find(b"\x00")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", "backslashreplace")


def group_tracepoints(groups: Mapping[str, Sequence[str]]) -> list[str]:
    """Every tracepoint of a probe whose handlers come in groups (one syscall family each)."""
    return [tp for tps in groups.values() for tp in tps]


def group_defines(prefix: str, groups: Mapping[str, Sequence[str]],
                  available: frozenset[str]) -> list[str]:
    """``#define <prefix>_<GROUP> 0|1``: a group's handlers compile only when all of its
    tracepoints exist, so a missing one never fails the load."""
    return [f"#define {prefix}_{g} {int(all(tp in available for tp in tps))}"
            for g, tps in groups.items()]


def read_record(record_type: type[RecordT], data: bytes) -> Optional[RecordT]:
    """``data`` as a ``record_type`` copy, or None when it is shorter (decode never raises on
    short data); bytes past the struct are ignored."""
    size = ctypes.sizeof(record_type)
    if len(data) < size:
        return None
    return record_type.from_buffer_copy(data[:size])
