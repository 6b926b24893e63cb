"""What a busy but benign container sends: the figures the per-cgroup budget's default rests on.

Each workload runs in its own cgroup v2 directory under the cgroup2 mount while the real Sensor
(all probes, default filters, the budget OFF, scoped in the kernel to that cgroup) records what
the cgroup sends. Figures per workload: records the kernel sent (every record, bookkeeping
included: the sensor's ``records`` counter), events decoded, the run's mean records/s, and the
peak events in any 1 s window (from the events' own timestamps); kernel and queue drops must be
0 for the figures to hold.

Workloads:

- ``python-imports``: a fresh interpreter importing every top-level stdlib module it can, 5 times
  (an import storm: thousands of stat/open calls; only opens under the read prefixes or with
  write intent are records);
- ``c-build``: ``make -j2`` of 40 generated C files with gcc -O1 in a directory under /tmp
  (exec of cc1/as/ld per file, object files written);
- ``shell-loop``: a POSIX shell running /bin/true 2000 times (a configure-style exec loop).

Run: ``.venv/bin/python -m bench.cgroup_budget``. Needs root and the kernel; ends with a
``BENCH_SUMMARY {json}`` line. The budget's default (``otelguard.ebpf.budget``) must stay well
above every peak printed here.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench.common import machine_line, summary_line

_IMPORTS = (
    "import sys, pkgutil, importlib\n"
    "for m in sorted(sys.stdlib_module_names):\n"
    "    if m.startswith(('_', 'idlelib', 'tkinter', 'turtle', 'antigravity', 'this')): continue\n"
    "    try: importlib.import_module(m)\n"
    "    except Exception: pass\n"
)


def _c_build(tmp: Path) -> list[str]:
    for i in range(40):
        (tmp / f"u{i}.c").write_text(
            "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
            f"int f{i}(const char *s) {{ char b[64]; snprintf(b, sizeof b, \"%s{i}\", s);"
            f" return (int)strlen(b) + atoi(s); }}\n")
    objs = " ".join(f"u{i}.o" for i in range(40))
    (tmp / "Makefile").write_text(f"all: {objs}\n%.o: %.c\n\tgcc -O1 -c $< -o $@\n")
    return ["make", "-s", "-j2", "-C", str(tmp)]


def workloads(tmp: Path) -> dict[str, list[str]]:
    return {
        "python-imports": ["sh", "-c", " ; ".join([f"{sys.executable} -c \"$OG_CODE\""] * 5)],
        "c-build": _c_build(tmp),
        "shell-loop": ["sh", "-c", "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"],
    }


def peak_per_s(times_ns: list[int]) -> int:
    """The most events in any 1 s window."""
    times_ns.sort()
    best, lo = 0, 0
    for hi, t in enumerate(times_ns):
        while t - times_ns[lo] >= 1_000_000_000:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run(name: str, argv: list[str], cgroup: Path, sensor: Any) -> dict[str, Any]:
    """One workload inside ``cgroup`` with the sensor draining; its figures."""
    def enter() -> None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    while sensor.drain(65536, 0.2):  # what the previous workload left
        pass
    before = sensor.stats()
    started = time.monotonic()
    times: list[int] = []
    with subprocess.Popen(argv, preexec_fn=enter, stdout=subprocess.DEVNULL,
                          env={**os.environ, "OG_CODE": _IMPORTS}) as proc:
        while proc.poll() is None:
            times += [e.time_ns for e in sensor.drain(65536, 0.05)]
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        times += [e.time_ns for e in sensor.drain(65536, 0.2)]
    after = sensor.stats()
    records = after["records"] - before["records"]
    return {"workload": name, "rc": proc.returncode, "seconds": round(elapsed, 2),
            "records": records, "events": len(times),
            "mean_records_per_s": round(records / elapsed) if elapsed else 0,
            "peak_events_1s": peak_per_s(times),
            "kernel_drops": after["kernel_drops"] - before["kernel_drops"],
            "queue_drops": after["queue_drops"] - before["queue_drops"]}


def main(argv: Optional[list[str]] = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    from otelguard.ebpf.budget import BudgetConfig
    from otelguard.ebpf.cgroup import cgroup2_mount
    from otelguard.ebpf.sensor import Sensor
    from otelguard.ebpf.settings import SensorConfig

    root = cgroup2_mount()
    if os.geteuid() != 0 or root is None:
        print("cgroup_budget: needs root and a cgroup v2 mount", file=sys.stderr)
        return 1
    print(machine_line())
    name = f"otelguard-bench-{secrets.token_hex(4)}"
    cgroup = root / name
    cgroup.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="og-budget-"))
    results = []
    try:
        sensor = Sensor(SensorConfig(cgroup_scope=(f"/{name}",),
                                     budget=BudgetConfig(records_per_s=0)))
        sensor.start()
        try:
            for wl, args in workloads(tmp).items():
                r = run(wl, args, cgroup, sensor)
                results.append(r)
                print("  " + "  ".join(f"{k}={v}" for k, v in r.items()), flush=True)
        finally:
            sensor.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for _ in range(50):
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    print(summary_line("cgroup_budget", {"workloads": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
