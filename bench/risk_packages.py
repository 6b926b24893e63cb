"""What the packages analyser costs (docs/risk.md#in-use-packages; docs/benchmarks.md
#risk-packages).

- ``filter`` (root, the kernel): the explicit widening of the kernel read filter. A Python
  start-up with imports (``python3 -c "import json, email.parser, http.client, decimal"``) runs
  ``--runs`` times with no sensor, with the sensor's default read prefixes, and with the risk
  stage's prefixes added (what ``otelguard run`` does with a risk stage), in that order, each
  sensor loaded for its block only. Per run: wall time (median) and the open records the sensor
  delivered (its whole-host delta divided by runs: the machine's other work is in it too, so
  the figure is an upper bound).
- ``stage``: ``RiskStage.process`` per record on 512-record batches of exec and library opens
  of paths already resolved (the steady state), against parsing the same request (upb, the
  receiver's first step; the baseline).
- ``memory``: tracemalloc over ``--workloads`` container workloads of one image root.

Run: ``.venv/bin/python -m bench.risk_packages [--runs N] [--workloads N] [--no-kernel]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs
from otelguard.processors.risk import Config, RiskStage
from otelguard.risk.packages.config import PackagesConfig

IMPORTS = "import json, email.parser, http.client, decimal"
BATCH = 512
LIBS = ["libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1", "libjq.so.1", "libonig.so.5"]


def _python_runs(runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-c", IMPORTS], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernel_filter(runs: int) -> dict[str, Any]:
    from otelguard.ebpf.sensor import Sensor
    from otelguard.ebpf.settings import SensorConfig

    base = SensorConfig()
    risk = PackagesConfig().read_path_prefixes
    wide = dataclasses.replace(base, probe=dataclasses.replace(
        base.probe, read_path_prefixes=base.probe.read_path_prefixes + risk))
    out: dict[str, Any] = {"none": {"median_s": _python_runs(runs)}}
    for name, cfg in (("default", base), ("risk", wide)):
        sensor = Sensor(cfg)
        sensor.start()
        stop = threading.Event()

        def consume() -> None:  # what the exporter does: take every event off the queue
            while not stop.is_set():
                sensor.drain(4096, 0.1)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        try:
            time.sleep(1.0)
            before = sensor.stats()["events_by_name"].get(S.EV_FILE_OPEN, 0)
            median = _python_runs(runs)
            time.sleep(0.5)
            after = sensor.stats()["events_by_name"].get(S.EV_FILE_OPEN, 0)
            drops = sensor.stats()["kernel_drops"]
        finally:
            stop.set()
            consumer.join()
            sensor.stop()
        out[name] = {"median_s": median, "opens_per_run": (after - before) / runs,
                     "kernel_drops": drops}
    return out


def _batch(cid: str) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.CONTAINER_ID: cid, S.HOST_NAME: "node-1",
                                       S.STREAM: S.STREAM_EVENT})
    sl = rl.scope_logs.add()
    for i in range(BATCH):
        rec = sl.log_records.add(event_name=S.EV_FILE_OPEN if i % 8 else S.EV_PROCESS_EXEC,
                                 time_unix_nano=1_700_000_000_000_000_000 + i)
        set_attrs(rec.attributes, {
            S.FILE_PATH: f"/lib/x86_64-linux-gnu/{LIBS[i % len(LIBS)]}",
            S.PROCESS_EXECUTABLE_PATH: "/usr/bin/jq", S.FILE_OPEN_FLAGS: "O_RDONLY|O_CLOEXEC",
            S.LOG_RECORD_UID: f"u{i}", S.PROCESS_PID: 1, S.SYSCALL_RET: 3,
            S.PROCESS_COMMAND_LINE: "jq -c .", S.PROCESS_PARENT_PID: 1})
    return req


def stage_cost(batches: int) -> dict[str, float]:
    stage = RiskStage(Config())
    analyser: Any = stage.analyser("packages")
    analyser.use_root("c1", "/")
    wire = _batch("c1").SerializeToString()
    stage.process(ExportLogsServiceRequest.FromString(wire))
    analyser.resolve_pending()  # steady state: every path resolved once
    t0 = time.perf_counter()
    for _ in range(batches):
        ExportLogsServiceRequest.FromString(wire)
    parse = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        stage.process(ExportLogsServiceRequest.FromString(wire))
    both = time.perf_counter() - t0
    stage.shutdown()
    n = batches * BATCH
    return {"parse_us": parse / n * 1e6, "stage_us": (both - parse) / n * 1e6,
            "ratio": both / parse}


def memory(workloads: int) -> dict[str, float]:
    stage = RiskStage(Config(max_workloads=workloads))
    analyser: Any = stage.analyser("packages")
    cids = [f"{i:064x}" for i in range(workloads)]
    for cid in cids:
        analyser.use_root(cid, "/")
    stage.process(_batch(cids[0]))
    analyser.resolve_pending()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for cid in cids[1:]:
        stage.process(_batch(cid))
        analyser.resolve_pending()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    stage.shutdown()
    return {"workloads": workloads, "kib_per_workload": grown / (workloads - 1) / 1024}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="python start-ups per block")
    p.add_argument("--batches", type=int, default=40, help="512-record batches for the stage")
    p.add_argument("--workloads", type=int, default=1000, help="workloads for the memory figure")
    p.add_argument("--no-kernel", action="store_true", help="skip the kernel filter figure")
    args = p.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}")
    s = stage_cost(args.batches)
    print(f"stage: {s['stage_us']:.2f} us/record over a {s['parse_us']:.2f} us parse "
          f"(x{s['ratio']:.2f})")
    m = memory(args.workloads)
    print(f"memory: {m['kib_per_workload']:.1f} KiB per workload over {m['workloads']}")
    if not args.no_kernel and os.geteuid() == 0:
        k = kernel_filter(args.runs)
        none = k["none"]["median_s"]
        for name in ("default", "risk"):
            r = k[name]
            print(f"filter {name:<7}: python start-up {r['median_s'] * 1e3:.1f} ms "
                  f"(x{r['median_s'] / none:.2f} of no sensor), {r['opens_per_run']:.0f} open "
                  f"records per run, kernel drops {r['kernel_drops']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
