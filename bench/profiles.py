"""What the profiles stage costs per record, and what a profile costs in memory.

- per record: ``ProfilesStage.process`` on parsed copies of 512-record agent-shaped requests
  (bench/exporter_build.py's file/network-heavy mix: 8 containers + host, ~33 attributes per
  record), against parsing the same request (upb, the receiver's first step; the baseline),
  while learning and while enforcing (every workload approved as learned: no deviations);
- memory: tracemalloc over N workloads (default 10,000), each learned from a benign pass of 24
  distinct entries (processes, writes, peers, DNS, port, capability) from 3 pods over 2 buckets.

Run: ``.venv/bin/python -m bench.profiles`` (``--batches N``, ``--workloads N``).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.exporter_build import NODE, make_events
from otelguard import semconv as S
from otelguard.exporter.builder import OtlpBuilder
from otelguard.otlp.messages import set_attrs
from otelguard.processors.profiles import Config, ProfilesStage

BATCH = 512


class Clock:
    def __init__(self) -> None:
        self.now = 1_763_900_000.0

    def __call__(self) -> float:
        return self.now


def per_record(fn: Callable[[], object], batches: int) -> float:
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    return (time.perf_counter() - t0) / (batches * BATCH) * 1e6


def _workload_batch(i: int, pod: int) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {
        S.K8S_NAMESPACE_NAME: f"ns{i % 50}", S.K8S_DEPLOYMENT_NAME: f"app{i}",
        S.K8S_CONTAINER_NAME: "main", S.K8S_POD_UID: f"pod-{i}-{pod}"})
    sl = rl.scope_logs.add()
    entries: list[tuple[str, dict[str, object]]] = []
    for k in range(4):
        entries.append((S.EV_PROCESS_EXEC, {S.PROCESS_EXECUTABLE_PATH: f"/usr/bin/tool{k}",
                                            S.PROCESS_PARENT_EXECUTABLE_PATH: "/usr/bin/tini",
                                            S.PROCESS_COMMAND_ARGS: [f"tool{k}", "-v", "/x"]}))
    for k in range(10):
        entries.append((S.EV_FILE_OPEN, {S.FILE_PATH: f"/var/lib/app{i}/d{k}/data.db",
                                         S.FILE_OPEN_FLAGS: "O_RDWR"}))
    for k in range(5):
        entries.append((S.EV_NETWORK_CONNECT, {S.NETWORK_PEER_ADDRESS: f"10.0.{k}.{i % 250}",
                                               S.NETWORK_PEER_PORT: 5432 + k}))
    for k in range(3):
        entries.append((S.EV_DNS_QUERY, {S.DNS_QUESTION_NAME: f"svc{k}.ns{i % 50}.local"}))
    entries.append((S.EV_NETWORK_LISTEN, {S.NETWORK_LOCAL_PORT: 8080}))
    entries.append((S.EV_PRIV_CAPABLE, {S.CAPABILITY: "CAP_NET_BIND_SERVICE"}))
    for name, attrs in entries:
        rec = sl.log_records.add()
        rec.event_name = name
        set_attrs(rec.attributes, attrs)  # type: ignore[arg-type]  # values are PyValues
    return req


def memory(workloads: int) -> tuple[float, float]:
    clock = Clock()
    cfg = Config(learn_seconds=800, bucket_seconds=100, max_profiles=workloads)
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    stage = ProfilesStage(cfg, clock)
    for bucket in range(2):
        for i in range(workloads):
            for pod in range(3):
                stage.process(_workload_batch(i, pod))
        clock.now += 100
    learning = tracemalloc.take_snapshot().compare_to(base, "filename")
    learning_bytes = sum(s.size_diff for s in learning)
    clock.now += 800
    stage.sync()
    learned = tracemalloc.take_snapshot().compare_to(base, "filename")
    tracemalloc.stop()
    assert all(stage.profile(w).spec["dns"] for w in stage.workloads()[:5])  # type: ignore[union-attr]  # the workloads exist
    return learning_bytes / workloads, sum(s.size_diff for s in learned) / workloads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--workloads", type=int, default=10_000)
    args = ap.parse_args()
    raw = OtlpBuilder(NODE).logs_bytes(make_events(BATCH, process_part=True))

    def parse() -> ExportLogsServiceRequest:
        req = ExportLogsServiceRequest()
        req.ParseFromString(raw)
        return req

    baseline = per_record(parse, args.batches)
    clock = Clock()
    stage = ProfilesStage(Config(learn_seconds=800, bucket_seconds=100), clock)
    copies = [parse() for _ in range(2 * args.batches)]
    pending = iter(copies)
    step = 200.0 / args.batches  # the learning batches span two buckets

    def learn() -> None:
        clock.now += step
        stage.process(next(pending))

    learning = per_record(learn, args.batches)
    clock.now += 900
    stage.sync()
    for w in stage.workloads():
        stage.approve(w, "bench")
    enforcing = per_record(lambda: stage.process(next(pending)), args.batches)
    print(f"{BATCH} records per request, {args.batches} requests, {len(stage.workloads())} "
          "workloads")
    print(f"parse (baseline): {baseline:6.2f} µs/record")
    print(f"profiles learning : {learning:6.2f} µs/record (x{learning / baseline:.2f} parse)")
    print(f"profiles enforcing: {enforcing:6.2f} µs/record (x{enforcing / baseline:.2f} parse), "
          f"{stage.anomalies} deviations")
    per_learning, per_learned = memory(args.workloads)
    print(f"memory: {per_learning / 1024:.1f} KiB per learning profile, {per_learned / 1024:.1f} "
          f"KiB per learned profile ({args.workloads} workloads: "
          f"{per_learned * args.workloads / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
