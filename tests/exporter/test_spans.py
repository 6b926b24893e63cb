"""Span structure from event streams: process trees, bounded traces with links, connections."""

from __future__ import annotations

from otelguard import semconv as sc
from otelguard.exporter.spans import (
    KIND_CLIENT, KIND_INTERNAL, KIND_SERVER, STATUS_ERROR, SpanData, SpanTracker, run_end,
    span_id_of, trace_id_of,
)
from tests.exporter.scenario import CID, T0, ev, proc_attrs, shell_session


def _run(events: list, max_open: int = 1000) -> tuple[SpanTracker, dict[str, SpanData]]:
    tracker = SpanTracker(max_open=max_open)
    for e in events:
        tracker.observe(e)
    tracker.end_all(T0 + 10**6)
    spans = tracker.take_finished()
    return tracker, {s.name: s for s in spans}


def test_process_tree_in_one_trace() -> None:
    _, spans = _run(shell_session())
    bash, curl = spans["exec bash"], spans["exec curl"]
    assert bash.kind == curl.kind == KIND_INTERNAL
    assert bash.trace_id == curl.trace_id == trace_id_of(CID, 100, T0)
    assert bash.parent_span_id == b"" and curl.parent_span_id == bash.span_id
    assert curl.start_ns == T0 + 1000 and curl.end_ns == T0 + 6000
    assert curl.attrs[sc.SPAN_END_REASON] == "exit" and curl.attrs[sc.PROCESS_EXIT_CODE] == 0
    assert curl.attrs[sc.PROCESS_EXECUTABLE_PATH] == "/usr/bin/curl"
    assert sc.FILE_PATH not in curl.attrs  # only process.* attributes on process spans
    assert bash.attrs[sc.SPAN_END_REASON] == "shutdown"  # alive at shutdown


def test_new_root_starts_a_new_trace_linked_to_the_parent() -> None:
    _, spans = _run(shell_session())
    cron, job = spans["exec cron"], spans["exec sh"]
    assert job.trace_id != cron.trace_id
    assert job.trace_id == trace_id_of(CID, 301, T0 + 8900)
    assert job.parent_span_id == b""
    assert job.links == [(cron.trace_id, cron.span_id)]


def test_connection_spans() -> None:
    _, spans = _run(shell_session())
    curl = spans["exec curl"]
    ok = spans["connect 10.0.0.7:443"]
    assert ok.kind == KIND_CLIENT and ok.parent_span_id == curl.span_id
    assert ok.trace_id == curl.trace_id
    assert (ok.start_ns, ok.end_ns) == (T0 + 2000, T0 + 5000)  # connect -> close by 4-tuple
    assert ok.attrs[sc.SPAN_END_REASON] == "close"
    assert ok.attrs[sc.NETWORK_PEER_PORT] == 443 and ok.status_code == 0
    refused = spans["connect 10.0.0.7:8443"]
    assert refused.status_code == STATUS_ERROR and refused.status_message == "ECONNREFUSED"
    assert refused.end_ns == refused.start_ns


def test_accept_span_and_close_without_local_port_on_connect() -> None:
    srv = proc_attrs(200, 1, "nginx", "/usr/sbin/nginx")
    peer = {sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_PEER_ADDRESS: "10.1.1.1", sc.NETWORK_PEER_PORT: 5555,
            sc.NETWORK_LOCAL_PORT: 80}
    cli = proc_attrs(201, 1, "wget", "/usr/bin/wget")
    out = {sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_PEER_ADDRESS: "10.2.2.2", sc.NETWORK_PEER_PORT: 80}
    events = [
        ev(sc.EV_PROCESS_EXEC, 0, 200, "execve", 0, srv, root=(200, 0)),
        ev(sc.EV_NETWORK_ACCEPT, 100, 200, "accept4", 7, {**srv, **peer}, root=(200, 0)),
        ev(sc.EV_NETWORK_ACCEPT, 150, 200, "accept4", -11, {**srv}, root=(200, 0)),  # EAGAIN
        ev(sc.EV_NETWORK_CONNECT, 160, 201, "connect", -115, {**cli, **out}, root=(201, 0)),
        ev(sc.EV_NETWORK_CLOSE, 900, 0, "", 0, dict(peer), container=False),
        ev(sc.EV_NETWORK_CLOSE, 950, 0, "", 0, {**out, sc.NETWORK_LOCAL_PORT: 40000,
                                              sc.NETWORK_BYTES_SENT: 1234}, container=False),
    ]
    tracker, spans = _run(events)
    acc = spans["accept"]
    assert acc.kind == KIND_SERVER and (acc.start_ns, acc.end_ns) == (T0 + 100, T0 + 900)
    conn = spans["connect 10.2.2.2:80"]  # EINPROGRESS: open until its close
    assert conn.end_ns == T0 + 950 and conn.attrs[sc.NETWORK_BYTES_SENT] == 1234
    assert conn.attrs[sc.NETWORK_LOCAL_PORT] == 40000
    assert tracker.open_count == 0


def test_exec_twice_ends_the_previous_image() -> None:
    a = proc_attrs(400, 1, "sh", "/bin/sh")
    b = proc_attrs(400, 1, "python3", "/usr/bin/python3")
    events = [ev(sc.EV_PROCESS_EXEC, 0, 400, "execve", 0, a, root=(400, 0)),
              ev(sc.EV_PROCESS_EXEC, 50, 400, "execve", 0, b, root=(400, 0)),
              ev(sc.EV_PROCESS_EXIT, 90, 400, "exit_group", 0, b, root=(400, 0))]
    tracker = SpanTracker()
    ids = [tracker.observe(e) for e in events]
    spans = {s.name: s for s in tracker.take_finished()}
    assert spans["exec sh"].attrs[sc.SPAN_END_REASON] == "exec"
    assert spans["exec sh"].span_id == span_id_of(CID, 400, T0, 1)
    assert spans["exec python3"].span_id == span_id_of(CID, 400, T0, 2) == ids[2][1]
    # a late record of the exited process keeps its ids and opens nothing
    late = tracker.observe(ev(sc.EV_FILE_OPEN, 95, 400, "openat", 3, b, root=(400, 0)))
    assert late == ids[2] and tracker.open_count == 0


def test_process_seen_without_exec_gets_a_span_from_its_start() -> None:
    attrs = proc_attrs(55, 1, "sshd", "/usr/sbin/sshd")
    tracker = SpanTracker()
    ids = tracker.observe(ev(sc.EV_FILE_OPEN, 500, 55, "openat", 3, attrs, start=-100))
    assert ids == (trace_id_of(CID, 55, T0 - 100), span_id_of(CID, 55, T0 - 100, 0))
    tracker.end_all(T0 + 1000)
    (span,) = tracker.take_finished()
    assert span.start_ns == T0 - 100 and span.name == "exec sshd"


def test_open_spans_are_bounded() -> None:
    events = [ev(sc.EV_PROCESS_EXEC, i, 1000 + i, "execve", 0,
                 proc_attrs(1000 + i, 1, "sh", "/bin/sh"), start=i, root=(1000 + i, i))
              for i in range(50)]
    tracker = SpanTracker(max_open=10)
    for e in events:
        tracker.observe(e)
    assert tracker.open_count == 10 and tracker.evicted == 40
    finished = tracker.take_finished()
    assert len(finished) == 40
    assert all(s.attrs[sc.SPAN_END_REASON] == "evicted" for s in finished)
    assert {s.attrs[sc.PROCESS_PID] for s in finished} == set(range(1000, 1040))  # oldest first


def test_udp_connect_opens_no_connection_span() -> None:
    dns = proc_attrs(500, 1, "curl", "/usr/bin/curl")
    udp = {sc.NETWORK_TRANSPORT: "udp", sc.NETWORK_PEER_ADDRESS: "10.0.0.10", sc.NETWORK_PEER_PORT: 53}
    tracker = SpanTracker()
    tracker.observe(ev(sc.EV_PROCESS_EXEC, 0, 500, "execve", 0, dns, root=(500, 0)))
    tracker.observe(ev(sc.EV_NETWORK_CONNECT, 10, 500, "connect", 0, {**dns, **udp}, root=(500, 0)))
    assert tracker.open_count == 1  # just the process


def test_close_attributed_to_its_owner_carries_ids_and_marks_never_established() -> None:
    cli = proc_attrs(600, 1, "nc", "/usr/bin/nc")
    out = {sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_PEER_ADDRESS: "10.9.9.9", sc.NETWORK_PEER_PORT: 9}
    tracker = SpanTracker()
    ids = tracker.observe(ev(sc.EV_PROCESS_EXEC, 0, 600, "execve", 0, cli, root=(600, 0)))
    tracker.observe(ev(sc.EV_NETWORK_CONNECT, 5, 600, "connect", -115, {**cli, **out}, root=(600, 0)))
    close = {**out, sc.NETWORK_LOCAL_PORT: 41000, sc.NETWORK_CONNECTION_STATE: "closed"}
    assert tracker.observe(ev(sc.EV_NETWORK_CLOSE, 9, 600, "", 0, {**cli, **close}, root=(600, 0))) == ids
    (span,) = [s for s in tracker.take_finished() if s.name.startswith("connect")]
    assert span.status_code == STATUS_ERROR and span.status_message == "connection never established"
    assert span.attrs[sc.NETWORK_CONNECTION_STATE] == "closed"


def test_a_run_of_one_process_gets_the_ids_observing_each_record_gives() -> None:
    events = shell_session()
    one, runs = SpanTracker(), SpanTracker()
    each = [one.observe(e) for e in events]
    by_run: list[tuple[bytes, bytes]] = []
    start = 0
    while start < len(events):
        end = run_end(events, start)
        by_run += [runs.observe_run(events[start:end])] * (end - start)
        start = end
    assert by_run == each
    assert len({(e.pid, e.process_start_ns) for e in events}) > 1  # runs really split
    one.end_all(T0 + 10**6)
    runs.end_all(T0 + 10**6)
    assert runs.take_finished() == one.take_finished()


def test_a_run_ends_at_a_record_that_opens_or_ends_a_span() -> None:
    a = proc_attrs(500, 1, "sh", "/bin/sh")
    opens = [ev(sc.EV_FILE_OPEN, i, 500, "openat", 3, {**a, sc.FILE_PATH: f"/tmp/{i}"})
             for i in range(3)]
    exit_ = ev(sc.EV_PROCESS_EXIT, 9, 500, "exit", 0, dict(a))
    events = [*opens, exit_, *opens]
    assert run_end(events, 0) == 3  # the exit is not part of the run
    # a run may start with one: the records after it get the ids it returns (the ended span's)
    assert run_end(events, 3) == 7


def test_a_process_span_the_tracker_forgets_is_released() -> None:
    released: list[int] = []
    tracker = SpanTracker(max_open=2, recent_ended=1)
    tracker.released = released.append
    for pid in (701, 702, 703, 704):
        a = proc_attrs(pid, 1, "sh", "/bin/sh")
        tracker.observe(ev(sc.EV_FILE_OPEN, pid, pid, "openat", 3, a))
    # 701 and 702 are evicted from the open spans; 702 pushes 701 out of the recently ended
    assert released == [701]
