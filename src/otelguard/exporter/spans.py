"""Process and connection spans derived from the event stream, with deterministic ids.

One span per process image (exec -> exit, or exec -> next exec), kind INTERNAL, named
``exec <exe name>``; one child span per TCP connection (connect/accept -> ``EV_NETWORK_CLOSE``
matched by 4-tuple), kind CLIENT/SERVER. Ids are hashes, not random, so a record carries its
span's ids before the span ends and a late record (or a restarted agent) lands in the same trace:

- trace_id = H16(container.id, root pid, root start ns): ``Event.root_pid`` starts a new trace
  when a long-lived parent spawns work, which keeps traces bounded; that root span gets a LINK
  to the parent's span instead of a parent id.
- span_id  = H8(container.id, pid, process start ns, exec count).

Memory is bounded: at most ``max_open`` open spans (LRU on activity); an evicted span is ended
with ``otelguard.span.end_reason=evicted`` and counted in :attr:`SpanTracker.evicted`. Cost per
event: one or two dict lookups; a blake2b hash (~1 µs) only when a span opens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, cast

from otelguard import semconv
from otelguard.ebpf.events import AttrValue, Event

ResourceKey = tuple[str, str]  # (container.id, k8s.pod.uid); ("", "") is the host

KIND_INTERNAL = 1  # opentelemetry.proto.trace.v1.Span.SpanKind values
KIND_SERVER = 2
KIND_CLIENT = 3
STATUS_ERROR = 2

EINPROGRESS = 115
# on close these replace what the connect/accept said (final counters and state)
_CLOSE_WINS = frozenset({semconv.NETWORK_BYTES_SENT, semconv.NETWORK_BYTES_RECEIVED,
                         semconv.NETWORK_CONNECTION_STATE, semconv.NETWORK_CONNECTION_DURATION_NS})
_PROCESS_PREFIXES = ("process.", "otelguard.process.")
_NETWORK_PREFIXES = ("network.", "server.", "client.", "otelguard.network.", "otelguard.socket.")


def trace_id_of(container_id: str, root_pid: int, root_start_ns: int) -> bytes:
    return _nonzero(hashlib.blake2b(
        f"t\0{container_id}\0{root_pid}\0{root_start_ns}".encode(), digest_size=16).digest())


def span_id_of(container_id: str, pid: int, start_ns: int, exec_count: int) -> bytes:
    return _nonzero(hashlib.blake2b(
        f"s\0{container_id}\0{pid}\0{start_ns}\0{exec_count}".encode(), digest_size=8).digest())


def _nonzero(digest: bytes) -> bytes:
    return digest if any(digest) else digest[:-1] + b"\x01"


@dataclass(slots=True)
class SpanData:
    """A span as plain data; the builder turns finished ones into OTLP."""

    resource: ResourceKey
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int = 0
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    links: list[tuple[bytes, bytes]] = field(default_factory=list)
    status_code: int = 0
    status_message: str = ""
    # process spans only
    pid: int = 0
    exec_count: int = 0


# events that open or end spans: a run (observe_run) never has one past its first record
SPAN_EVENTS = frozenset({semconv.EV_PROCESS_EXEC, semconv.EV_PROCESS_EXIT,
                         semconv.EV_NETWORK_CONNECT, semconv.EV_NETWORK_ACCEPT,
                         semconv.EV_NETWORK_CLOSE})


def run_end(events: Sequence[object], start: int) -> int:
    """The end of the run that starts at ``events[start]``: the following records of the same
    process version (and Resource) that open or end no span (a ring batch of one busy process is one run)."""
    first = events[start]
    assert type(first) is Event
    pid, proc_start, cid, pod = first.pid, first.process_start_ns, first.container_id, \
        first.pod_uid
    end, n = start + 1, len(events)
    while end < n:
        ev = events[end]
        if type(ev) is not Event or ev.pid != pid or ev.process_start_ns != proc_start or ev.container_id != cid \
                or ev.pod_uid != pod or ev.name in SPAN_EVENTS:
            break
        end += 1
    return end


# Open-span keys: ("p", container.id, pid, process start ns) for processes,
# ("c", peer addr, peer port, local port, start ns, pid) for connections.


class SpanTracker:
    """Feeds on events in arrival order; hands out ids and collects finished spans."""

    def __init__(self, max_open: int = 65536, recent_ended: int = 8192) -> None:
        if max_open < 2:
            raise ValueError("max_open must be >= 2")
        self.max_open = max_open
        self._open: OrderedDict[tuple[object, ...], SpanData] = OrderedDict()
        self._proc_by_pid: dict[int, tuple[object, ...]] = {}
        self._conn_by_peer: dict[tuple[object, object], list[tuple[object, ...]]] = {}
        self._recent: OrderedDict[tuple[object, ...], tuple[bytes, bytes, int]] = OrderedDict()
        self._recent_max = recent_ended
        self._finished: list[SpanData] = []
        # called with the pid of a process span whose ids this tracker no longer remembers
        # (fell out of the recently ended): the sensor's native lane stops using them
        self.released: Optional[Callable[[int], None]] = None
        self.evicted = 0
        self._now = 0
        self.opened = 0

    # -- public --------------------------------------------------------------------------------
    def observe(self, ev: Event) -> tuple[bytes, bytes]:
        """(trace_id, span_id) of the acting process's span, updating spans from this event."""
        name = ev.name
        if ev.time_ns > self._now:
            self._now = ev.time_ns
        if name == semconv.EV_PROCESS_EXEC:
            proc = self._exec(ev)
        elif name == semconv.EV_NETWORK_CLOSE:
            self._close_conn(ev)
            if not ev.pid:  # socket state changes run in arbitrary (softirq) context
                return b"", b""
            proc = self._process_span(ev)  # the sensor attributed it to the socket's owner
        else:
            proc = self._process_span(ev)
            if name == semconv.EV_PROCESS_EXIT:
                code = ev.get(semconv.PROCESS_EXIT_CODE)
                if code is not None:
                    proc.attrs[semconv.PROCESS_EXIT_CODE] = code
                self._end_key(self._proc_key(ev), ev.time_ns, "exit")
            elif name == semconv.EV_NETWORK_CONNECT:
                self._open_conn(ev, proc, KIND_CLIENT)
            elif name == semconv.EV_NETWORK_ACCEPT:
                self._open_conn(ev, proc, KIND_SERVER)
        return proc.trace_id, proc.span_id

    def observe_run(self, run: Sequence[Event]) -> tuple[bytes, bytes]:
        """:meth:`observe` for a run of records of one process version (same container, pid and
        start; see :func:`run_end`): the first is observed, the rest only advance the clock,
        which is exactly what observing each would do. One span lookup per run instead of per
        record."""
        ids = self.observe(run[0])
        last = run[-1].time_ns
        if last > self._now:
            self._now = last
        return ids

    def touch(self, container_id: str, pid: int, process_start_ns: int, time_ns: int) -> None:
        """A run of records encoded elsewhere (the sensor's native lane, whose ids came from
        this tracker) reached the exporter: the process's span stays recently used."""
        key = ("p", container_id, pid, process_start_ns)
        if key in self._open:
            self._open.move_to_end(key)
        if time_ns > self._now:
            self._now = time_ns

    def take_finished(self) -> list[SpanData]:
        out, self._finished = self._finished, []
        return out

    def end_all(self, now_ns: int, reason: str = "shutdown") -> None:
        """End every open span (agent shutdown); they appear in the next take_finished()."""
        for key in list(self._open):
            self._end_key(key, now_ns, reason)

    @property
    def open_count(self) -> int:
        return len(self._open)

    # -- processes -----------------------------------------------------------------------------
    def _proc_key(self, ev: Event) -> tuple[object, ...]:
        return ("p", ev.container_id, ev.pid, ev.process_start_ns)

    def _process_span(self, ev: Event) -> SpanData:
        key = self._proc_key(ev)
        span = self._open.get(key)
        if span is not None:
            self._open.move_to_end(key)
            return span
        recent = self._recent.get(key)
        if recent is not None:  # a late record of an ended process: same ids, no new span
            trace_id, span_id, _ = recent
            return SpanData(("", ""), trace_id, span_id, b"", "", KIND_INTERNAL, 0)
        # first sight without an exec (process older than the agent, or fork without exec)
        return self._open_process(ev, exec_count=0, start_ns=ev.process_start_ns or ev.time_ns)

    def _exec(self, ev: Event) -> SpanData:
        key = self._proc_key(ev)
        prev = self._open.get(key)
        count = 1
        if prev is not None:
            count = prev.exec_count + 1
            self._end_key(key, ev.time_ns, "exec")
        else:
            recent = self._recent.get(key)
            if recent is not None:
                count = recent[2] + 1
        return self._open_process(ev, exec_count=count, start_ns=ev.time_ns)

    def _open_process(self, ev: Event, exec_count: int, start_ns: int) -> SpanData:
        cid = ev.container_id
        root_pid, root_start = (ev.root_pid, ev.root_start_ns) if ev.root_pid else (
            ev.pid, ev.process_start_ns)
        trace_id = trace_id_of(cid, root_pid, root_start)
        span_id = span_id_of(cid, ev.pid, ev.process_start_ns, exec_count)
        exe = ev.get(semconv.PROCESS_EXECUTABLE_NAME, "") or ev.syscall
        span = SpanData(
            resource=(cid, ev.pod_uid), trace_id=trace_id, span_id=span_id, parent_span_id=b"",
            # a child seen first at its fork runs its parent's image until it execs
            name=f"{'fork' if ev.name == semconv.EV_PROCESS_FORK else 'exec'} {exe}",
            kind=KIND_INTERNAL, start_ns=start_ns,
            attrs={k: v for k, v in ev.items() if k.startswith(_PROCESS_PREFIXES)},
            pid=ev.pid, exec_count=exec_count,
        )
        span.attrs.setdefault(semconv.PROCESS_PID, ev.pid)
        ppid = ev.get(semconv.PROCESS_PARENT_PID)
        parent_key = self._proc_by_pid.get(ppid) if isinstance(ppid, int) else None
        parent = self._open.get(parent_key) if parent_key is not None else None
        if parent is not None and parent.pid != ev.pid:
            if parent.trace_id == trace_id:
                span.parent_span_id = parent.span_id
            else:
                span.links.append((parent.trace_id, parent.span_id))
        key = self._proc_key(ev)
        self._add(key, span)
        self._proc_by_pid[ev.pid] = key
        return span

    # -- connections ---------------------------------------------------------------------------
    def _open_conn(self, ev: Event, proc: SpanData, kind: int) -> None:
        _, attrs = ev.split()  # network keys are the event's own, never in its process part
        if attrs.get(semconv.NETWORK_TRANSPORT) != "tcp":
            return  # UDP/unix "connections" have no close to end a span: records only
        peer = attrs.get(semconv.NETWORK_PEER_ADDRESS, "")
        port = attrs.get(semconv.NETWORK_PEER_PORT, 0)
        lport = attrs.get(semconv.NETWORK_LOCAL_PORT, 0)
        failed = ev.ret < 0 and ev.ret != -EINPROGRESS
        if kind == KIND_SERVER and ev.ret < 0:
            return  # accept() failing (EAGAIN on non-blocking sockets) is no connection
        span_id = _nonzero(hashlib.blake2b(
            f"c\0{proc.span_id.hex()}\0{peer}\0{port}\0{lport}\0{ev.time_ns}".encode(),
            digest_size=8).digest())
        span = SpanData(
            resource=(ev.container_id, ev.pod_uid), trace_id=proc.trace_id, span_id=span_id,
            parent_span_id=proc.span_id,
            name=f"connect {peer}:{port}" if kind == KIND_CLIENT else "accept",
            kind=kind, start_ns=ev.time_ns,
            attrs={k: v for k, v in attrs.items() if k.startswith(_NETWORK_PREFIXES)},
        )
        if failed:
            span.status_code = STATUS_ERROR
            span.status_message = str(attrs.get(semconv.ERROR_TYPE, f"errno {-ev.ret}"))
            span.end_ns = ev.time_ns
            self._finished.append(span)
            return
        key: tuple[object, ...] = ("c", peer, port, lport, ev.time_ns, ev.pid)
        self._add(key, span)
        self._conn_by_peer.setdefault((peer, port), []).append(key)

    def _close_conn(self, ev: Event) -> None:
        _, attrs = ev.split()  # network keys are the event's own, never in its process part
        peer = attrs.get(semconv.NETWORK_PEER_ADDRESS, "")
        port = attrs.get(semconv.NETWORK_PEER_PORT, 0)
        lport = attrs.get(semconv.NETWORK_LOCAL_PORT, 0)
        keys = self._conn_by_peer.get((peer, port))
        if not keys:
            return
        # prefer the exact 4-tuple; a connect() seen before bind() has no local port yet
        match = next((k for k in keys if k[3] == lport), None)
        if match is None:
            match = next((k for k in keys if not k[3]), None)
        if match is None:
            return
        span = self._open.get(match)
        if span is not None:
            for k, v in attrs.items():
                if k.startswith(_NETWORK_PREFIXES):
                    span.attrs.setdefault(k, v)
                    if k in _CLOSE_WINS:
                        span.attrs[k] = v
            if (span.kind == KIND_CLIENT and semconv.NETWORK_CONNECTION_STATE in attrs
                    and semconv.NETWORK_CONNECTION_DURATION_NS not in attrs):
                # the sensor's close of a connection that never got established (async refusal)
                span.status_code = STATUS_ERROR
                span.status_message = "connection never established"
        self._end_key(match, ev.time_ns, "close")

    # -- bookkeeping ---------------------------------------------------------------------------
    def _add(self, key: tuple[object, ...], span: SpanData) -> None:
        self._open[key] = span
        self.opened += 1
        while len(self._open) > self.max_open:
            old_key = next(iter(self._open))
            self.evicted += 1
            self._end_key(old_key, self._now, "evicted")

    def _end_key(self, key: tuple[object, ...], end_ns: int, reason: str) -> None:
        span = self._open.pop(key, None)
        if span is None:
            return
        if key[0] == "p":
            if self._proc_by_pid.get(span.pid) == key:
                del self._proc_by_pid[span.pid]
            self._recent[key] = (span.trace_id, span.span_id, span.exec_count)
            self._recent.move_to_end(key)
            while len(self._recent) > self._recent_max:
                gone = self._recent.popitem(last=False)[0]
                if self.released is not None:
                    self.released(int(cast(int, gone[2])))
        else:
            peer_keys = self._conn_by_peer.get((key[1], key[2]))
            if peer_keys is not None:
                peer_keys.remove(key)
                if not peer_keys:
                    del self._conn_by_peer[(key[1], key[2])]
        span.end_ns = max(end_ns, span.start_ns)
        span.attrs[semconv.SPAN_END_REASON] = reason
        self._finished.append(span)
