"""Evaluation cost of the falco_rules engine per record, on a realistic mixed stream.

Ruleset: Falco's stable rules + otelguard's own (the default). Stream: file opens (most
records), execs, connects, DNS, fork/exit, dups; ~1% of records match a rule. Records have the
agent's shape by default (``--shape agent``: every record carries the process attributes the
sensor attaches, ~30 attributes, opens carry file.directory/file.name/raw path/fd as the file
probe emits them); ``--shape minimal`` is the earlier, smaller stream (~18 attributes, several
keys rules ask for absent). Prints average and p99 cost per record of rule evaluation (EventView
+ state + indexed rules), the same with guards off (every indexed rule evaluated: the engine
before prefiltering), the whole ``evaluate_and_append`` on batches, and pass-through / read-all
baselines measured in the same run, with ratios.
Run: ``.venv/bin/python -m bench.detection_eval [--records N] [--shape agent|minimal]``.
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
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RULES_DIR, RuleEngine
from otelguard.processors.detection.loader import load_rules
from otelguard.otlp.messages import attrs_dict, set_attrs

PROCS = [("nginx", "/usr/sbin/nginx"), ("python3", "/usr/bin/python3"), ("node", "/usr/bin/node"),
         ("java", "/usr/bin/java"), ("postgres", "/usr/lib/postgresql/16/bin/postgres"),
         ("sh", "/bin/sh"), ("curl", "/usr/bin/curl"), ("envoy", "/usr/local/bin/envoy")]
FILES = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/app/static/index.html",
         "/proc/self/status", "/var/lib/postgresql/data/base/1/1259", "/tmp/upload-123",
         "/etc/hosts", "/etc/resolv.conf", "/srv/app/config.yaml", "/var/log/app/app.log"]


def _proc(rng: random.Random, shape: str = "agent") -> dict[str, Any]:
    name, path = rng.choice(PROCS)
    parent, parent_path = rng.choice(PROCS)
    extra: dict[str, Any] = {} if shape == "minimal" else {
        S.PROCESS_COMMAND_LINE: f"{name} --serve", S.PROCESS_ARGS_COUNT: 2,
        S.PROCESS_GROUP_ID: 1000, S.PROCESS_REAL_USER_ID: 1000,
        S.PROCESS_CREATION_TIME: "2026-11-23T10:00:00.000000000Z", S.PROCESS_INTERACTIVE: False,
        S.PROCESS_LOGIN_UID: 4294967295, S.PROCESS_EXE_FROM_MEMFD: False,
        S.PROCESS_EXE_DELETED: False, S.PROCESS_EXE_UPPER_LAYER: False,
        S.PROCESS_PARENT_EXECUTABLE_PATH: parent_path, S.PROCESS_ANCESTOR_PIDS: [1, 0],
        S.PROCESS_DURATION_NS: rng.randint(10**9, 10**12),
        S.PROCESS_LINUX_CGROUP: "/kubepods.slice/kubepods-besteffort.slice/cri-containerd.scope",
    }
    if extra:
        extra[S.PROCESS_COMM] = name[:15]  # the kernel comm from the record header
    return extra | {
        S.PROCESS_PID: rng.randint(100, 60000), S.PROCESS_PARENT_PID: rng.randint(1, 100),
        S.PROCESS_EXECUTABLE_NAME: name, S.PROCESS_EXECUTABLE_PATH: path,
        S.PROCESS_COMMAND_ARGS: [name, "--serve"], S.PROCESS_USER_ID: 1000,
        S.PROCESS_USER_NAME: "app", S.PROCESS_PARENT_EXECUTABLE_NAME: parent,
        S.PROCESS_PARENT_COMMAND_LINE: f"{parent} run", S.PROCESS_ANCESTORS: [parent, "containerd-shim"],
        S.PROCESS_TTY: 0, S.PROCESS_WORKING_DIRECTORY: "/app", S.LOG_RECORD_UID: f"u{rng.random()}",
        S.PROCESS_CAP_EFFECTIVE: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
    }


def _record(rng: random.Random, i: int, shape: str = "agent") -> tuple[str, dict[str, Any]]:
    r = rng.random()
    attrs = _proc(rng, shape)
    if r < 0.55:
        flags = "O_RDONLY|O_CLOEXEC" if rng.random() < 0.8 else "O_WRONLY|O_CREAT|O_APPEND"
        path = "/etc/shadow" if i % 211 == 0 else rng.choice(FILES)  # ~0.5% sensitive reads
        attrs.update({S.SYSCALL_NAME: "openat", S.SYSCALL_RET: 7, S.FILE_OPEN_FLAGS: flags,
                      S.FILE_PATH: path})
        if shape != "minimal":  # as the file probe emits them
            directory, _, base = path.rpartition("/")
            attrs.update({S.FILE_FD: 7, S.FILE_RAW_PATH: path, S.FILE_NAME: base,
                          S.FILE_DIRECTORY: directory or "/"})
            if "O_CREAT" in flags:
                attrs[S.FILE_MODE] = "0644"
        return S.EV_FILE_OPEN, attrs
    if r < 0.70:
        shell = i % 97 == 0  # ~1% shells under nginx: "Run shell untrusted"
        attrs.update({S.SYSCALL_NAME: "execve", S.SYSCALL_RET: 0})
        if shell:
            attrs.update({S.PROCESS_EXECUTABLE_NAME: "sh", S.PROCESS_COMMAND_ARGS: ["sh", "-c", "id"],
                          S.PROCESS_PARENT_EXECUTABLE_NAME: "nginx", S.PROCESS_ANCESTORS: ["nginx"]})
            if S.PROCESS_COMM in attrs:
                attrs[S.PROCESS_COMM] = "sh"
        return S.EV_PROCESS_EXEC, attrs
    if r < 0.82:
        attrs.update({S.SYSCALL_NAME: "connect", S.SYSCALL_RET: 0, S.NETWORK_TYPE: "ipv4",
                      S.NETWORK_TRANSPORT: "tcp", S.NETWORK_PEER_ADDRESS: f"10.0.{i % 200}.{i % 250}",
                      S.NETWORK_PEER_PORT: rng.choice([5432, 443, 8080, 6379]),
                      S.NETWORK_LOCAL_ADDRESS: "10.244.1.5", S.NETWORK_LOCAL_PORT: 40000 + i % 20000})
        if shape != "minimal":  # as the network probe emits them
            attrs.update({S.FILE_FD: 9, S.SERVER_ADDRESS: attrs[S.NETWORK_PEER_ADDRESS],
                          S.SERVER_PORT: attrs[S.NETWORK_PEER_PORT],
                          S.CLIENT_ADDRESS: "10.244.1.5", S.CLIENT_PORT: 40000 + i % 20000})
        return S.EV_NETWORK_CONNECT, attrs
    if r < 0.88:
        attrs.update({S.SYSCALL_NAME: "sendto", S.SYSCALL_RET: 40, S.NETWORK_TRANSPORT: "udp",
                      S.NETWORK_PEER_ADDRESS: "10.96.0.10", S.NETWORK_PEER_PORT: 53,
                      S.DNS_QUESTION_NAME: "db.shop.svc.cluster.local"})
        if shape != "minimal":
            attrs.update({S.FILE_FD: 11, S.NETWORK_TYPE: "ipv4", S.SERVER_ADDRESS: "10.96.0.10",
                          S.SERVER_PORT: 53, S.DNS_QUESTION_TYPE: "A"})
        return S.EV_DNS_QUERY, attrs
    if r < 0.94:
        name = S.EV_PROCESS_EXIT if rng.random() < 0.5 else S.EV_PROCESS_FORK
        if shape != "minimal":  # the process probe names the syscall of both
            attrs.update({S.SYSCALL_NAME: "exit_group", S.SYSCALL_RET: 0,
                          S.PROCESS_EXIT_CODE: 0} if name == S.EV_PROCESS_EXIT else
                         {S.SYSCALL_NAME: "clone", S.SYSCALL_RET: 0})
        return name, attrs
    attrs.update({S.SYSCALL_NAME: "dup2", S.SYSCALL_RET: 1, S.DUP_OLD_FD: 5, S.DUP_NEW_FD: 1,
                  S.DUP_OLD_FD_TYPE: "pipe"})
    return S.EV_DUP, attrs


RULESETS = {
    "stable": DEFAULT_RULE_FILES,
    "stable+incubating": (RULES_DIR / "falco_rules.yaml", RULES_DIR / "falco-incubating_rules.yaml",
                          RULES_DIR / "otelguard_rules.yaml"),
}


def build_stream(n: int, per_batch: int, seed: int = 7, shape: str = "agent"
                 ) -> list[ExportLogsServiceRequest]:
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
            name, attrs = _record(rng, i, shape)
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
    ap.add_argument("--shape", choices=("agent", "minimal"), default="agent")
    ap.add_argument("--rules", choices=tuple(RULESETS), default="stable+incubating",
                    help="rule files loaded (each with otelguard's own rules)")
    args = ap.parse_args()
    batches = build_stream(args.records, args.batch, shape=args.shape)
    ruleset = load_rules(RULESETS[args.rules])
    n = sum(len(sl.log_records) for b in batches for rl in b.resource_logs for sl in rl.scope_logs)

    repeats = 3  # the machine is shared: report the best of a few runs (least disturbed)

    def per_record(fn: Any) -> tuple[float, float]:
        """(wall, thread CPU) seconds per record, best of ``repeats`` whole-stream passes."""
        best, best_cpu = float("inf"), float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            for b in batches:
                for rl in b.resource_logs:
                    for sl in rl.scope_logs:
                        for rec in sl.log_records:
                            fn(rec)
            best = min(best, (time.perf_counter() - t0) / n)
            best_cpu = min(best_cpu, (time.thread_time() - c0) / n)
        return best, best_cpu

    # baseline: a pass-through stage that touches every record (what any stage pays)
    base, base_cpu = per_record(lambda rec: rec.event_name)
    # baseline 2: reading every record's attributes into a dict (the floor of "look at it")
    read_all, read_all_cpu = per_record(lambda rec: attrs_dict(rec.attributes))

    # per-record rule evaluation (EventView + state + indexed rules), timed one by one
    def evaluation(guarded: bool) -> tuple[list[float], int]:
        best_costs: list[float] = []
        hits = 0
        clock = time.perf_counter_ns
        for _ in range(repeats):
            engine = RuleEngine(ruleset)
            match = engine.match if guarded else engine.match_unguarded
            costs: list[float] = []
            hits = 0
            for b in batches:
                for rl in b.resource_logs:
                    res = attrs_dict(rl.resource.attributes)
                    for sl in rl.scope_logs:
                        for rec in sl.log_records:
                            t = clock()
                            ev = engine.view(rec, res)
                            hits += len(match(ev))
                            costs.append(clock() - t)
            if not best_costs or statistics.fmean(costs) < statistics.fmean(best_costs):
                best_costs = costs
        return best_costs, hits

    def evaluation_cpu(guarded: bool) -> float:
        """Thread CPU per record over whole passes (no per-record clocks): on a shared, loaded
        machine wall-clock per-record costs include preemption; CPU time does not."""
        best = float("inf")
        for _ in range(repeats):
            engine = RuleEngine(ruleset)
            match = engine.match if guarded else engine.match_unguarded
            view = engine.view
            c0 = time.thread_time()
            for b in batches:
                for rl in b.resource_logs:
                    res = attrs_dict(rl.resource.attributes)
                    for sl in rl.scope_logs:
                        for rec in sl.log_records:
                            match(view(rec, res))
            best = min(best, (time.thread_time() - c0) / n)
        return best

    best_costs, hits = evaluation(True)
    avg = statistics.fmean(best_costs) / 1e3
    p99 = statistics.quantiles(best_costs, n=100)[98] / 1e3
    p50 = statistics.median(best_costs) / 1e3
    ref_costs, ref_hits = evaluation(False)
    ref_avg = statistics.fmean(ref_costs) / 1e3
    assert ref_hits == hits, (ref_hits, hits)  # guards never change a result
    cpu, ref_cpu = evaluation_cpu(True), evaluation_cpu(False)

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

    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; best of {repeats} runs;"
          f" record shape: {args.shape}, "
          f"{sum(len(r.attributes) for r in _records(batches)) / n:.1f} attributes/record")
    print(f"records: {n}  rules: {len(engine2.rules)}  matching records: {hits} "
          f"({100 * hits / n:.2f}%)  detections appended: {detections}")
    print(f"baseline pass-through:            {base * 1e6:7.3f} us/record (wall)  "
          f"{base_cpu * 1e6:7.3f} us (CPU)")
    print(f"baseline read all attributes:     {read_all * 1e6:7.3f} us/record (wall)  "
          f"{read_all_cpu * 1e6:7.3f} us (CPU)")
    print(f"rule evaluation  avg {avg:7.3f} us  p50 {p50:7.3f} us  p99 {p99:7.3f} us/record (wall)")
    print(f"rule evaluation  CPU {cpu * 1e6:7.3f} us/record; guards off: wall avg {ref_avg:7.3f} us,"
          f" CPU {ref_cpu * 1e6:7.3f} us (every indexed rule evaluated)")
    print(f"evaluate_and_append (whole stage): {stage * 1e6:7.3f} us/record (wall)")
    print(f"ratios: eval/pass-through {avg / (base * 1e6):.1f}x wall, {cpu / base_cpu:.1f}x CPU;  "
          f"eval/read-all-attributes {avg / (read_all * 1e6):.2f}x wall, "
          f"{cpu / read_all_cpu:.2f}x CPU;  guards-off/guarded {ref_cpu / cpu:.1f}x CPU;  "
          f"stage/pass-through {stage / base:.1f}x wall")


def _records(batches: list[ExportLogsServiceRequest]) -> Any:
    for b in batches:
        for rl in b.resource_logs:
            for sl in rl.scope_logs:
                yield from sl.log_records


if __name__ == "__main__":
    main()
