"""Run every benchmark in bench/ in turn (``make bench``), each in its own process.

A benchmark is a module ``bench/<name>.py`` with a ``main`` (this runner, ``common.py`` and
``__init__.py`` excepted). Each runs as ``python -m bench.<name>`` so kernel probes, telemetry
registries and servers of one never leak into the next; its output is streamed as it comes.
``--quick`` is passed to the benchmarks that accept it (their source declares ``"--quick"``);
the others run as they are. Every run is bounded by ``--timeout``. At the end: one line per
benchmark (status, seconds, its ``BENCH_SUMMARY`` figures if it printed one), the aims table
(``bench/aims.py``: each aim of issues 15 and 16 with its figure, figure/aim, met or not, or why
it was not measured) and a last ``BENCH_SUMMARY`` line for the whole run. The exit status is 1 when any benchmark failed.

Run: ``.venv/bin/python -m bench.run_all`` (``--quick``, ``--only NAME ...``, ``--list``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from bench import aims
from bench.common import SUMMARY_PREFIX, machine, machine_line

BENCH_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = frozenset({"__init__", "common", "run_all", "aims", "before_after"})
# arguments a benchmark needs to measure its aim, passed when it declares the flag: the
# throughput generator repeats one open, which the kernel's dedup counts instead of sending
# Per benchmark, groups of arguments the aims need; a group goes only to a benchmark that
# declares its first flag (an older tree's may predate it).
AIM_ARGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "agent_throughput": (("--dedup-ms", "0"), ("--workloads", "opens,mix"))}


def discover() -> list[str]:
    """Benchmark module names, sorted; a module without ``def main`` is not one."""
    names = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem in NOT_BENCHMARKS:
            continue
        if "def main(" in path.read_text(encoding="utf-8"):
            names.append(path.stem)
    return names


def accepts_flag(name: str, flag: str, root: Path = BENCH_DIR.parent) -> bool:
    """Whether ``bench/<name>.py`` of the tree at ``root`` declares ``flag`` (``"--quick"``)."""
    path = root / "bench" / f"{name}.py"
    return path.is_file() and f'"{flag}"' in path.read_text(encoding="utf-8")


def aim_args(name: str) -> tuple[str, ...]:
    """The groups of :data:`AIM_ARGS` of ``name`` whose flag its benchmark declares."""
    return tuple(a for group in AIM_ARGS.get(name, ()) if accepts_flag(name, group[0])
                 for a in group)


def accepts_quick(name: str, root: Path = BENCH_DIR.parent) -> bool:
    return accepts_flag(name, "--quick", root)


def run_one(name: str, quick: bool, timeout_s: float, *, root: Path = BENCH_DIR.parent,
            args: Sequence[str] = (), label: str = "") -> dict[str, Any]:
    """Run ``bench.<name>`` of the tree at ``root`` (its ``src`` first on the path), streaming
    its output (each line prefixed ``[label] `` when given), bounded by ``timeout_s``."""
    cmd = [sys.executable, "-u", "-m", f"bench.{name}"]
    if quick and accepts_quick(name, root):
        cmd.append("--quick")
    cmd.extend(args)
    prefix = f"[{label}] " if label else ""
    print(f"\n{prefix}===== {name}: {' '.join(cmd[2:])} =====", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root / "src"), str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    started = time.monotonic()
    summary: Optional[dict[str, Any]] = None
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, env=env,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
            if line.startswith(SUMMARY_PREFIX):
                try:
                    summary = json.loads(line[len(SUMMARY_PREFIX):])
                except json.JSONDecodeError:
                    pass
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seconds = time.monotonic() - started
    timed_out = rc != 0 and seconds >= timeout_s
    status = "ok" if rc == 0 else ("timeout" if timed_out else f"failed (exit {rc})")
    return {"bench": name, "status": status, "seconds": round(seconds, 1), "summary": summary}


def main(argv: Optional[list[str]] = None) -> int:
    names = discover()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="pass --quick to the benchmarks that accept it")
    ap.add_argument("--only", nargs="+", choices=names, help="run only these benchmarks")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per benchmark (default 900; quick 300)")
    args = ap.parse_args(argv)
    if args.list:
        for name in names:
            print(f"{name}{'  (--quick)' if accepts_quick(name) else ''}")
        return 0
    timeout_s = args.timeout or (300.0 if args.quick else 900.0)
    chosen = args.only or names
    print(machine_line())
    print(f"benchmarks: {', '.join(chosen)}{' (quick)' if args.quick else ''}; "
          f"{'root' if os.geteuid() == 0 else 'NOT root: the agent benchmarks will fail'}")
    results = [run_one(name, args.quick, timeout_s, args=aim_args(name)) for name in chosen]
    print("\n===== summary =====")
    for r in results:
        figures = ""
        if r["summary"] is not None:
            figures = ", ".join(f"{k}={v}" for k, v in r["summary"].items()
                                if k not in ("bench", "machine") and not isinstance(v, (dict, list)))
        print(f"{r['bench']:<22} {r['status']:<18} {r['seconds']:>7.1f} s  {figures}")
    failed = [r["bench"] for r in results if r["status"] != "ok"]
    rows = aims.evaluate(results)
    if any(b in chosen for b in aims.AIM_BENCHES):
        print("\n===== aims (issues 15, 16; thresholds in bench/aims.py) =====")
        print(aims.format_table(rows))
    print(SUMMARY_PREFIX + json.dumps({"bench": "run_all", "quick": args.quick,
                                       "failed": failed, "results": results,
                                       "aims": [r.as_json() for r in rows],
                                       "machine": machine()}, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
