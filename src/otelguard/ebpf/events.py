"""The typed event that leaves ebpf/: one kernel observation, already enriched by the process table.

This is the contract between the sensors (ebpf/) and the exporter. Attributes are keyed by the
constants of :mod:`otelguard.semconv`, so the exporter maps any event to a LogRecord without
knowing its area. They come in two parts:

- ``process``: a :class:`ProcessAttrs`, the acting process's attributes (``process.*``, ancestry,
  cwd, user), built by the sensor once per process version (exec, chdir, or every couple of
  seconds) and shared, unchanged, by every event of that process. Because it is one object per
  version, the exporter encodes it once and reuses the bytes (cached on the object).
- ``own``: the event's attributes (the probe's, record uid, syscall, return value...); they win
  over the process part when a key is in both.

``Event.attrs`` is the merged view consumers and tests read (``ev.attrs[semconv.FILE_PATH]``,
``ev.attrs[semconv.PROCESS_PID]``). Events built with ``attrs=`` only (tests, benchmarks, other
sources) have no process part and ``attrs`` is that dict itself.
"""

from __future__ import annotations

from itertools import chain
from typing import Iterable, Mapping, Optional, Union

AttrValue = Union[str, int, float, bool, list[str], list[int]]


class ProcessAttrs:
    """One version of a process's attributes, shared by all events of that version.

    Immutable by contract (``attrs`` is typed read-only, lists inside included): the sensor builds
    a new object when the process changes instead of editing this one, so anything derived from
    it can be cached on it. ``wire`` is that cache: the exporter's encoded attribute block, a pure
    function of ``attrs`` (so any encoder may fill it; a race writes equal bytes). ``built_ns``:
    CLOCK_MONOTONIC when the sensor built it (0: not the sensor's), which the native lane
    (lane.py) compares with the pid's last change and its lifetime.
    """

    __slots__ = ("attrs", "wire", "built_ns")

    def __init__(self, attrs: Mapping[str, AttrValue], built_ns: int = 0) -> None:
        self.attrs = attrs
        self.wire: Optional[bytes] = None
        self.built_ns = built_ns

    def __repr__(self) -> str:
        return f"ProcessAttrs({dict(self.attrs)!r})"


# The pod_uid of an Event whose cgroup could not be resolved: it selects a Resource of its own
# that is neither a container's nor the host's (exporter/mapping.py); never emitted as a value.
UNRESOLVED_POD_UID = "<unresolved>"


class Event:
    """One security-relevant kernel observation.

    ``name`` is the LogRecord ``event_name`` (``semconv.EV_*``); ``time_ns`` is wall-clock time
    (kernel monotonic time converted with the boot-time offset); ``container_id`` / ``pod_uid``
    are empty for host processes and select the OTLP Resource the record lands in.
    ``process_start_ns`` is the wall-clock start of the acting process and ``root_pid`` /
    ``root_start_ns`` the process whose exec started this trace (span and trace identity).

    A plain slotted class rather than a dataclass because ``attrs`` is a computed view: with a
    process part, its first read builds the merged dict (~1 µs for 30 keys) and keeps it, so
    writes through ``ev.attrs[...]`` stick and :meth:`split` then hands that dict to encoders.
    Hot-path readers that want one key use :meth:`get`, which builds nothing.
    """

    __slots__ = ("name", "time_ns", "pid", "tid", "syscall", "ret", "container_id", "pod_uid",
                 "cgroup_path", "process_start_ns", "root_pid", "root_start_ns", "own", "body",
                 "process", "_merged")

    def __init__(self, name: str, time_ns: int, pid: int, tid: int, syscall: str, ret: int,
                 container_id: str = "", pod_uid: str = "", cgroup_path: str = "",
                 process_start_ns: int = 0, root_pid: int = 0, root_start_ns: int = 0,
                 attrs: Optional[dict[str, AttrValue]] = None, body: str = "",
                 process: Optional[ProcessAttrs] = None) -> None:
        self.name = name
        self.time_ns = time_ns
        self.pid = pid
        self.tid = tid
        self.syscall = syscall
        self.ret = ret
        self.container_id = container_id
        self.pod_uid = pod_uid
        self.cgroup_path = cgroup_path
        self.process_start_ns = process_start_ns
        self.root_pid = root_pid
        self.root_start_ns = root_start_ns
        self.own: dict[str, AttrValue] = {} if attrs is None else attrs
        self.body = body
        self.process = process
        self._merged: Optional[dict[str, AttrValue]] = None

    @property
    def attrs(self) -> dict[str, AttrValue]:
        """All attributes: the process part overridden by the event's own (same key order as
        ``{**process.attrs, **own}``). Built on first read when there is a process part."""
        merged = self._merged
        if merged is None:
            process = self.process
            if process is None:
                return self.own
            merged = self._merged = {**process.attrs, **self.own}
        return merged

    @attrs.setter
    def attrs(self, value: dict[str, AttrValue]) -> None:
        self.own, self.process, self._merged = value, None, None

    def get(self, key: str, default: Optional[AttrValue] = None) -> Optional[AttrValue]:
        """One attribute of the merged view without building it."""
        merged = self._merged
        if merged is not None:
            return merged.get(key, default)
        own = self.own
        if key in own:
            return own[key]
        process = self.process
        if process is not None:
            return process.attrs.get(key, default)
        return default

    def items(self) -> Iterable[tuple[str, AttrValue]]:
        """Every (key, value) without building the merged view: the process part first, then
        the event's own, so a key in both comes twice with the winning value last
        (``dict(ev.items()) == ev.attrs``, key order included)."""
        merged = self._merged
        if merged is not None:
            return merged.items()
        process = self.process
        if process is None:
            return self.own.items()
        return chain(process.attrs.items(), self.own.items())

    def split(self) -> tuple[Optional[ProcessAttrs], dict[str, AttrValue]]:
        """(shared process part, the rest) for encoders that cache the process part: the rest is
        the event's own attributes, or the whole merged dict (and no process part) once
        ``attrs`` was read or written, since it may have been edited since."""
        merged = self._merged
        if merged is not None:
            return None, merged
        return self.process, self.own

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _COMPARED) \
            and dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaced

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in _COMPARED)
        return f"Event({fields}, attrs={dict(self.items())!r})"


_COMPARED = ("name", "time_ns", "pid", "tid", "syscall", "ret", "container_id", "pod_uid",
             "cgroup_path", "process_start_ns", "root_pid", "root_start_ns", "body")
