"""What the kernel's verifier costs at each start, per function, and what exec's program costs.

Every start loads each function of the sensor's program with ``BPF_PROG_LOAD`` (from the
program cache or after compiling; docs/architecture.md#program-cache) and the verifier walks
it again each time: its work is the count of instructions it processed (``verified_insns``),
which a loop it cannot prune multiplies. This compiles the default program once (BCC), then
loads every function alone, one after the other (no loads side by side, so a function's time
is its own), ``--reps`` times, and prints each function's median load time and verified
instructions, slowest first, with the total.

``--before-src DIR``: the same default program rendered by another tree's ``src`` (e.g. a
``git worktree`` of an older commit; rendered in a child process with that tree on the path),
compiled and loaded alternately with the current one in the same run; each figure is then
printed as before -> after with the ratio, and both programs' ``sys_enter_execve`` is attached
in turn and timed over a loop of ``/bin/true`` execs whose environment has ``--vars`` variables
(kernel BPF run statistics: ns per run, medians), so the per-exec cost is compared too.

Run: ``.venv/bin/python -m bench.exec_verify [--before-src DIR] [--reps 5] [--quick]``. Needs root
and the kernel (and BCC, to compile); ends with a ``BENCH_SUMMARY {json}`` line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from bench.common import BenchError, BpfRunStats, machine_line, median, summary_line

EXEC_PROGRAM = "tracepoint__syscalls__sys_enter_execve"
LOOP = "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
SHOWN = 8  # functions printed (slowest first); the summary has them all


RENDER = """
from dataclasses import replace
from otelguard.ebpf import loader
from otelguard.ebpf.registry import discover
from otelguard.ebpf.settings import SensorConfig
config = SensorConfig()
probes = discover(config.probes).probes
available = loader.available_tracepoints(probes)
print(loader.render_program(probes, replace(config.probe, self_tgid=0), available, 0,
                            config.budget), end="")
"""


def _text(src: Path) -> str:
    """The default program's C as the tree at ``src`` renders it (a child process)."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run([sys.executable, "-c", RENDER], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout


def _image(text: str) -> Any:
    from otelguard.ebpf import loader

    return loader._compile(text)  # benchmarks only: the compile step alone


def _load_each(image: Any) -> dict[str, tuple[float, int]]:
    """(seconds, verified instructions) of each function loaded alone, one at a time."""
    import time

    from otelguard.ebpf import bpfsys
    from otelguard.ebpf.progcache import rewrite_maps

    fds = [bpfsys.map_create(m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.name)
           for m in image.maps]
    out: dict[str, tuple[float, int]] = {}
    try:
        for f in image.functions:
            insns = rewrite_maps(f.insns, lambda index: fds[index])
            start = time.perf_counter()
            fd = bpfsys.prog_load(insns, image.license, image.kern_version,
                                  f.name.removeprefix("tracepoint__"))
            seconds = time.perf_counter() - start
            try:
                out[f.name] = (seconds, bpfsys.prog_info(fd).verified_insns)
            finally:
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return out


def _exec_ns(image: Any, nvars: int, execs: int) -> float:
    """ns per run of the image's sys_enter_execve program over ``execs`` execs."""
    from otelguard.ebpf import bpfsys
    from otelguard.ebpf.progcache import instantiate
    from otelguard.ebpf.settings import tracefs_root

    objs = instantiate(image, tracefs_root())
    try:
        fd = objs.programs[EXEC_PROGRAM]
        env = {f"OG_VAR_{i:03d}": "/usr/local/lib/some/value" for i in range(nvars)}
        env["PATH"] = "/usr/bin:/bin"
        with BpfRunStats():
            before = bpfsys.prog_info(fd)
            subprocess.run(["/bin/sh", "-c", LOOP.format(n=execs)], env=env, check=True)
            after = bpfsys.prog_info(fd)
    finally:
        objs.close()
    return (after.run_time_ns - before.run_time_ns) / max(1, after.run_cnt - before.run_cnt)


def _medians(runs: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    return {name: (median([r[name][0] for r in runs]), runs[0][name][1]) for name in runs[0]}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before-src", type=Path, default=None,
                    help="another tree's src, whose default program is compared against")
    ap.add_argument("--reps", type=int, default=None, help="loads per function (default 5)")
    ap.add_argument("--quick", action="store_true", help="2 repetitions, 100 execs")
    ap.add_argument("--vars", type=int, default=40, help="environment variables per exec")
    args = ap.parse_args(argv)
    reps = args.reps if args.reps is not None else (2 if args.quick else 5)
    execs = 100 if args.quick else 300
    print(machine_line())
    try:
        here = Path(__file__).resolve().parent.parent / "src"
        after_image = _image(_text(here))
        before_image = _image(_text(args.before_src)) if args.before_src is not None else None
        after_runs: list[dict[str, tuple[float, int]]] = []
        before_runs: list[dict[str, tuple[float, int]]] = []
        after_ns: list[float] = []
        before_ns: list[float] = []
        for _ in range(reps):  # alternating, so load drifts hit both alike
            if before_image is not None:
                before_runs.append(_load_each(before_image))
                before_ns.append(_exec_ns(before_image, args.vars, execs))
            after_runs.append(_load_each(after_image))
            if before_image is not None:
                after_ns.append(_exec_ns(after_image, args.vars, execs))
    except (BenchError, OSError, subprocess.CalledProcessError) as exc:
        print(f"exec_verify: {exc}", file=sys.stderr)
        return 1
    after = _medians(after_runs)
    before = _medians(before_runs) if before_runs else {}
    total_after = sum(s for s, _ in after.values())
    print(f"BPF_PROG_LOAD per function, each alone, median of {reps} (ms, instructions verified):")
    for name, (secs, verified) in sorted(after.items(), key=lambda kv: -kv[1][0])[:SHOWN]:
        short = name.removeprefix("tracepoint__")
        if name in before:
            b_secs, b_verified = before[name]
            print(f"  {short:40s} {b_secs * 1e3:8.1f} -> {secs * 1e3:8.1f} ms "
                  f"(x{secs / b_secs:.2f}), {b_verified:7d} -> {verified:7d} insns "
                  f"(x{verified / max(1, b_verified):.2f})")
        else:
            print(f"  {short:40s} {secs * 1e3:8.1f} ms, {verified:7d} insns")
    figures: dict[str, Any] = {
        "quick": args.quick, "reps": reps,
        "functions": {n: {"ms": round(s * 1e3, 2), "verified_insns": v}
                      for n, (s, v) in after.items()},
        "total_ms": round(total_after * 1e3, 1),
        "total_verified_insns": sum(v for _, v in after.values())}
    if before:
        total_before = sum(s for s, _ in before.values())
        print(f"  {'all functions':40s} {total_before * 1e3:8.1f} -> {total_after * 1e3:8.1f} ms "
              f"(x{total_after / total_before:.2f})")
        b_ns, a_ns = median(before_ns), median(after_ns)
        print(f"{EXEC_PROGRAM.split('__')[-1]} per exec ({args.vars} variables, {execs} execs): "
              f"{b_ns:.0f} -> {a_ns:.0f} ns (x{a_ns / b_ns:.2f})")
        figures["before"] = {
            "functions": {n: {"ms": round(s * 1e3, 2), "verified_insns": v}
                          for n, (s, v) in before.items()},
            "total_ms": round(total_before * 1e3, 1),
            "total_verified_insns": sum(v for _, v in before.values()),
            "exec_ns": round(b_ns)}
        figures.update({"exec_ns": round(a_ns), "vars": args.vars, "execs": execs,
                        "load_ratio": round(total_after / total_before, 3),
                        "exec_ratio": round(a_ns / b_ns, 3)})
    else:
        print(f"  {'all functions':40s} {total_after * 1e3:8.1f} ms")
    print(summary_line("exec_verify", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
