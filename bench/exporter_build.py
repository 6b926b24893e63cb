"""How fast do events become OTLP logs bytes? Three ways, measured in the same run.

- ``wire``   : otelguard.exporter.wire, hand-encoded protobuf bytes (the agent's path);
- ``wire+parse``: the same bytes parsed into opentelemetry-proto objects (``otelguard run``);
- ``fields`` : opentelemetry-proto messages built field by field, then serialized (baseline);
- ``sdk``    : the OTel Python SDK (Logger.emit per record, then its OTLP encoder), one
  LoggerProvider per container since the SDK pins one Resource per provider.

Prints events/s and ratios against ``fields``. Run: ``.venv/bin/python -m bench.exporter_build``
(``--events N``, ``--profile`` prints where the wire path spends its time).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from typing import Callable

from otelguard import semconv as sc
from otelguard.ebpf.events import Event, ProcessAttrs
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity

NODE = NodeIdentity("node-1", "host-1", "0123456789abcdef0123456789abcdef")
T0 = 1_763_900_000_000_000_000


def make_events(n: int, seed: int = 7, process_part: bool = False) -> list[Event]:
    """A file/network-heavy mix: 8 containers + host, 200 processes, 2000 distinct paths, ~33
    attributes per record (what the sensor attaches: process table + event + record uid).
    ``process_part``: the sensor's shape, the process attributes in one shared ProcessAttrs per
    process and the rest per event; otherwise all in ``attrs`` (any other event source)."""
    rnd = random.Random(seed)
    containers = [(f"{i:02x}" * 32, f"0d6c9a4e-2f6b-4b8e-9a51-8f0c6a1d2e{i:02x}") for i in range(8)]
    containers.append(("", ""))
    exes = ["nginx", "python3", "java", "bash", "curl", "postgres", "node", "sh"]
    procs = []
    for pid in range(1000, 1200):
        exe = rnd.choice(exes)
        # the keys and value shapes the sensor's process table fills (ebpf/sensor.py)
        ctr = rnd.choice(containers)
        procs.append((pid, ctr, {
            sc.PROCESS_PID: pid, sc.PROCESS_PARENT_PID: pid - 1 if pid > 1000 else 1,
            sc.PROCESS_EXECUTABLE_NAME: exe, sc.PROCESS_EXECUTABLE_PATH: f"/usr/bin/{exe}",
            sc.PROCESS_COMMAND_LINE: f"/usr/bin/{exe} --config /etc/{exe}.conf",
            sc.PROCESS_COMMAND_ARGS: [f"/usr/bin/{exe}", "--config", f"/etc/{exe}.conf"],
            sc.PROCESS_ARGS_COUNT: 3, sc.PROCESS_USER_ID: 1000, sc.PROCESS_USER_NAME: "app",
            sc.PROCESS_GROUP_ID: 1000, sc.PROCESS_WORKING_DIRECTORY: "/srv",
            sc.PROCESS_CREATION_TIME: "2026-11-23T12:00:00.000000000Z", sc.PROCESS_TTY: 0,
            sc.PROCESS_INTERACTIVE: False, sc.PROCESS_LOGIN_UID: 4294967295,
            sc.PROCESS_CAP_EFFECTIVE: ["CAP_NET_BIND_SERVICE"], sc.PROCESS_EXE_FROM_MEMFD: False,
            sc.PROCESS_EXE_DELETED: False, sc.PROCESS_EXE_UPPER_LAYER: False,
            sc.PROCESS_PARENT_EXECUTABLE_NAME: "sh", sc.PROCESS_PARENT_EXECUTABLE_PATH: "/bin/sh",
            sc.PROCESS_PARENT_COMMAND_LINE: "/bin/sh -c start",
            sc.PROCESS_ANCESTORS: ["sh", "containerd-shim"], sc.PROCESS_ANCESTOR_PIDS: [pid - 1, 900],
            sc.PROCESS_LINUX_CGROUP: f"/kubepods.slice/{ctr[0][:12]}.scope", sc.PROCESS_REAL_USER_ID: 1000,
        }))
    per_event = (sc.PROCESS_LINUX_CGROUP, sc.PROCESS_REAL_USER_ID)  # the sensor's per-event keys
    # values are inferred as object (as for attrs below)
    parts = {pid: ProcessAttrs({k: v for k, v in pattrs.items() if k not in per_event})  # type: ignore[misc]
             for pid, _, pattrs in procs}
    paths = [f"/srv/data/{i % 40}/file-{i}.dat" for i in range(2000)]
    out = []
    for i in range(n):
        pid, (cid, pod), pattrs = procs[rnd.randrange(len(procs))]
        if i % 10 == 0:
            attrs = {**pattrs, sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_PEER_ADDRESS: f"10.0.{i % 7}.{i % 250}",
                     sc.NETWORK_PEER_PORT: 443, sc.SYSCALL_NAME: "connect", sc.SYSCALL_RET: 0}
            name, syscall, body = sc.EV_NETWORK_CONNECT, "connect", "connect 10.0.0.1:443"
        else:
            path = paths[rnd.randrange(len(paths))]
            attrs = {**pattrs, sc.FILE_PATH: path, sc.FILE_OPEN_FLAGS: "O_WRONLY|O_CREAT",
                     sc.SYSCALL_NAME: "openat", sc.SYSCALL_RET: 3}
            name, syscall, body = sc.EV_FILE_OPEN, "openat", f"open {path}"
        attrs[sc.LOG_RECORD_UID] = f"5f0c2a9e41d7-{i:x}"  # unique per record, as the sensor sets it
        attrs[sc.PROCESS_DURATION_NS] = 1_000_000 + i * 977  # unique too
        part = None
        if process_part:
            part = parts[pid]
            attrs = {k: v for k, v in attrs.items() if k not in part.attrs}
        out.append(Event(name=name, time_ns=T0 + i * 1000, pid=pid, tid=pid, syscall=syscall, ret=0,
                         container_id=cid, pod_uid=pod, process_start_ns=T0, root_pid=1000,
                         root_start_ns=T0, attrs=attrs, body=body,  # type: ignore[arg-type]
                         process=part))
    return out


def run_wire(events: list[Event], batch: int, b: OtlpBuilder) -> int:
    return sum(len(b.logs_bytes(events[i:i + batch])) for i in range(0, len(events), batch))


def run_wire_parse(events: list[Event], batch: int, b: OtlpBuilder) -> int:
    return sum(len(b.logs(events[i:i + batch]).resource_logs) for i in range(0, len(events), batch))


def run_fields(events: list[Event], batch: int, b: OtlpBuilder) -> int:
    return sum(len(b.logs_fields(events[i:i + batch]).SerializeToString())
               for i in range(0, len(events), batch))


def run_sdk(events: list[Event], batch: int, _b: OtlpBuilder) -> int:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry._logs import SeverityNumber

    from otelguard.exporter import mapping

    mem = InMemoryLogRecordExporter()
    loggers = {}
    total = 0
    for i in range(0, len(events), batch):
        for ev in events[i:i + batch]:
            key = (ev.container_id, ev.pod_uid)
            logger = loggers.get(key)
            if logger is None:
                provider = LoggerProvider(resource=Resource(dict(mapping.resource_attrs(key, NODE))))
                provider.add_log_record_processor(SimpleLogRecordProcessor(mem))
                logger = loggers[key] = provider.get_logger(sc.SCOPE_AGENT, "0.1.0")
            logger.emit(timestamp=ev.time_ns, observed_timestamp=ev.time_ns,
                        severity_number=SeverityNumber.INFO, severity_text="INFO", body=ev.body,
                        attributes=dict(mapping.record_attrs(ev)), event_name=ev.name)
        total += len(encode_logs(mem.get_finished_logs()).SerializeToString())
        mem.clear()
    return total


def measure(fn: Callable[[list[Event], int, OtlpBuilder], int], events: list[Event],
            batch: int) -> tuple[float, float]:
    """(first pass, second pass) events per CPU second with one builder: the first pass fills
    the attribute caches and opens the spans; the second is the agent's steady state."""
    b = OtlpBuilder(NODE)
    rates = []
    for _ in range(2):
        # CPU time of this process: the machine is shared, and "per core" is what we report
        t = time.process_time()
        fn(events, batch, b)
        rates.append(len(events) / (time.process_time() - t))
    return rates[0], rates[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--quick", action="store_true", help="10k events (make bench --quick)")
    args = ap.parse_args()
    if args.quick:
        args.events = 10_000
    events = make_events(args.events)
    shared = make_events(args.events, process_part=True)
    both = {name: measure(fn, events if name != "sdk" else events[: args.events // 5], args.batch)
            for name, fn in [("fields", run_fields), ("wire", run_wire),
                             ("wire+parse", run_wire_parse), ("sdk", run_sdk)]}
    # the sensor's shape: process block encoded once per process, cached on its ProcessAttrs
    both["wire proc"] = measure(run_wire, shared, args.batch)
    both["wire+parse proc"] = measure(run_wire_parse, shared, args.batch)
    rates = {name: warm for name, (_, warm) in both.items()}
    base = rates["fields"]
    print(f"events={args.events} batch={args.batch} (sdk on {args.events // 5}); "
          "steady state (second pass), first pass in brackets")
    for name, (cold, rate) in both.items():
        print(f"  {name:15s} {rate:12,.0f} events/s  {1e6 / rate:6.2f} us/event  x{rate / base:5.2f} vs fields"
              f"  [{cold:,.0f}/s]")
    from bench.common import summary_line

    print(summary_line("exporter_build", {
        "events": args.events, "attrs_per_record": len(events[0].attrs),
        **{f"{k.replace('+', '_').replace(' ', '_')}_events_per_cpu_s": round(v) for k, v in rates.items()},
        "wire_vs_fields": round(rates["wire"] / base, 2), "wire_vs_sdk": round(rates["wire"] / rates["sdk"], 2),
        "wire_proc_vs_wire": round(rates["wire proc"] / rates["wire"], 2),
    }))
    if args.profile:
        prof = cProfile.Profile()
        warm = OtlpBuilder(NODE)
        run_wire(events, args.batch, warm)
        prof.runcall(run_wire, events, args.batch, warm)
        pstats.Stats(prof).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main()
