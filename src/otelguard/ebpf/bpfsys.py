"""The few ``bpf(2)`` and ``perf_event_open(2)`` calls a compiled program needs, through ctypes.

Used by the program cache (progcache.py) to create maps, load tracepoint programs and attach
them, and by :mod:`otelguard.ebpf.tables` to read and write maps, so a start from the cache
needs neither BCC's compiler nor its library. Layouts are the kernel's UAPI (``union bpf_attr``,
``struct bpf_map_info``, ``struct perf_event_attr``); only the fields set here are written, the
rest stay zero, which every kernel since 5.8 (the ring buffer's) accepts.

Attaching follows what BCC does for a tracepoint: one perf event of type
``PERF_TYPE_TRACEPOINT`` (the id from tracefs) on CPU 0 for all processes, the program set with
``PERF_EVENT_IOC_SET_BPF`` and the event enabled; the program then runs on every CPU.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, OBJ_GET_INFO_BY_FD = 5, 15
# enum bpf_map_type (those BCC's BPF_TABLE kinds in our probes use)
MAP_HASH, MAP_ARRAY, MAP_PERCPU_HASH, MAP_PERCPU_ARRAY = 1, 2, 5, 6
MAP_CGROUP_ARRAY, MAP_LRU_HASH, MAP_LRU_PERCPU_HASH, MAP_RINGBUF = 8, 9, 10, 27
PERCPU_MAPS = frozenset({MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_LRU_PERCPU_HASH})
PROG_TYPE_TRACEPOINT = 5
PSEUDO_MAP_FD = 1  # src_reg of an ld_imm64 whose imm is a map fd
LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW
INSN_SIZE = 8
OBJ_NAME_LEN = 16

_ATTR_SIZE = 128
_PERF_TYPE_TRACEPOINT = 2
_PERF_SAMPLE_RAW = 1 << 10
_PERF_FLAG_FD_CLOEXEC = 1 << 3
_PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5
_IOC_ENABLE, _IOC_DISABLE, _IOC_SET_BPF = 0x2400, 0x2401, 0x40042408
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}  # (bpf, perf_event_open)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfSyscallError(OSError):
    """A bpf()/perf_event_open() call failed; ``log`` holds the verifier's text for a load."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log


def _numbers() -> tuple[int, int]:
    try:
        return _SYSCALLS[platform.machine()]
    except KeyError:
        raise BpfSyscallError(f"bpf syscalls on {platform.machine()}", errno.ENOSYS) from None


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    ret = _libc.syscall(_numbers()[0], cmd, attr, _ATTR_SIZE)
    if ret < 0:
        raise BpfSyscallError(what, ctypes.get_errno())
    return int(ret)


def _bpf_found(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> bool:
    """A map call that may find no such key: False for ENOENT, raises for other errors."""
    if _libc.syscall(_numbers()[0], cmd, attr, _ATTR_SIZE) >= 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        return False
    raise BpfSyscallError(what, err)


def _attr(fmt: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(buf: Optional[ctypes.Array[ctypes.c_char]]) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


@lru_cache(maxsize=1)
def possible_cpus() -> int:
    """Per-CPU map values hold one slot per possible CPU (``/sys/devices/system/cpu/possible``)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int,
               name: str) -> int:
    """A new map's fd (close-on-exec, as every bpf() fd)."""
    attr = _attr("<IIIIIII16s", map_type, key_size, value_size, max_entries, flags, 0, 0,
                 name.encode()[:OBJ_NAME_LEN - 1])
    return _bpf(MAP_CREATE, attr, f"map {name} create")


def map_lookup(fd: int, key: ctypes.Array[ctypes.c_char],
               value: ctypes.Array[ctypes.c_char]) -> bool:
    """Fill ``value`` for ``key``; False when there is no such key."""
    return _bpf_found(MAP_LOOKUP_ELEM, _attr("<IIQQQ", fd, 0, _addr(key), _addr(value), 0),
                      "map lookup")


def map_update(fd: int, key: ctypes.Array[ctypes.c_char],
               value: ctypes.Array[ctypes.c_char], flags: int = 0) -> None:
    _bpf(MAP_UPDATE_ELEM, _attr("<IIQQQ", fd, 0, _addr(key), _addr(value), flags), "map update")


def map_delete(fd: int, key: ctypes.Array[ctypes.c_char]) -> bool:
    return _bpf_found(MAP_DELETE_ELEM, _attr("<IIQ", fd, 0, _addr(key)), "map delete")


def map_next_key(fd: int, key: Optional[ctypes.Array[ctypes.c_char]],
                 next_key: ctypes.Array[ctypes.c_char]) -> bool:
    """Fill ``next_key`` with the key after ``key`` (the first when None); False at the end."""
    return _bpf_found(MAP_GET_NEXT_KEY, _attr("<IIQQ", fd, 0, _addr(key), _addr(next_key)),
                      "map next key")


@dataclass(frozen=True)
class MapInfo:
    """What the kernel says a map is (``struct bpf_map_info``); names are cut at 15 bytes."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def map_info(fd: int) -> MapInfo:
    info = ctypes.create_string_buffer(88)
    _bpf(OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, len(info), _addr(info)), "map info")
    mtype, _id, key, value, entries, flags, name = struct.unpack_from("<IIIIII16s", info, 0)
    return MapInfo(mtype, key, value, entries, flags, name.split(b"\0", 1)[0].decode())


def prog_load(insns: bytes, license: str, kern_version: int, name: str,
              prog_type: int = PROG_TYPE_TRACEPOINT) -> int:
    """A loaded program's fd. When the verifier refuses, the load is retried with a log so the
    error carries the verifier's text (as BCC reports it)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    short = name.encode()[:OBJ_NAME_LEN - 1]

    def attempt(log: Optional[ctypes.Array[ctypes.c_char]]) -> int:
        attr = _attr("<IIQQIIQII16s", prog_type, len(insns) // INSN_SIZE, _addr(code),
                     _addr(lic), 1 if log is not None else 0, len(log) if log is not None else 0,
                     _addr(log), kern_version, 0, short)
        return int(_libc.syscall(_numbers()[0], PROG_LOAD, attr, _ATTR_SIZE))

    fd = attempt(None)
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    log = ctypes.create_string_buffer(1 << 20)
    fd = attempt(log)
    if fd >= 0:  # loaded the second time (a transient failure such as EAGAIN): use it
        return fd
    text = log.value.decode("utf-8", "replace")[-8000:]
    raise BpfSyscallError(f"program {name} load", err, text)


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel says about a loaded program (``struct bpf_prog_info``). ``verified_insns``
    is the count of instructions the verifier processed (its work, not the program's length:
    every path it walked, less the states it pruned); 0 before Linux 5.16."""

    name: str
    xlated_insns: int
    run_time_ns: int
    run_cnt: int
    verified_insns: int


_PROG_INFO_SIZE = 232  # up to attach_btf_id (5.16+); older kernels fill less and say so


def prog_info(fd: int) -> ProgInfo:
    info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    attr = _attr("<IIQ", fd, len(info), _addr(info))
    _bpf(OBJ_GET_INFO_BY_FD, attr, "program info")
    (filled,) = struct.unpack_from("<I", attr, 4)  # the kernel writes back how much it knows
    (xlated_len,) = struct.unpack_from("<I", info, 20)
    (name,) = struct.unpack_from("<16s", info, 64)
    run_time_ns, run_cnt = struct.unpack_from("<QQ", info, 192) if filled >= 208 else (0, 0)
    (verified,) = struct.unpack_from("<I", info, 216) if filled >= 220 else (0,)
    return ProgInfo(name.split(b"\0", 1)[0].decode(), xlated_len // INSN_SIZE, run_time_ns,
                    run_cnt, verified)


def tracepoint_id(tracefs: Path, category: str, event: str) -> int:
    return int((tracefs / "events" / category / event / "id").read_text())


def attach_tracepoint(prog_fd: int, tp_id: int, what: str) -> int:
    """Attach a loaded program to tracepoint ``tp_id``; returns the perf event fd that holds the
    attachment (closing it detaches)."""
    attr = ctypes.create_string_buffer(_PERF_ATTR_SIZE)
    # type, size, config, sample_period, sample_type; wakeup_events at 48
    struct.pack_into("<IIQQQ", attr, 0, _PERF_TYPE_TRACEPOINT, _PERF_ATTR_SIZE, tp_id, 1,
                     _PERF_SAMPLE_RAW)
    struct.pack_into("<I", attr, 48, 1)
    fd = int(_libc.syscall(_numbers()[1], attr, -1, 0, -1, _PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        raise BpfSyscallError(f"perf_event_open {what}", ctypes.get_errno())
    try:
        fcntl.ioctl(fd, _IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, _IOC_ENABLE, 0)
    except OSError as exc:
        os.close(fd)
        raise BpfSyscallError(f"attach {what}", exc.errno or errno.EINVAL) from exc
    return fd


def detach(perf_fd: int) -> None:
    try:
        fcntl.ioctl(perf_fd, _IOC_DISABLE, 0)
    except OSError:
        pass  # closing below detaches anyway
    os.close(perf_fd)
