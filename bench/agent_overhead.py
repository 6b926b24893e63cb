"""Agent overhead: how much slower do workloads run with the agent loaded (default config)?

Workloads (bench/syscall_loop.c, a separate process, fixed iteration counts):

- ``open-filtered``: open(O_RDONLY)+close of a file under /tmp: no read rule can match it and
  it has no write intent, so the file probe drops it in the kernel (the aim: <= 1.15x
  untraced);
- ``open-etc``      : the same on /etc/hostname: under /etc, but no loaded rule tests it, so the
  rules-derived filter drops it in the kernel too (the built-in ``/etc/`` prefix sent every
  one: the flood of issue 16);
- ``open-watched``  : the same on /etc/shadow, which a rule reads: the first open is sent, the
  identical ones after it are counted in the kernel (dedup) and sent once per window;
- ``exec``          : fork + execve(/bin/true) + waitpid (aim <= 1.10x);
- ``connect``       : TCP connect to a loopback listener (accepted by a thread of the same
  process) + close (aim <= 1.10x).

"Agent" is the real Sensor (all probes) started in this process, drained by the BatchExporter
into OTLP bytes, by default through the ``otelguard run`` pipeline (Falco rules + noise control)
into a counting sink (``--consumer agent`` skips the pipeline: what the node agent does before
its gRPC hop). Its kernel read filter is the one the packaged rules need (what ``otelguard run``
and the Helm-deployed agent derive). ``--legacy`` adds a second agent arm per repetition with
the configuration before issue 16: the built-in read prefixes (``/etc/`` ...) and no dedup, so
before/after are measured side by side in one run. Baseline and agent runs alternate (A B [C]
A B [C] ...), each agent being loaded and unloaded around its block, so no probe is attached
during a baseline.

Figures per workload and arm: medians of the loop's wall time and of the workload's own CPU
time (user+sys; on a loaded machine the wall time includes waiting for a core, the CPU time
shows the kernel-side cost), their agent/baseline ratios, the agent's consumer CPU per
iteration, events per iteration, and kernel/user-queue drops.

Run: ``.venv/bin/python -m bench.agent_overhead`` (``--quick`` for a seconds-long smoke run,
``--reps N``, ``--consumer agent|run``, ``--legacy``). Needs root and the kernel; ends with a
``BENCH_SUMMARY {json}`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from bench import aims
from bench.common import (
    CONSUMERS, AgentCounters, AgentUnderTest, BenchError, BpfRunStats, LoopResult, machine_line,
    median, program_runs, run_loop, summary_line,
)

AIMS = {"open-filtered": aims.OPEN_CLOSE_X, "exec": aims.EXEC_X, "connect": aims.CONNECT_X}


@dataclass(frozen=True)
class Arm:
    """One agent configuration measured against the shared baseline."""

    name: str
    read_filter: str  # bench.common.READ_FILTERS
    dedup_ms: Optional[int]  # None: the default window


DEFAULT_ARM = Arm("default", "rules", None)
LEGACY_ARM = Arm("legacy", "builtin", 0)  # before issue 16: built-in prefixes, no dedup


@dataclass(frozen=True)
class Workload:
    name: str
    args: tuple[str, ...]  # syscall_loop arguments with {count} and {path} placeholders
    full: int
    quick: int

    def argv(self, count: int, path: str) -> list[str]:
        return [a.format(count=count, path=path) for a in self.args]


WORKLOADS = (
    Workload("open-filtered", ("open", "{path}", "{count}", "r"), 300_000, 30_000),
    Workload("open-etc", ("open", "/etc/hostname", "{count}", "r"), 100_000, 10_000),
    Workload("open-watched", ("open", "/etc/shadow", "{count}", "r"), 100_000, 10_000),
    Workload("exec", ("exec", "{count}"), 2_000, 200),
    Workload("connect", ("connect", "{count}"), 20_000, 2_000),
)


@dataclass
class Samples:
    base: list[LoopResult] = field(default_factory=list)
    agent: list[LoopResult] = field(default_factory=list)
    agent_counters: list[AgentCounters] = field(default_factory=list)
    bpf_ns_per_iter: Optional[float] = None  # from the kernel's BPF run statistics

    def figures(self) -> dict[str, Any]:
        b_wall = median([r.elapsed_s for r in self.base])
        a_wall = median([r.elapsed_s for r in self.agent])
        b_cpu = median([r.cpu_s for r in self.base])
        a_cpu = median([r.cpu_s for r in self.agent])
        iters = self.agent[0].iterations if self.agent else 0
        cons = [c.consumer_cpu_s for c in self.agent_counters]
        events = [c.exported for c in self.agent_counters]
        return {
            "iterations": iters,
            "base_per_s": round(iters / b_wall) if b_wall else 0,
            "agent_per_s": round(iters / a_wall) if a_wall else 0,
            "wall_ratio": round(a_wall / b_wall, 3) if b_wall else None,
            "cpu_ratio": round(a_cpu / b_cpu, 3) if b_cpu else None,
            "agent_cpu_us_per_iter": round(1e6 * median(cons) / iters, 3) if iters else None,
            "events_per_iter": round(median(events) / iters, 3) if iters else None,
            "agent_cpu_us_per_event": round(1e6 * sum(cons) / sum(events), 2) if sum(events) else None,
            "kernel_drops": sum(c.kernel_drops for c in self.agent_counters),
            "queue_drops": sum(c.queue_drops for c in self.agent_counters),
            "runs": len(self.agent),
            "bpf_ns_per_iter": None if self.bpf_ns_per_iter is None else round(self.bpf_ns_per_iter),
        }


def measure(reps: int, quick: bool, consumer: str, only: Optional[list[str]],
            bpf_stats: bool, budget_off: bool = False,
            arms: tuple[Arm, ...] = (DEFAULT_ARM,)) -> dict[tuple[str, str], Samples]:
    workloads = [w for w in WORKLOADS if not only or w.name in only]
    samples = {(w.name, a.name): Samples() for w in workloads for a in arms}
    with tempfile.NamedTemporaryFile(prefix="og-bench-", dir="/tmp") as tmp:
        path = tmp.name

        def count(w: Workload) -> int:
            return w.quick if quick else w.full

        for w in workloads:  # warm-up: binary, page cache, dentries
            run_loop(w.argv(max(1, count(w) // 10), path))
        for rep in range(reps):
            for w in workloads:
                r = run_loop(w.argv(count(w), path))
                for a in arms:
                    samples[(w.name, a.name)].base.append(r)
                print(f"  rep {rep + 1}/{reps} baseline {w.name:<14} {r.per_s:>12,.0f}/s "
                      f"cpu {r.cpu_s:6.3f} s", flush=True)
            for arm in arms:
                agent = AgentUnderTest(consumer, budget_off=budget_off,
                                       read_filter=arm.read_filter, dedup_ms=arm.dedup_ms).start()
                try:
                    print(f"  rep {rep + 1}/{reps} {arm.name} agent loaded in "
                          f"{agent.load_s:.1f} s", flush=True)
                    agent.wait_drained(10.0)
                    for w in workloads:
                        before = agent.counters()
                        r = run_loop(w.argv(count(w), path))
                        drained = agent.wait_drained(60.0) is not None
                        delta = agent.counters().minus(before)
                        samples[(w.name, arm.name)].agent.append(r)
                        samples[(w.name, arm.name)].agent_counters.append(delta)
                        print(f"  rep {rep + 1}/{reps} {arm.name:<8} {w.name:<14} "
                              f"{r.per_s:>12,.0f}/s cpu {r.cpu_s:6.3f} s; agent: "
                              f"{delta.exported} events, consumer cpu "
                              f"{delta.consumer_cpu_s:.3f} s, kernel drops "
                              f"{delta.kernel_drops}, queue drops {delta.queue_drops}"
                              + ("" if drained else " (backlog not drained in 60 s)"),
                              flush=True)
                finally:
                    agent.stop()
        if bpf_stats:
            for arm in arms:
                kernel_costs(workloads, count, path, consumer, samples, budget_off, arm)
    return samples


def kernel_costs(workloads: list[Workload], count: Callable[[Workload], int], path: str,
                 consumer: str, samples: dict[tuple[str, str], Samples],
                 budget_off: bool = False, arm: Arm = DEFAULT_ARM) -> None:
    """One more agent pass with kernel BPF statistics on: the time the probes' BPF programs
    ran per workload iteration, independent of how loaded the machine is (it excludes the
    tracing slow path of syscalls and the ring buffer's consumer side)."""
    agent = AgentUnderTest(consumer, budget_off=budget_off, read_filter=arm.read_filter,
                           dedup_ms=arm.dedup_ms).start()
    try:
        agent.wait_drained(10.0)
        with BpfRunStats():
            for w in workloads:
                before = program_runs(agent)
                r = run_loop(w.argv(count(w), path))
                after = program_runs(agent)
                agent.wait_drained(60.0)
                delta = {name: (t - before.get(name, (0, 0))[0], c - before.get(name, (0, 0))[1])
                         for name, (t, c) in after.items()}
                busy = sorted(((t, c, n) for n, (t, c) in delta.items() if c > 0), reverse=True)
                total_ns = sum(t for t, _, _ in busy)
                samples[(w.name, arm.name)].bpf_ns_per_iter = total_ns / max(1, r.iterations)
                top = ", ".join(f"{n.replace('tracepoint__', '')} {t / c:.0f} ns x{c / r.iterations:.2f}"
                                for t, c, n in busy[:5])
                print(f"  bpf stats {arm.name:<8} {w.name:<14} "
                      f"{total_ns / max(1, r.iterations):8.0f} ns of BPF programs per "
                      f"iteration; top: {top}", flush=True)
    finally:
        agent.stop()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts, one repetition")
    ap.add_argument("--reps", type=int, default=None, help="A/B repetitions (default 5; quick 1)")
    ap.add_argument("--consumer", choices=CONSUMERS, default="run",
                    help="run: the otelguard run pipeline (default); agent: exporter only")
    ap.add_argument("--only", nargs="*", choices=[w.name for w in WORKLOADS],
                    help="run only these workloads")
    ap.add_argument("--no-bpf-stats", action="store_true",
                    help="skip the extra pass with kernel.bpf_stats_enabled=1")
    ap.add_argument("--no-budget", action="store_true",
                    help="turn the per-cgroup budget off (compare with the default to see its cost)")
    ap.add_argument("--legacy", action="store_true",
                    help="also measure the configuration before issue 16 (built-in read "
                         "prefixes, no dedup) in the same run")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (1 if args.quick else 5)
    arms = (DEFAULT_ARM, LEGACY_ARM) if args.legacy else (DEFAULT_ARM,)
    print(machine_line())
    print(f"agent overhead: consumer={args.consumer}, {reps} A/B repetition(s), "
          f"budget {'off' if args.no_budget else 'on (default)'}, arms "
          f"{', '.join(a.name for a in arms)}, pid {os.getpid()}")
    try:
        samples = measure(reps, args.quick, args.consumer, args.only, not args.no_bpf_stats,
                          args.no_budget, arms)
    except BenchError as exc:
        print(f"agent_overhead: {exc}", file=sys.stderr)
        return 1
    print()
    print(f"{'workload':<14} {'arm':<8} {'iters':>8} {'base/s':>11} {'agent/s':>11} "
          f"{'wall x':>7} {'cpu x':>7} {'agent us/it':>11} {'ev/it':>6} {'us/ev':>7} "
          f"{'kdrop':>8} {'qdrop':>7} {'bpf ns/it':>9}")
    results: dict[str, Any] = {}
    for (name, arm), s in samples.items():
        f = s.figures()
        results[name if arm == DEFAULT_ARM.name else f"{name}/{arm}"] = f
        print(f"{name:<14} {arm:<8} {f['iterations']:>8} {f['base_per_s']:>11,} "
              f"{f['agent_per_s']:>11,} {f['wall_ratio']:>7.3f} {f['cpu_ratio']:>7.3f} "
              f"{f['agent_cpu_us_per_iter']:>11.2f} {f['events_per_iter']:>6.2f} "
              f"{f['agent_cpu_us_per_event'] or 0:>7.1f} {f['kernel_drops']:>8} "
              f"{f['queue_drops']:>7} "
              f"{'-' if f['bpf_ns_per_iter'] is None else f['bpf_ns_per_iter']:>9}")
    print("(x = agent / baseline, medians; wall = loop time, cpu = the workload's user+sys time;"
          " agent us/it, us/ev = poll+export thread CPU per iteration, per event consumed;"
          " events and drops include other processes'; bpf ns/it = time in the probes' BPF"
          " programs per iteration, from a separate pass with kernel BPF statistics on)")
    for name, aim in AIMS.items():
        got = results.get(name)
        if got is None:
            continue
        ok = got["wall_ratio"] is not None and got["wall_ratio"] <= aim
        print(f"aim: {name} <= {aim}x untraced (default arm): wall {got['wall_ratio']}x, "
              f"cpu {got['cpu_ratio']}x -> {'met' if ok else 'NOT met'} (wall)")
    print(summary_line("agent_overhead", {"consumer": args.consumer, "reps": reps,
                                          "budget": not args.no_budget,
                                          "arms": [a.name for a in arms],
                                          "quick": args.quick, "workloads": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
