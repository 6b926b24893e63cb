"""At-least-once through the processor service, under SIGKILL and SIGTERM at random points.

A real ``otelguard processor`` (the command, with a journal in ``service.state_dir``) forwards to a
recording OTLP/gRPC receiver; four sender threads push a fixed, seeded load (events plus
detections of a few keys, repeated so noise control throttles) and retry every request until it
is answered OK. At seeded points of progress (acknowledged requests) the service gets SIGKILL or
SIGTERM and is restarted on the same state directory and ports. Then, exactly:

* every event sent is received (events are forwarded before their request is answered);
* per throttle key: the distinct detection uids received as passed records plus the counts of the
  distinct stop records received equal the detections sent (each counted once: a retried
  detection that passed passes again, one that was counted is not counted again);
* nothing was counted as dropped (the receiver never refuses, so with a journal no path may
  drop a held record; scraped from each process right before it was stopped);
* duplicates (records received more than once) carry the same ``log.record.uid`` and, for stop
  records, the same count.

Deterministic in what it asserts; bounded by the load (a few thousand requests), not by time.
"""

from __future__ import annotations

import random
import signal
from collections import Counter, defaultdict
from pathlib import Path

from otelguard import semconv
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records, set_attrs

from . import samples
from .crash_load import Service, drive
from tests.transport.receivers import GrpcReceiver

SEED = 11
REQUESTS = 2400
SENDERS = 4
EXES = [f"/dev/shm/x{i}" for i in range(6)]  # the throttle keys: one rule, one workload, 6 paths
KILLS = [signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGTERM,
         signal.SIGTERM]


def _request(i: int, rng: random.Random) -> tuple[bytes, list[str], list[tuple[str, str]]]:
    """Request ``i``: 4 events and 3 detections of random keys; (body, event uids,
    (detection uid, exe))."""
    batch = samples.logs(4, 0, t0=samples.T0 + i * 100)
    events = []
    for j, (_, _, rec) in enumerate(iter_log_records(batch)):
        uid = f"ev-{i}-{j}"
        set_attrs(rec.attributes, {semconv.LOG_RECORD_UID: uid}, overwrite=True)
        events.append(uid)
    detections = []
    for j in range(3):
        exe = rng.choice(EXES)
        uid = f"det-{i}-{j}"
        one = samples.logs(0, 1, rule="Execution from /dev/shm", t0=samples.T0 + i * 100 + j,
                           detection_attrs={semconv.PROCESS_EXECUTABLE_PATH: exe,
                                            semconv.LOG_RECORD_UID: uid})
        batch.resource_logs[0].scope_logs[0].log_records.add().CopyFrom(
            one.resource_logs[0].scope_logs[0].log_records[0])
        detections.append((uid, exe))
    return batch.SerializeToString(), events, detections


def _received(receiver: GrpcReceiver) -> list[dict[str, PyValue]]:
    with receiver._lock:
        requests = list(receiver.logs)
    return [attrs_dict(rec.attributes) | {"_event": rec.event_name}
            for req in requests for _, _, rec in iter_log_records(req)]


def test_sigkill_and_sigterm_under_load_reconcile_exactly(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    requests = [_request(i, rng) for i in range(REQUESTS)]
    kill_points = sorted(rng.sample(range(150, REQUESTS - 150), len(KILLS)))
    kinds = KILLS[:]
    rng.shuffle(kinds)

    receiver = GrpcReceiver().start()
    service = Service(tmp_path, receiver.endpoint,
                      "  - type: noise_control\n    config: {window_seconds: 2, burst: 2}\n")
    service.start()

    def kill(how: signal.Signals) -> None:
        service.stop(how)
        service.start()

    acked = drive(service, receiver, [body for body, _, _ in requests], SENDERS,
                  [(point, lambda how=how: kill(how)) for point, how in zip(kill_points, kinds)])
    assert acked == REQUESTS
    received = _received(receiver)
    sent_events = {uid for _, events, _ in requests for uid in events}
    event_copies = Counter(d[semconv.LOG_RECORD_UID] for d in received
                           if d["_event"] != semconv.EV_DETECTION)
    assert set(event_copies) == sent_events

    sent: dict[str, set[str]] = defaultdict(set)
    for _, _, detections in requests:
        for uid, exe in detections:
            sent[exe].add(uid)
    passed: dict[str, set[str]] = defaultdict(set)
    stops: dict[str, dict[PyValue, PyValue]] = defaultdict(dict)
    copies: Counter[PyValue] = Counter()
    for d in (d for d in received if d["_event"] == semconv.EV_DETECTION):
        uid, exe = d[semconv.LOG_RECORD_UID], d[semconv.PROCESS_EXECUTABLE_PATH]
        assert isinstance(exe, str) and isinstance(uid, str)
        copies[uid] += 1
        state = d.get(semconv.NOISE_THROTTLE)
        if state is None:
            assert d[semconv.DETECTION_COUNT] == 1
            passed[exe].add(uid)
        elif state == semconv.NOISE_THROTTLE_STOP:
            count = d[semconv.DETECTION_COUNT]
            assert stops[exe].setdefault(uid, count) == count  # a duplicate says the same
    for exe in EXES:
        counted = sum(int(c) for c in stops[exe].values() if isinstance(c, int))
        assert passed[exe] <= sent[exe]
        assert len(passed[exe]) + counted == len(sent[exe]), exe
    assert service.dropped == [0.0] * (len(KILLS) + 1)
    assert sum(counted for exe in EXES for counted in [sum(
        int(c) for c in stops[exe].values() if isinstance(c, int))]) > 0  # throttling happened
    recovered = [run for run in range(2, service.runs + 1) if "re-emitting" in service.log(run)]
    assert recovered, "no restart found held state to re-emit: the kills missed the point"
    print(f"\n{REQUESTS} requests, {len(sent_events)} events, "
          f"{sum(len(s) for s in sent.values())} detections; runs {service.runs}; "
          f"recovered held state in runs {recovered}; "
          f"duplicates: events {sum(1 for n in event_copies.values() if n > 1)}, detection "
          f"uids {sum(1 for n in copies.values() if n > 1)}; "
          f"stop records {sum(len(s) for s in stops.values())}")
