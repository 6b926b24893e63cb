"""Run every benchmark in bench/ in turn (``make bench``), each in its own process.

A benchmark is a module ``bench/<name>.py`` with a ``main`` (this runner, ``common.py`` and
``__init__.py`` excepted). Each runs as ``python -m bench.<name>`` so kernel probes, telemetry
registries and servers of one never leak into the next; its output is streamed as it comes.
``--quick`` is passed to the benchmarks that accept it (their source declares ``"--quick"``);
the others run as they are. Every run is bounded by ``--timeout``. At the end: one line per
benchmark (status, seconds, its ``BENCH_SUMMARY`` figures if it printed one) and a last
``BENCH_SUMMARY`` line for the whole run. The exit status is 1 when any benchmark failed.

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
from typing import Any, Optional

from bench.common import SUMMARY_PREFIX, machine, machine_line

BENCH_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = frozenset({"__init__", "common", "run_all"})


def discover() -> list[str]:
    """Benchmark module names, sorted; a module without ``def main`` is not one."""
    names = []
    for path in sorted(BENCH_DIR.glob("*.py")):
        if path.stem in NOT_BENCHMARKS:
            continue
        if "def main(" in path.read_text(encoding="utf-8"):
            names.append(path.stem)
    return names


def accepts_quick(name: str) -> bool:
    return '"--quick"' in (BENCH_DIR / f"{name}.py").read_text(encoding="utf-8")


def run_one(name: str, quick: bool, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-u", "-m", f"bench.{name}"]
    if quick and accepts_quick(name):
        cmd.append("--quick")
    print(f"\n===== {name}: {' '.join(cmd[2:])} =====", flush=True)
    started = time.monotonic()
    summary: Optional[dict[str, Any]] = None
    proc = subprocess.Popen(cmd, cwd=BENCH_DIR.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
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
    results = [run_one(name, args.quick, timeout_s) for name in chosen]
    print("\n===== summary =====")
    for r in results:
        figures = ""
        if r["summary"] is not None:
            figures = ", ".join(f"{k}={v}" for k, v in r["summary"].items()
                                if k not in ("bench", "machine") and not isinstance(v, (dict, list)))
        print(f"{r['bench']:<22} {r['status']:<18} {r['seconds']:>7.1f} s  {figures}")
    failed = [r["bench"] for r in results if r["status"] != "ok"]
    print(SUMMARY_PREFIX + json.dumps({"bench": "run_all", "quick": args.quick,
                                       "failed": failed, "results": results,
                                       "machine": machine()}, sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
