"""Evaluation cost of the falco_rules engine per record, on a realistic mixed stream.

Ruleset: Falco's stable rules + otelguard's own (the default). Stream: file opens (most
records), execs, connects, DNS, fork/exit, dups; ~1% of records match a rule. Prints average and
p99 cost per record of rule evaluation (EventView + state + indexed rules), the whole
``evaluate_and_append`` on batches, and a pass-through baseline measured in the same run, with
ratios. Run: ``.venv/bin/python -m bench.detection_eval [--records N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RuleEngine
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.otlp import attrs_dict, set_attrs

PROCS = [("nginx", "/usr/sbin/nginx"), ("python3", "/usr/bin/python3"), ("node", "/usr/bin/node"),
         ("java", "/usr/bin/java"), ("postgres", "/usr/lib/postgresql/16/bin/postgres"),
         ("sh", "/bin/sh"), ("curl", "/usr/bin/curl"), ("envoy", "/usr/local/bin/envoy")]
FILES = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/app/static/index.html",
         "/proc/self/status", "/var/lib/postgresql/data/base/1/1259", "/tmp/upload-123",
         "/etc/hosts", "/etc/resolv.conf", "/srv/app/config.yaml", "/var/log/app/app.log"]


def _proc(rng: random.Random) -> dict[str, Any]:
    name, path = rng.choice(PROCS)
    parent = rng.choice(PROCS)[0]
    return {
        S.PROCESS_PID: rng.randint(100, 60000), S.PROCESS_PARENT_PID: rng.randint(1, 100),
        S.PROCESS_EXECUTABLE_NAME: name, S.PROCESS_EXECUTABLE_PATH: path,
        S.PROCESS_COMMAND_ARGS: [name, "--serve"], S.PROCESS_USER_ID: 1000,
        S.PROCESS_USER_NAME: "app", S.PROCESS_PARENT_EXECUTABLE_NAME: parent,
        S.PROCESS_PARENT_COMMAND_LINE: f"{parent} run", S.PROCESS_ANCESTORS: [parent, "containerd-shim"],
        S.PROCESS_TTY: 0, S.PROCESS_WORKING_DIRECTORY: "/app", S.LOG_RECORD_UID: f"u{rng.random()}",
        S.PROCESS_CAP_EFFECTIVE: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
    }


def _record(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    r = rng.random()
    attrs = _proc(rng)
    if r < 0.55:
        flags = "O_RDONLY|O_CLOEXEC" if rng.random() < 0.8 else "O_WRONLY|O_CREAT|O_APPEND"
        path = "/etc/shadow" if i % 211 == 0 else rng.choice(FILES)  # ~0.5% sensitive reads
        attrs.update({S.SYSCALL_NAME: "openat", S.SYSCALL_RET: 7, S.FILE_OPEN_FLAGS: flags,
                      S.FILE_PATH: path})
        return S.EV_FILE_OPEN, attrs
    if r < 0.70:
        shell = i % 97 == 0  # ~1% shells under nginx: "Run shell untrusted"
        attrs.update({S.SYSCALL_NAME: "execve", S.SYSCALL_RET: 0})
        if shell:
            attrs.update({S.PROCESS_EXECUTABLE_NAME: "sh", S.PROCESS_COMMAND_ARGS: ["sh", "-c", "id"],
                          S.PROCESS_PARENT_EXECUTABLE_NAME: "nginx", S.PROCESS_ANCESTORS: ["nginx"]})
        return S.EV_PROCESS_EXEC, attrs
    if r < 0.82:
        attrs.update({S.SYSCALL_NAME: "connect", S.SYSCALL_RET: 0, S.NETWORK_TYPE: "ipv4",
                      S.NETWORK_TRANSPORT: "tcp", S.NETWORK_PEER_ADDRESS: f"10.0.{i % 200}.{i % 250}",
                      S.NETWORK_PEER_PORT: rng.choice([5432, 443, 8080, 6379]),
                      S.NETWORK_LOCAL_ADDRESS: "10.244.1.5", S.NETWORK_LOCAL_PORT: 40000 + i % 20000})
        return S.EV_NETWORK_CONNECT, attrs
    if r < 0.88:
        attrs.update({S.SYSCALL_NAME: "sendto", S.SYSCALL_RET: 40, S.NETWORK_TRANSPORT: "udp",
                      S.NETWORK_PEER_ADDRESS: "10.96.0.10", S.NETWORK_PEER_PORT: 53,
                      S.DNS_QUESTION_NAME: "db.shop.svc.cluster.local"})
        return S.EV_DNS_QUERY, attrs
    if r < 0.94:
        return (S.EV_PROCESS_EXIT if rng.random() < 0.5 else S.EV_PROCESS_FORK), attrs
    attrs.update({S.SYSCALL_NAME: "dup2", S.SYSCALL_RET: 1, S.DUP_OLD_FD: 5, S.DUP_NEW_FD: 1,
                  S.DUP_OLD_FD_TYPE: "pipe"})
    return S.EV_DUP, attrs


def build_stream(n: int, per_batch: int, seed: int = 7) -> list[ExportLogsServiceRequest]:
    rng = random.Random(seed)
    batches = []
    i = 0
    while i < n:
        req = ExportLogsServiceRequest()
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {
            S.CONTAINER_ID: f"{i // per_batch % 16:064x}", S.K8S_NAMESPACE_NAME: "shop",
            S.K8S_POD_NAME: "web-1", S.K8S_DEPLOYMENT_NAME: "web",
            S.CONTAINER_IMAGE_NAME: "docker.io/library/nginx:1.27"})
        sl = rl.scope_logs.add()
        sl.scope.name = S.SCOPE_AGENT
        for _ in range(min(per_batch, n - i)):
            name, attrs = _record(rng, i)
            rec = sl.log_records.add()
            rec.event_name = name
            rec.time_unix_nano = 1_760_000_000_000_000_000 + i * 1000
            set_attrs(rec.attributes, attrs)
            i += 1
        batches.append(req)
    return batches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    batches = build_stream(args.records, args.batch)
    ruleset = load_rules(DEFAULT_RULE_FILES)
    n = sum(len(sl.log_records) for b in batches for rl in b.resource_logs for sl in rl.scope_logs)

    repeats = 3  # the machine is shared: report the best of a few runs (least disturbed)

    def per_record(fn: Any) -> float:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for b in batches:
                for rl in b.resource_logs:
                    for sl in rl.scope_logs:
                        for rec in sl.log_records:
                            fn(rec)
            best = min(best, (time.perf_counter() - t0) / n)
        return best

    # baseline: a pass-through stage that touches every record (what any stage pays)
    base = per_record(lambda rec: rec.event_name)
    # baseline 2: reading every record's attributes into a dict (the floor of "look at it")
    read_all = per_record(lambda rec: attrs_dict(rec.attributes))

    # per-record rule evaluation (EventView + state + indexed rules), timed one by one
    best_costs: list[float] = []
    hits = 0
    clock = time.perf_counter_ns
    for _ in range(repeats):
        engine = RuleEngine(ruleset)
        costs: list[float] = []
        hits = 0
        for b in batches:
            for rl in b.resource_logs:
                res = attrs_dict(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        t = clock()
                        ev = engine.view(rec, res)
                        hits += len(engine.match(ev))
                        costs.append(clock() - t)
        if not best_costs or statistics.fmean(costs) < statistics.fmean(best_costs):
            best_costs = costs
    avg = statistics.fmean(best_costs) / 1e3
    p99 = statistics.quantiles(best_costs, n=100)[98] / 1e3
    p50 = statistics.median(best_costs) / 1e3

    # the whole stage path on batches (includes building detection records), on fresh copies
    copies = []
    for b in batches:
        c = ExportLogsServiceRequest()
        c.CopyFrom(b)
        copies.append(c)
    engine2 = RuleEngine(ruleset)
    t0 = time.perf_counter()
    detections = sum(len(engine2.evaluate_and_append(c)) for c in copies)
    stage = (time.perf_counter() - t0) / n

    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; best of {repeats} runs")
    print(f"records: {n}  rules: {len(engine2.rules)}  matching records: {hits} "
          f"({100 * hits / n:.2f}%)  detections appended: {detections}")
    print(f"baseline pass-through:            {base * 1e6:7.3f} us/record")
    print(f"baseline read all attributes:     {read_all * 1e6:7.3f} us/record")
    print(f"rule evaluation  avg {avg:7.3f} us  p50 {p50:7.3f} us  p99 {p99:7.3f} us/record")
    print(f"evaluate_and_append (whole stage): {stage * 1e6:7.3f} us/record")
    print(f"ratios: eval/pass-through {avg / (base * 1e6):.1f}x  "
          f"eval/read-all-attributes {avg / (read_all * 1e6):.2f}x  "
          f"stage/pass-through {stage / base:.1f}x")


if __name__ == "__main__":
    main()
