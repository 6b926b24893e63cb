"""What the process probe's environment scan (Falco's ``proc.env``) adds to an exec, in the kernel.

Every execve runs the process probe's ``sys_enter_execve`` program, which reads argv and, when
``sensor.probe.env_names`` is not empty, walks the caller's envp: per variable one pointer read
and one read of the name's head from user memory, plus a byte compare against the allowlist
(docs/architecture.md#kernel-facts). This loads the real Sensor twice per repetition, with the
scan compiled out (``env_names: []``, the baseline) and with the default allowlist, and runs a
shell loop of ``/bin/true`` execs whose environment holds ``--vars`` variables (none of them
allowlisted: the common case). Figures are the kernel's BPF run statistics of that one program
(ns per run, medians over the repetitions) and their ratio to the baseline measured in the
same run.

Run: ``.venv/bin/python -m bench.exec_env_scan`` (``--quick``, ``--vars 40 250``). Needs root
and the kernel; ends with a ``BENCH_SUMMARY {json}`` line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from typing import Any, Optional

from bench.common import BenchError, BpfRunStats, machine_line, median, summary_line

PROGRAM = "tracepoint__syscalls__sys_enter_execve"  # --program to measure another
LOOP = "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"


def _program_ns(env_names: tuple[str, ...], nvars: int, execs: int, program: str) -> float:
    """ns per run of ``program`` over ``execs`` execs with ``nvars`` variables."""
    from otelguard.ebpf.probe import ProbeConfig
    from otelguard.ebpf.sensor import Sensor
    from otelguard.ebpf.settings import SensorConfig

    sensor = Sensor(SensorConfig(probe=replace(ProbeConfig(), env_names=env_names)))
    sensor.start()
    try:
        fd = sensor._program.program_fds[program]  # benchmarks only: the loaded program
        env = {f"OG_VAR_{i:03d}": "/usr/local/lib/some/value" for i in range(nvars)}
        env["PATH"] = "/usr/bin:/bin"
        with BpfRunStats():
            t0, c0 = _stats(fd)
            subprocess.run(["/bin/sh", "-c", LOOP.format(n=execs)], env=env, check=True)
            t1, c1 = _stats(fd)
    finally:
        sensor.stop()
    return (t1 - t0) / max(1, c1 - c0)


def _stats(fd: int) -> tuple[int, int]:
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        info = dict(line.split(":", 1) for line in fh if ":" in line)
    return int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0"))


def main(argv: Optional[list[str]] = None) -> int:
    from otelguard.ebpf.probe import ProbeConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repetition of 100 execs")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--vars", type=int, nargs="+", default=[40, 250],
                    help="environment sizes to measure (variables per exec)")
    ap.add_argument("--program", default=PROGRAM,
                    help="BPF program to time (e.g. tracepoint__syscalls__sys_exit_execve: the "
                         "copy of the larger record)")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    execs = 100 if args.quick else 300
    print(machine_line())
    results: dict[str, Any] = {}
    try:
        for nvars in args.vars:
            off: list[float] = []
            on: list[float] = []
            for _ in range(reps):  # alternating, so load drifts hit both alike
                off.append(_program_ns((), nvars, execs, args.program))
                on.append(_program_ns(ProbeConfig().env_names, nvars, execs, args.program))
            base, scan = median(off), median(on)
            results[str(nvars)] = {"off_ns": round(base), "default_ns": round(scan),
                                   "ratio": round(scan / base, 2),
                                   "added_ns_per_var": round((scan - base) / max(1, nvars), 1)}
            print(f"{nvars:4d} vars: {args.program.split('__')[-1]} {base:8.0f} ns (scan off) -> {scan:8.0f} ns "
                  f"(default allowlist): x{scan / base:.2f}, +{(scan - base) / max(1, nvars):.0f}"
                  " ns per variable")
    except (BenchError, OSError) as exc:
        print(f"exec_env_scan: {exc}", file=sys.stderr)
        return 1
    print(summary_line("exec_env_scan", {"quick": args.quick, "reps": reps, "execs": execs,
                                         "program": args.program,
                                         "vars": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
