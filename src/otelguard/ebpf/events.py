"""The typed event that leaves ebpf/: one kernel observation, already enriched by the process table.

This is the contract between the sensors (ebpf/) and the exporter. Area-specific details live in
``attrs`` keyed by the constants of :mod:`otelguard.semconv`, so the exporter maps any event to a
LogRecord without knowing its area. Process attributes (``process.*``, ancestry, cwd, user) are
filled from :class:`~otelguard.ebpf.proctable.ProcessTable` at decode time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

AttrValue = Union[str, int, float, bool, list[str], list[int]]


@dataclass(slots=True)
class Event:
    """One security-relevant kernel observation.

    ``name`` is the LogRecord ``event_name`` (``semconv.EV_*``); ``time_ns`` is wall-clock time
    (kernel monotonic time converted with the boot-time offset); ``container_id`` / ``pod_uid``
    are empty for host processes and select the OTLP Resource the record lands in.
    """

    name: str
    time_ns: int
    pid: int
    tid: int
    syscall: str
    ret: int
    container_id: str = ""
    pod_uid: str = ""
    cgroup_path: str = ""
    process_start_ns: int = 0  # wall-clock start of the acting process (span/trace identity)
    root_pid: int = 0  # the process whose exec started this trace (bounded traces)
    root_start_ns: int = 0
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    body: str = ""
