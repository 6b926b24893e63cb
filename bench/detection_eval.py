"""Evaluation cost of the falco_rules engine per record, on a realistic mixed stream.

Ruleset (``--rules``): Falco's stable + incubating rules + otelguard's (the default), or stable
+ otelguard's. Stream: file opens (most records), execs, connects, DNS, fork/exit, dups. Records
have the agent's shape by default (``--shape agent``: every record carries the process
attributes the sensor attaches, ~40 attributes; opens carry file.directory/file.name/raw
path/fd as the file probe emits them); ``--shape minimal`` is the earlier, smaller stream.

Prints, per record in thread CPU time (avg, p50, p99): a pass-through stage (the baseline),
the engine as the stage runs it (generated per-type matchers over the flat record view), the
same without the flat record view (every attribute read through upb), the same rules through
the guard groups' closures (the engine before matcher.py), with guards off (every indexed
rule), and reading every attribute into a dict; then the generated engine per event name
against the same without the flat record view, the whole ``evaluate_and_append``, and ratios. The variants run interleaved batch by
batch in one run; each record's cost is the least of ``--repeats`` passes (fresh engines each
pass), the timer's own cost subtracted. The four engines must find the same matches.
``--breakdown`` adds where the time goes: view, state, evt.type, matcher and detection records
timed apart, with and without the flat record view.
Run: ``.venv/bin/python -m bench.detection_eval [--records N] [--rules stable] [--shape minimal]
[--breakdown]``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any, Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RULES_DIR, RuleEngine
from otelguard.processors.detection.fields import event_type
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
        # as the sensor attaches them since issue 15 (ebpf/sensor.py): pid-namespace ids, the
        # group's name, the permitted capability set
        S.PROCESS_VPID: rng.randint(2, 300), S.PROCESS_VPGID: rng.randint(1, 300),
        S.PROCESS_GROUP_NAME: "app", S.PROCESS_CAP_PERMITTED: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
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
    ap.add_argument("--repeats", type=int, default=3,
                    help="passes over the stream; each record's cost is its least disturbed")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print where the time goes per record (view, state, evt.type, "
                         "matcher, detection records), with and without the flat record view")
    args = ap.parse_args()
    batches = build_stream(args.records, args.batch, shape=args.shape)
    ruleset = load_rules(RULESETS[args.rules])
    records = [(rec, attrs_dict(rl.resource.attributes)) for b in batches
               for rl in b.resource_logs for sl in rl.scope_logs for rec in sl.log_records]
    n = len(records)

    # Every variant is timed per record in thread CPU time (preemption by the other tenants of
    # this machine is not counted), the variants interleaved batch by batch so that they share
    # the machine's state; each record's cost is the least of ``repeats`` passes (fresh
    # engines each pass, so every pass sees the same state sequence).
    def passthrough() -> Callable[[LogRecord, dict[str, Any]], Any]:
        return lambda rec, _res: rec.event_name

    def generated() -> Callable[[LogRecord, dict[str, Any]], Any]:
        engine = RuleEngine(ruleset).warm()  # as the stage builds it: matchers generated
        view, match = engine.view, engine.match
        return lambda rec, res: match(view(rec, res))

    def upb_reads() -> Callable[[LogRecord, dict[str, Any]], Any]:
        engine = RuleEngine(ruleset, flat_view=False).warm()  # without the flat record view
        view, match = engine.view, engine.match
        return lambda rec, res: match(view(rec, res))

    def closures() -> Callable[[LogRecord, dict[str, Any]], Any]:
        engine = RuleEngine(ruleset)  # guard groups and closures: the engine before matcher.py
        engine._matchers = {t: engine._plan_matcher(p) for t, p in engine._plans.items()}
        engine._matchers[None] = engine._plan_matcher(engine._any_plan)
        view, match = engine.view, engine.match
        return lambda rec, res: match(view(rec, res))

    def unguarded() -> Callable[[LogRecord, dict[str, Any]], Any]:
        engine = RuleEngine(ruleset)  # every indexed rule's closure
        view, match = engine.view, engine.match_unguarded
        return lambda rec, res: match(view(rec, res))

    def read_all() -> Callable[[LogRecord, dict[str, Any]], Any]:
        return lambda rec, _res: attrs_dict(rec.attributes)

    variants = {"pass-through": passthrough, "generated matchers": generated,
                "generated, upb reads": upb_reads,
                "closures (guard groups)": closures, "guards off": unguarded,
                "read all attributes": read_all}
    costs = {name: [float("inf")] * n for name in variants}
    hits = {name: 0 for name in variants}
    clock = time.thread_time_ns
    for _ in range(args.repeats):
        fns = {name: make() for name, make in variants.items()}
        pass_hits = dict.fromkeys(variants, 0)
        for start in range(0, n, args.batch):
            for name, fn in fns.items():
                best = costs[name]
                found = 0
                for i in range(start, min(start + args.batch, n)):
                    rec, res = records[i]
                    t = clock()
                    out = fn(rec, res)
                    t = clock() - t
                    if t < best[i]:
                        best[i] = t
                    if isinstance(out, list):
                        found += len(out)
                pass_hits[name] += found
        hits = pass_hits
    assert hits["generated matchers"] == hits["generated, upb reads"] == \
        hits["closures (guard groups)"] == hits["guards off"], hits
    # neither guards, generation nor the flat record view change a result
    empty = []  # the timer's own cost (a timed no-op), subtracted from every variant
    for _ in range(3):
        for _i in range(n):
            t = clock()
            t = clock() - t
            empty.append(t)
    timer = statistics.median(empty)

    def stats(name: str) -> tuple[float, float, float]:
        c = [max(x - timer, 0) / 1e3 for x in costs[name]]
        return statistics.fmean(c), statistics.median(c), statistics.quantiles(c, n=100)[98]

    by_event: dict[str, list[int]] = {}
    for i, (rec, _res) in enumerate(records):
        by_event.setdefault(rec.event_name, []).append(i)

    # the whole stage path on batches (includes building detection records), on fresh copies
    copies = []
    for b in batches:
        c = ExportLogsServiceRequest()
        c.CopyFrom(b)
        copies.append(c)
    engine2 = RuleEngine(ruleset)
    c0 = time.thread_time()
    detections = sum(len(engine2.evaluate_and_append(c)) for c in copies)
    stage = (time.thread_time() - c0) / n

    base_avg = stats("pass-through")[0]
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; least of "
          f"{args.repeats} passes per record; rules: {args.rules}; record shape: {args.shape}, "
          f"{sum(len(r.attributes) for r, _res in records) / n:.1f} attributes/record")
    print(f"records: {n}  rules: {len(engine2.rules)}  matching: {hits['generated matchers']} "
          f"({100 * hits['generated matchers'] / n:.2f}%)  detections appended: {detections}  "
          f"timer: {timer / 1e3:.3f} us (subtracted)")
    print(f"{'thread CPU, us per record':28} {'avg':>8} {'p50':>8} {'p99':>8} {'x pass-through':>15}")
    for name in variants:
        avg, p50, p99 = stats(name)
        print(f"{name:28} {avg:8.3f} {p50:8.3f} {p99:8.3f} {avg / base_avg:15.1f}")
    print("generated matchers by event (avg / p99 us, share of records):")
    gen = [max(x - timer, 0) / 1e3 for x in costs["generated matchers"]]
    old = [max(x - timer, 0) / 1e3 for x in costs["generated, upb reads"]]
    for event, idx in by_event.items():
        g = [gen[i] for i in idx]
        o = statistics.fmean(old[i] for i in idx)
        print(f"  {event:28} {statistics.fmean(g):7.2f} / {statistics.quantiles(g, n=100)[98]:7.2f}"
              f"  {100 * len(idx) / n:5.1f} %   upb reads {o:7.2f} (x{o / statistics.fmean(g):.2f})")
    gen_avg = stats("generated matchers")[0]
    print(f"evaluate_and_append (whole stage, detections built): {stage * 1e6:7.3f} us/record CPU")
    print(f"ratios: generated/pass-through {gen_avg / base_avg:.1f}x;  upb reads/generated "
          f"{stats('generated, upb reads')[0] / gen_avg:.2f}x;  closures/generated "
          f"{stats('closures (guard groups)')[0] / gen_avg:.2f}x;  guards-off/generated "
          f"{stats('guards off')[0] / gen_avg:.2f}x;  generated/read-all "
          f"{gen_avg / stats('read all attributes')[0]:.2f}x")
    if args.breakdown:
        _breakdown(ruleset, batches, args.repeats)
    from bench.common import summary_line  # the line bench/aims.py reads (issue 15's aims)

    gen_stats, base_stats = stats("generated matchers"), stats("pass-through")
    print(summary_line("detection_eval", {
        "records": n, "rules": args.rules, "rules_loaded": len(engine2.rules),
        "shape": args.shape, "repeats": args.repeats, "matching": hits["generated matchers"],
        "generated_avg_us": round(gen_stats[0], 3), "generated_p50_us": round(gen_stats[1], 3),
        "generated_p99_us": round(gen_stats[2], 3), "passthrough_avg_us": round(base_stats[0], 3),
        "vs_passthrough": round(gen_stats[0] / base_avg, 2), "stage_us": round(stage * 1e6, 3)}))


def _breakdown(ruleset: Any, batches: list[ExportLogsServiceRequest], repeats: int) -> None:
    """Where the time goes: each stage of a record's path timed on its own (thread CPU, least
    of ``repeats`` passes per record and part), the flat record view on and off."""
    records = [(rec, attrs_dict(rl.resource.attributes), rl) for b in batches
               for rl in b.resource_logs for sl in rl.scope_logs for rec in sl.log_records]
    parts = ("view", "state", "evt.type", "matcher", "detections")
    clock = time.thread_time_ns
    print("where the time goes (us per record: EventView incl. a flat walk, state.observe, "
          "evt.type, the generated matcher incl. field derivations and reads, detection records)")
    for flat in (True, False):
        best = {p: [float("inf")] * len(records) for p in parts}
        for _ in range(repeats):
            engine = RuleEngine(ruleset, flat_view=flat).warm()
            for i, (rec, res, rl) in enumerate(records):
                t0 = clock()
                ev = engine.view(rec, res)
                t1 = clock()
                engine.state.observe(ev)
                t2 = clock()
                t = event_type(ev)
                t3 = clock()
                hits = engine._matcher(t)(ev)
                t4 = clock()
                for _o, rule in hits:
                    engine._detection(rule, ev, rl)
                t5 = clock()
                for p, d in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                    if d < best[p][i]:
                        best[p][i] = d
        by_event: dict[str, list[int]] = {"all": list(range(len(records)))}
        for i, (rec, _res, _rl) in enumerate(records):
            by_event.setdefault(rec.event_name, []).append(i)
        print(f"  {'flat record view' if flat else 'upb reads'}:")
        for event, idx in by_event.items():
            print(f"    {event:28}" + "".join(
                f" {p} {statistics.fmean(best[p][i] for i in idx) / 1e3:6.2f}" for p in parts))


def _records(batches: list[ExportLogsServiceRequest]) -> Any:
    for b in batches:
        for rl in b.resource_logs:
            for sl in rl.scope_logs:
                yield from sl.log_records


if __name__ == "__main__":
    main()
