"""A loaded program as the sensor uses it: maps as tables, the ring buffer, drop counters.

The loader (loader.py) builds it, from the program cache or after compiling; nothing here needs
BCC. The ring buffer is read on its fd (:meth:`LoadedProgram.ring_fd`) by :class:`RingPoller`;
the per-CPU drop counters and the budget's maps are :class:`~otelguard.ebpf.tables.Table`
objects. See docs/architecture.md#program-cache.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from otelguard import telemetry
from otelguard.ebpf.errors import LoadError
from otelguard.ebpf.probe import Probe
from otelguard.ebpf.progcache import KernelObjects, ProgramLoad
from otelguard.ebpf.tables import Table

RING_NAME = "og_events"
DROPS_NAME = "og_drops"
BUDGET_NAME = "og_budget"
BUDGET_DROPS_NAME = "og_budget_drops"
RecordCallback = Callable[[Any, int, int], None]  # (ctx, data pointer, size), BCC's signature

_RING_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


class RingPoller:
    """The ring buffer consumed by fd through libbcc_bpf (BCC's own ``bpf_new_ringbuf`` /
    ``bpf_poll_ringbuf``, the calls BCC's Python makes) without libbcc proper: that library
    links clang and LLVM, ~60 MB of RSS just to map it."""

    def __init__(self, fd: int, callback: RecordCallback) -> None:
        lib = ctypes.CDLL("libbcc_bpf.so.0", use_errno=True)
        lib.bpf_new_ringbuf.restype = ctypes.c_void_p
        lib.bpf_new_ringbuf.argtypes = [ctypes.c_int, _RING_CALLBACK, ctypes.c_void_p]
        lib.bpf_poll_ringbuf.restype = ctypes.c_int
        lib.bpf_poll_ringbuf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.bpf_free_ringbuf.restype = None
        lib.bpf_free_ringbuf.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._lock = threading.Lock()

        def trampoline(ctx: Any, data: int, size: int) -> int:
            callback(ctx, data, size)
            return 0

        self._callback = _RING_CALLBACK(trampoline)  # kept: libbpf holds the pointer
        self._ring = lib.bpf_new_ringbuf(fd, self._callback, None)
        if not self._ring:
            raise LoadError(f"cannot open the ring buffer: {os.strerror(ctypes.get_errno())}")

    def poll(self, timeout_ms: int) -> None:
        """Run the callback for what the ring holds, waiting up to ``timeout_ms`` for it. A no-op
        once closed: the lock keeps ``close`` from freeing the ring under a poll in progress
        (the sensor's stop gives its poll thread 5 s; a backlog on a loaded node can take
        longer, and libbpf would then poll freed memory)."""
        with self._lock:
            if self._ring:
                self._lib.bpf_poll_ringbuf(self._ring, timeout_ms)

    def close(self) -> None:
        with self._lock:
            if self._ring:
                self._lib.bpf_free_ringbuf(self._ring)
                self._ring = None


@dataclass
class LoadedProgram:
    """One loaded program (maps, programs, attachments by fd) and what went into it.
    ``origin``: ``cache`` (loaded from the program cache, no compiler) or ``compiled``."""

    objects: KernelObjects
    tables: dict[str, Table]
    probes: list[Probe]
    failed: dict[str, str] = field(default_factory=dict)  # probe -> compiler/verifier text
    missing_tracepoints: dict[str, list[str]] = field(default_factory=dict)
    text: str = ""
    budget: bool = False  # the per-cgroup budget is compiled in (its maps exist)
    origin: str = "compiled"
    cache_path: Optional[Path] = None  # the image loaded or written (None: cache off/unwritable)
    _drops_seen: int = 0
    _stash_seen: int = 0
    _misses_seen: int = 0
    _ring: Optional[RingPoller] = None

    def table(self, name: str) -> Table:
        return self.tables[name]

    def ring_fd(self) -> int:
        """The ring buffer map's fd (``og_events``, valid until ``close``), for a batch reader
        (ringbuf.py) instead of ``open_ring``/``poll``."""
        return self.objects.maps[RING_NAME]

    @property
    def program_fds(self) -> dict[str, int]:
        """Loaded program fds by function name (bpf stats in /proc/self/fdinfo)."""
        return dict(self.objects.programs)

    @property
    def program_loads(self) -> dict[str, ProgramLoad]:
        """Each function's ``BPF_PROG_LOAD`` (time, instructions verified), by function name."""
        return dict(self.objects.loads)

    def open_ring(self, callback: RecordCallback) -> None:
        self._ring = RingPoller(self.ring_fd(), callback)

    def poll(self, timeout_ms: int) -> None:
        assert self._ring is not None, "open_ring first"
        self._ring.poll(timeout_ms)

    def kernel_drops(self) -> int:
        """Records lost so far because the ring buffer was full (sum over CPUs)."""
        return self.tables[DROPS_NAME].percpu_sum(0)

    def recursion_misses(self) -> int:
        """Runs of our programs the kernel skipped because a BPF program was already running on
        that CPU (``recursion_misses`` in each program's fdinfo, summed): a record that was never
        made. A softirq tracepoint firing over a syscall's program is the usual case."""
        total = 0
        for fd in self.objects.programs.values():
            try:
                with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
                    for line in f:
                        if line.startswith("recursion_misses:"):
                            total += int(line.split()[1])
                            break
            except (OSError, ValueError):
                continue
        return total

    def stash_drops(self) -> int:
        """Syscalls not reported so far because their entry state could not be stashed for the
        exit (a full stash map; sum over CPUs)."""
        return self.tables[DROPS_NAME].percpu_sum(1)

    def _account(self, total: int, seen: str, stage: str, reason: str) -> int:
        """Add ``total`` (a kernel counter) minus what attribute ``seen`` holds to
        telemetry.dropped{stage,reason}; returns that delta (0 when the counter did not grow)."""
        delta: int = total - int(getattr(self, seen))
        if delta <= 0:
            return 0
        telemetry.dropped.labels(stage, reason).inc(delta)
        setattr(self, seen, total)
        return delta

    def account_kernel_drops(self) -> int:
        """Add the drops since the last call to telemetry.dropped{kernel_ring,ringbuf_full} and
        {kernel_stash,stash_full}; returns the ring buffer's."""
        self._account(self.stash_drops(), "_stash_seen", "kernel_stash", "stash_full")
        return self._account(self.kernel_drops(), "_drops_seen", "kernel_ring", "ringbuf_full")

    def account_recursion_misses(self) -> int:
        """Add the programs' recursion misses since the last call to
        telemetry.dropped{kernel_prog,recursion_miss}; returns them."""
        return self._account(self.recursion_misses(), "_misses_seen", "kernel_prog",
                             "recursion_miss")

    def budget_drops(self) -> int:
        """Records not sent so far because their cgroup was over budget (sum over CPUs)."""
        if not self.budget:
            return 0
        return self.tables[BUDGET_DROPS_NAME].percpu_sum(0)

    def budget_entries(self) -> Iterator[tuple[int, int, int]]:
        """(cgroup id, dropped, dropped high-value) of every cgroup the budget tracks."""
        if not self.budget:
            return
        for key, value in self.tables[BUDGET_NAME].items():  # struct og_budget
            yield int(key.value), int(value.dropped), int(value.dropped_high)

    def close(self) -> None:
        """Detach first, so a poll still under way (libbpf's poll runs as long as records keep
        coming) drains and returns; then free the ring (kept: later polls are no-ops), then
        the fds."""
        self.objects.detach()
        if self._ring is not None:
            self._ring.close()
        self.objects.close()
