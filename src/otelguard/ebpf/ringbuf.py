"""Batch consumers of a BPF ring buffer (``BPF_MAP_TYPE_RINGBUF``) given only its map fd.

Why: BCC's ``ring_buffer_poll`` calls a Python callback once per record (a ctypes trampoline,
~1 µs, plus ``string_at``). A :class:`RingReader` hands Python whole batches instead: one call
returns up to ``max_records`` records as ``bytes``, and the caller loops over them. Any loader
that can hand out the ring's map fd works (``LoadedProgram.ring_fd()``, whether the program came
from the program cache or a compile); nothing here imports BCC.

Two implementations of one interface:

- ``native``: the Rust extension ``otelguard_native`` (``native/``, built by ``make setup``
  when cargo is there): maps the ring and drains it in native code, epoll with the GIL released.
- ``python``: the same with :mod:`mmap` and :mod:`select`, used when the extension is not built.
  Reads and writes of the positions are plain 8-byte loads and stores, which are acquire/release
  on x86-64 (TSO); on weaker memory models use the native reader (Rust atomics).

The layout both follow is the kernel's (kernel/bpf/ringbuf.c): map page 0 is the consumer page
(``consumer_pos``, the only thing user space writes), page 1 the producer page
(``producer_pos``), then the data area (the map's ``max_entries`` bytes, a power of two) mapped
twice in a row so a record that wraps reads as one slice. Each record has an 8-byte header: a
u32 length with BUSY (reserved, not committed yet: stop there) and DISCARD (skip) in its top
bits, then a u32 the kernel uses; records are 8-byte aligned. ``consumer_pos`` moves past each
record once it is copied out. Wake-up: the kernel's ring buffer is pollable (EPOLLIN while
data is available) and, with the probes' default submit flags, wakes a waiter when it commits a
record at the consumer position, i.e. once the consumer has caught up; so a reader waits only
when nothing is pending. Records the kernel could not reserve (ring full) never reach here:
the probes count them in ``og_drops`` (loader.py), whichever reader is used.

Cost per record taken out of a full ring (``bench.hot_path --readers``, docs/benchmarks.md, "Ring
readers"): native 0.17 µs (one ``bytes`` object), python 0.67 µs, BCC's callback 1.35 µs.
"""

from __future__ import annotations

import mmap
import select
import struct
from dataclasses import dataclass
from typing import Any, Literal, Optional, Protocol

from otelguard.ebpf.errors import SensorError

BPF_MAP_TYPE_RINGBUF = 27
BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SZ = 8

ReaderKind = Literal["auto", "bcc", "native", "python"]
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class RingError(SensorError):
    """The fd is not a usable ring buffer, or mapping/polling it failed."""


@dataclass(frozen=True)
class RingInfo:
    """What /proc/self/fdinfo says about a BPF map fd."""

    map_type: int
    data_size: int  # max_entries: bytes in the data area


def ring_info(map_fd: int) -> RingInfo:
    """The map's type and size from fdinfo; RingError unless it is a ring buffer."""
    fields: dict[str, str] = {}
    try:
        with open(f"/proc/self/fdinfo/{map_fd}", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError as exc:
        raise RingError(f"fd {map_fd}: cannot read its fdinfo ({exc})") from exc
    if "map_type" not in fields or "max_entries" not in fields:
        raise RingError(f"fd {map_fd} is not a BPF map")
    info = RingInfo(int(fields["map_type"]), int(fields["max_entries"]))
    if info.map_type != BPF_MAP_TYPE_RINGBUF:
        raise RingError(f"fd {map_fd} is a BPF map of type {info.map_type}, "
                        f"not a ring buffer ({BPF_MAP_TYPE_RINGBUF})")
    return info


class RingReader(Protocol):
    """Drains one ring buffer from one thread. ``drain`` returns up to ``max_records`` records
    (payloads, header stripped); when none is ready it waits at most ``timeout_ms`` (0: not at
    all) for the kernel's wake-up and tries once more, so an empty list means a quiet ring."""

    kind: str

    def drain(self, max_records: int, timeout_ms: int) -> list[bytes]: ...

    @property
    def records(self) -> int:
        """Records returned so far."""
        ...

    @property
    def discarded(self) -> int:
        """Records the producer discarded (skipped)."""
        ...

    def close(self) -> None: ...


class NativeRingReader:
    """The Rust reader (``otelguard_native.RingBuffer``); ImportError when it is not built."""

    kind = "native"

    def __init__(self, map_fd: int) -> None:
        import otelguard_native  # built from native/ by `make setup`; optional

        size = ring_info(map_fd).data_size
        try:
            self._ring = otelguard_native.RingBuffer(map_fd, size)
        except (OSError, ValueError) as exc:
            raise RingError(f"ring buffer fd {map_fd}: {exc}") from exc

    def drain(self, max_records: int, timeout_ms: int) -> list[bytes]:
        records: list[bytes] = self._ring.drain(max_records, timeout_ms)
        return records

    def drain_lane(self, lane: Any, max_records: int, timeout_ms: int,
                   observed_ns: int) -> list[Any]:
        """``drain`` through an ``otelguard_native.Lane`` (lane.py): items in ring order."""
        items: list[Any] = self._ring.drain_lane(lane, max_records, timeout_ms, observed_ns)
        return items

    @property
    def records(self) -> int:
        return int(self._ring.records)

    @property
    def discarded(self) -> int:
        return int(self._ring.discarded)

    def close(self) -> None:
        self._ring.close()


class PyRingReader:
    """The fallback: the same consumer with mmap and epoll, no extension needed."""

    kind = "python"

    def __init__(self, map_fd: int) -> None:
        size = ring_info(map_fd).data_size
        page = mmap.PAGESIZE
        if size <= 0 or size & (size - 1) or size % page:
            raise RingError(f"ring buffer fd {map_fd}: data size {size} is not a power-of-two "
                            f"multiple of the page size {page}")
        self._page, self._mask = page, size - 1
        self._max_len = size - HDR_SZ
        self._records = self._discarded = 0
        self._epoll: Optional[select.epoll] = None
        try:
            self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                                   offset=page)
            self._epoll = select.epoll()
            self._epoll.register(map_fd, select.EPOLLIN)
        except OSError as exc:
            self.close()
            raise RingError(f"ring buffer fd {map_fd}: {exc}") from exc

    def _consume(self, out: list[bytes], max_records: int) -> None:
        cons_mm, prod_mm = self._cons, self._prod
        u32, u64 = _U32.unpack_from, _U64.unpack_from
        data, mask = self._page, self._mask
        cons = u64(cons_mm, 0)[0]
        prod = u64(prod_mm, 0)[0]
        while cons < prod and len(out) < max_records:
            at = data + (cons & mask)
            length = u32(prod_mm, at)[0]
            if length & BUSY_BIT:
                break  # not committed yet; its commit wakes the poller
            n = length & ~(BUSY_BIT | DISCARD_BIT)
            if n > self._max_len:
                raise RingError(f"ring buffer record length {n} exceeds the data area")
            if length & DISCARD_BIT:
                self._discarded += 1
            else:
                out.append(prod_mm[at + HDR_SZ:at + HDR_SZ + n])
                self._records += 1
            cons += (n + HDR_SZ + 7) & ~7
            if cons >= prod:
                prod = u64(prod_mm, 0)[0]
        _U64.pack_into(cons_mm, 0, cons)

    def drain(self, max_records: int, timeout_ms: int) -> list[bytes]:
        out: list[bytes] = []
        self._consume(out, max_records)
        if not out and timeout_ms and self._epoll is not None and \
                _U64.unpack_from(self._cons, 0)[0] >= _U64.unpack_from(self._prod, 0)[0]:
            self._epoll.poll(timeout_ms / 1000 if timeout_ms > 0 else -1, 1)
            self._consume(out, max_records)
        return out

    @property
    def records(self) -> int:
        return self._records

    @property
    def discarded(self) -> int:
        return self._discarded

    def close(self) -> None:
        for name in ("_cons", "_prod"):
            mm = getattr(self, name, None)
            if mm is not None:
                mm.close()
                setattr(self, name, None)
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None


def native_available() -> bool:
    """The Rust extension is importable (built and installed by `make setup`)."""
    try:
        import otelguard_native  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kind(kind: ReaderKind) -> Literal["bcc", "native", "python"]:
    """``auto``: the native reader when it is built, else the Python one."""
    if kind == "auto":
        return "native" if native_available() else "python"
    return kind


def open_reader(map_fd: int, kind: Literal["native", "python"]) -> RingReader:
    """A reader of ``kind`` on ``map_fd``; RingError when it cannot be had (for ``native``:
    the extension is not built, see `make setup`)."""
    if kind == "native":
        try:
            return NativeRingReader(map_fd)
        except ImportError as exc:
            raise RingError(f"the native ring reader is not built ({exc}); run `make setup` "
                            "with cargo on PATH, or use ring_reader: python") from exc
    return PyRingReader(map_fd)
