"""Probe decoding without a kernel: record headers and a DecodeContext that records as given."""

from __future__ import annotations

from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.probe import Header


class RecordingContext:
    """A DecodeContext for unit tests: header fields straight into the Event, no process table."""

    def make_event(self, hdr: Header, name: str, syscall: str,
                   attrs: dict[str, AttrValue]) -> Event:
        return Event(name=name, time_ns=int(hdr.ktime_ns), pid=int(hdr.pid), tid=int(hdr.tid),
                     syscall=syscall, ret=int(hdr.ret), attrs=attrs)

    def resolve_path(self, pid: int, dirfd: int, path: str) -> str:
        return path if path.startswith("/") else f"/cwd-of-{pid}/{path}"


def header(type_id: int, pid: int = 100, ret: int = 0, ktime: int = 1_000) -> Header:
    h = Header()
    h.type, h.pid, h.tid, h.ret, h.ktime_ns = type_id, pid, pid, ret, ktime
    h.comm = b"test"
    return h
