"""Agent CPU per exec: what one fork + execve(/bin/true) + wait costs the agent, two trees side by side.

An exec is the agent's most expensive event source: ~5 records (fork, exec, exit, two capability
checks), the process table's `/proc` reads, a process span, and in ``otelguard run`` the
pipeline. This runs ``bench/syscall_loop.c exec N`` once without the agent (the loop's wall
time, for the ratio) and once with the agent scoped to the loop's own cgroup, then prints the
agent's poll and export thread CPU per exec. With ``--before-src DIR`` (the ``src`` of another
checkout, e.g. a ``git worktree``) each round runs that tree's agent too, in a fresh process,
the order alternating round by round; medians of ``--rounds``.

Run: ``.venv/bin/python -m bench.exec_agent_cpu --before-src /tmp/og/before/src`` (``--execs``,
``--consumer agent|run``, ``--rounds``, ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import AgentUnderTest, isolated_cgroup, summary_line, workload_binary

HERE = Path(__file__).resolve().parent


def one(execs: int, consumer: str) -> dict[str, float]:
    """One measurement in this process (the tree on ``sys.path``)."""
    loop = [str(workload_binary()), "exec", str(execs)]
    with isolated_cgroup() as rel:
        t = time.perf_counter()
        subprocess.run(loop, check=True, capture_output=True)
        base = time.perf_counter() - t
        agent = AgentUnderTest(consumer, scope=(rel,)).start()
        try:
            c0 = agent.counters()
            t = time.perf_counter()
            subprocess.run(loop, check=True, capture_output=True)
            wall = time.perf_counter() - t
            agent.wait_drained()
            c = agent.counters().minus(c0)
        finally:
            agent.stop()
    return {"agent_us": 1e6 * c.cpu_s / execs, "poll_us": 1e6 * c.poll_cpu_s / execs,
            "export_us": 1e6 * c.export_cpu_s / execs, "wall_x": wall / base,
            "records_per_exec": c.records / execs}


def run_tree(src: str, execs: int, consumer: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(HERE.parent)]))
    proc = subprocess.run([sys.executable, "-m", "bench.exec_agent_cpu", "--one", "--execs",
                           str(execs), "--consumer", consumer], env=env, cwd=str(HERE.parent),
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{src}: {proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--consumer", choices=("agent", "run"), default="run")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--before-src", help="the src directory of the tree to compare with")
    ap.add_argument("--quick", action="store_true", help="500 execs, 2 rounds")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.execs, args.rounds = 500, 2
    if args.one:
        print(json.dumps(one(args.execs, args.consumer)))
        return
    here = str(HERE.parent / "src")
    trees = {"after": here} if not args.before_src else {"before": args.before_src, "after": here}
    got: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for name in order:
            got[name].append(run_tree(trees[name], args.execs, args.consumer))
            print(f"round {r + 1} {name:6s} " + "  ".join(
                f"{k} {v:.3f}" if k == "wall_x" else f"{k} {v:.1f}"
                for k, v in got[name][-1].items()))
    med = {name: {k: statistics.median(x[k] for x in runs) for k in runs[0]}
           for name, runs in got.items()}
    print(f"medians of {args.rounds} rounds, {args.execs} execs, consumer {args.consumer}:")
    for name, m in med.items():
        print(f"  {name:6s} agent {m['agent_us']:7.1f} us/exec (poll {m['poll_us']:.1f}, export "
              f"{m['export_us']:.1f}), loop wall x{m['wall_x']:.3f} vs no agent")
    if "before" in med:
        print(f"  after/before agent CPU per exec: x{med['after']['agent_us'] / med['before']['agent_us']:.2f}")
    print(summary_line("exec_agent_cpu", {f"{n}_{k}": round(v, 3) for n, m in med.items()
                                          for k, v in m.items()}))


if __name__ == "__main__":
    main()
