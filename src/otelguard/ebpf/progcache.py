"""What BCC's compiler produced, kept on disk, and loaded again without the compiler.

BCC (0.26) recompiles the whole program at every start: ~10-50 s of clang and LLVM here, ~14 s
of CPU, and LLVM mapped in the agent (~60 MB of RSS just for that; docs/benchmarks.md). It has no object cache of its own (its only
on-disk traces are ``/var/tmp/bcc/bpf_prog_<tag>/``, the source and disassembly of loaded
programs for bpftool, and kernel headers extracted to ``/tmp/kheaders-<release>``). So after a
compile the loader keeps a :class:`ProgramImage`: each function's relocated instructions (BCC's
``bpf_function_start``; map references are ``ld_imm64`` with ``BPF_PSEUDO_MAP_FD`` and the map's
fd, rewritten here to the map's index), every map's spec (as the kernel reports it) with BCC's
key/value type descriptions, the tracepoint each function attaches to, the license.

The key (:func:`cache_key`) is a hash of the rendered program text, the kernel release, BCC's
version, the compiler flags and :data:`FORMAT`; anything that changes the C (config, probes, the
agent's code) misses. On a hit, :func:`instantiate` creates the maps (``BPF_MAP_CREATE``), puts
their fds back into the instructions, loads each function (``BPF_PROG_LOAD``, the kernel's
verifier still checks every one), lets the caller fill its config maps, then attaches
(``perf_event_open`` + ``PERF_EVENT_IOC_SET_BPF``). A file that does not parse or fails its
checksum, or a load the kernel refuses, is a miss: the loader compiles and rewrites the entry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from otelguard.config.files import write_atomic
from otelguard.ebpf import bpfsys
from otelguard.ebpf.errors import LoadError

FORMAT = 1  # bump when the image layout or its meaning changes
SUFFIX = ".bpfimg.json"


@dataclass(frozen=True)
class MapSpec:
    name: str  # BCC's table name (full, not the kernel's 15-byte copy)
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: str  # BCC's JSON type descriptions (tables.py rebuilds ctypes types from them)
    leaf_desc: str


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # tracepoint__<category>__<event>
    category: str
    event: str
    insns: bytes  # map references hold the map's index in ProgramImage.maps


@dataclass(frozen=True)
class ProgramImage:
    """Everything needed to load the program again; ``probes``/``failed`` are the loader's
    outcome for the requested program (which probes are in it, which were isolated and why)."""

    license: str
    kern_version: int
    maps: tuple[MapSpec, ...]
    functions: tuple[FunctionSpec, ...]
    probes: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


def bcc_version() -> str:
    """BCC's version from its package's ``version.py``, without importing it (importing maps
    its LLVM: ~60 MB of RSS). ImportError when no BCC package with a version is on the path."""
    import importlib.util

    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'bcc'")
    for location in spec.submodule_search_locations:
        try:
            text = (Path(location) / "version.py").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("'\"")
    raise ImportError(f"bcc at {', '.join(spec.submodule_search_locations)} is incomplete "
                      "(no version.py)")


def cache_key(text: str, cflags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    try:
        bcc = bcc_version()
    except ImportError:
        bcc = "absent"
    for part in (f"format={FORMAT}", os.uname().release, bcc, "\0".join(cflags), text):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def function_tracepoint(name: str) -> Optional[tuple[str, str]]:
    """(category, event) of a BCC ``TRACEPOINT_PROBE`` function; None for other functions."""
    prefix = "tracepoint__"
    if not name.startswith(prefix) or "__" not in name[len(prefix):]:
        return None
    category, event = name[len(prefix):].split("__", 1)
    return category, event


def map_refs(insns: bytes) -> list[int]:
    """Offsets (in instructions) of each ``ld_imm64`` that carries a map fd."""
    out = []
    n = len(insns) // bpfsys.INSN_SIZE
    i = 0
    while i < n:
        code, regs = insns[i * 8], insns[i * 8 + 1]
        if code == bpfsys.LD_IMM64:
            if regs >> 4 == bpfsys.PSEUDO_MAP_FD:
                out.append(i)
            i += 2  # the wide instruction's second half
        else:
            i += 1
    return out


def rewrite_maps(insns: bytes, mapping: Callable[[int], int]) -> bytes:
    """``insns`` with each map reference's imm replaced by ``mapping(imm)`` (fd <-> index)."""
    out = bytearray(insns)
    for i in map_refs(insns):
        (imm,) = struct.unpack_from("<i", out, i * 8 + 4)
        struct.pack_into("<i", out, i * 8 + 4, mapping(imm))
    return bytes(out)


# --- on disk ------------------------------------------------------------------------------------

def _encode(image: ProgramImage) -> bytes:
    body = asdict(image)
    body["functions"] = [dict(f, insns=base64.b64encode(f["insns"]).decode())
                         for f in body["functions"]]
    payload = json.dumps(body, sort_keys=True).encode()
    return json.dumps({"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                       "image": payload.decode()}).encode()


def _decode(data: bytes) -> ProgramImage:
    outer = json.loads(data)
    if outer.get("format") != FORMAT:
        raise ValueError(f"format {outer.get('format')!r}, expected {FORMAT}")
    payload = outer["image"].encode()
    if hashlib.sha256(payload).hexdigest() != outer["sha256"]:
        raise ValueError("checksum mismatch")
    body = json.loads(payload)
    return ProgramImage(
        license=body["license"], kern_version=int(body["kern_version"]),
        maps=tuple(MapSpec(**m) for m in body["maps"]),
        functions=tuple(FunctionSpec(f["name"], f["category"], f["event"],
                                     base64.b64decode(f["insns"], validate=True))
                        for f in body["functions"]),
        probes=tuple(body["probes"]), failed=dict(body["failed"]))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ProgramCache:
    """Images by key under ``directory`` (one file each, written atomically, mode 0600); the
    ``keep`` most recently used are kept (a hit touches its file), older ones removed on put."""

    def __init__(self, directory: Path, keep: int = 8) -> None:
        self.directory = directory
        self.keep = keep

    def path(self, key: str) -> Path:
        return self.directory / f"{key}{SUFFIX}"

    def get(self, key: str) -> Optional[ProgramImage]:
        """The image, None when absent; ValueError when the file is unreadable or corrupt."""
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ValueError(f"unreadable: {exc}") from exc
        try:
            image = _decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"corrupt: {exc}") from exc
        try:
            os.utime(self.path(key))
        except OSError:
            pass  # a read-only cache still serves
        return image

    def put(self, key: str, image: ProgramImage) -> Path:
        path = self.path(key)
        write_atomic(path, _encode(image))
        for old in self.entries()[self.keep:]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def entries(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"), key=_mtime, reverse=True)

    def discard(self, key: str) -> None:
        try:
            self.path(key).unlink()
        except FileNotFoundError:
            pass


# --- loading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProgramLoad:
    """One function's ``BPF_PROG_LOAD``: wall seconds of the syscall (the verifier's work; the
    loads run side by side, so on a busy machine each also waits for a CPU), the instructions
    the verifier processed and the program's length after it (``bpfsys.ProgInfo``)."""

    seconds: float
    verified_insns: int
    insns: int


@dataclass
class KernelObjects:
    """The fds of one instantiated image; :meth:`close` releases them (detaching first).
    ``loads``: each function's load, for the loader's log and bench/exec_verify.py."""

    maps: dict[str, int] = field(default_factory=dict)
    programs: dict[str, int] = field(default_factory=dict)
    attachments: list[int] = field(default_factory=list)
    loads: dict[str, ProgramLoad] = field(default_factory=dict)

    def detach(self) -> None:
        """Detach every program (no new records); each detach waits out an RCU grace period
        (~30 ms), so they run side by side."""
        if self.attachments:
            with ThreadPoolExecutor(16, thread_name_prefix="otelguard-bpf-detach") as pool:
                list(pool.map(bpfsys.detach, self.attachments))
            self.attachments.clear()

    def close(self) -> None:
        self.detach()
        for fd in [*self.programs.values(), *self.maps.values()]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.programs.clear()
        self.maps.clear()


def _load_programs(image: ProgramImage, map_fds: list[int], objs: KernelObjects) -> None:
    """Load every function, largest first, on up to one thread per CPU: the verifier runs in
    the calling thread (ctypes lets go of the GIL), and two functions (execve, execveat: their
    argv/env reads) take most of its time, so they verify side by side."""
    def one(f: FunctionSpec) -> int:
        insns = rewrite_maps(f.insns, lambda index: map_fds[index])
        start = time.perf_counter()
        fd = bpfsys.prog_load(insns, image.license, image.kern_version,
                              f.name.removeprefix("tracepoint__"))  # as BCC names it
        seconds = time.perf_counter() - start
        try:
            info = bpfsys.prog_info(fd)
            objs.loads[f.name] = ProgramLoad(seconds, info.verified_insns, info.xlated_insns)
        except bpfsys.BpfSyscallError:
            objs.loads[f.name] = ProgramLoad(seconds, 0, 0)  # the figures are only reported
        return fd

    order = sorted(image.functions, key=lambda f: -len(f.insns))
    workers = max(1, min(len(order), os.cpu_count() or 1, 8))
    with ThreadPoolExecutor(workers, thread_name_prefix="otelguard-bpf-load") as pool:
        futures = {f.name: pool.submit(one, f) for f in order}
        error: Optional[BaseException] = None
        for name, future in futures.items():  # every fd collected, so a failure closes all
            try:
                objs.programs[name] = future.result()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error


def instantiate(image: ProgramImage, tracefs: Path,
                configure: Callable[[KernelObjects], None] = lambda _o: None) -> KernelObjects:
    """Create the maps, load every function, call ``configure`` (write config maps before any
    event fires), then attach. LoadError (with the verifier's text) on any failure, after
    releasing what was created."""
    objs = KernelObjects()
    try:
        fds = []
        for m in image.maps:
            fd = bpfsys.map_create(m.type, m.key_size, m.value_size, m.max_entries, m.flags,
                                   m.name)
            objs.maps[m.name] = fd
            fds.append(fd)
        _load_programs(image, fds, objs)
        configure(objs)
        for f in image.functions:
            tp_id = bpfsys.tracepoint_id(tracefs, f.category, f.event)
            objs.attachments.append(bpfsys.attach_tracepoint(
                objs.programs[f.name], tp_id, f"{f.category}:{f.event}"))
    except bpfsys.BpfSyscallError as exc:
        objs.close()
        raise LoadError(str(exc), exc.log) from exc
    except (OSError, ValueError, IndexError) as exc:
        objs.close()
        raise LoadError(f"{type(exc).__name__}: {exc}") from exc
    except BaseException:
        objs.close()
        raise
    return objs
