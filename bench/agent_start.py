"""Agent start: seconds from ``otelguard run`` to its first event, cold (BCC compiles) and warm
(the program cache, no compiler), its RSS, and its CPU when nothing happens.

Each run is the real CLI (``otelguard run``, default probes, rules and pipeline) in its own
process with a ``jsonl:-`` output (read from its stdout and discarded), a config that points
``sensor.program_cache_dir`` at a directory of this benchmark, and a helper loop that execs
``/bin/true`` every 100 ms so there is always an event to see. "First event" is the first jsonl
line, timed from the process's spawn (Python's imports, the rules, the load, the pipeline and the write included),
with the CPU the run had used by then (user+sys, all threads: the verifier runs in the loading
threads), which a loaded machine does not inflate.

- ``cold``: an empty cache directory: BCC compiles (as every start did before the cache);
- ``warm``: the same directory again: the program is loaded from the cache;

cold and warm alternate (``--reps`` pairs, a fresh directory per pair). Each run imports the
agent from a copy of ``src`` in the benchmark's directory, byte-compiled first (``compileall``,
as a package install does; the shared machine's environment sets ``PYTHONDONTWRITEBYTECODE``,
so without it every start compiles ~250 modules from source): ``--no-bytecode`` runs without
(the behaviour before, kept to compare). ``--ab-bytecode`` adds, after each warm run, one more
from a copy without bytecode (``warm-nobc``), so the two compare side by side. ``--before-src
DIR`` (another tree's ``src``, e.g. a ``git worktree`` of an older commit) adds a cold and a warm
run of that tree per pair (``before-cold``, ``before-warm``; its own program cache directory,
the same bytecode setting), and the warm start is reported as after/before.

In each run, after the
first event, RSS (VmRSS) is read once the run has been up ``--steady`` seconds, with its peak
(VmHWM); the run's CPU (user+sys from /proc/PID/stat) over the last ``--idle`` seconds, while
the exec loop is stopped, is its idle CPU: that window is also run with ``sensor.cgroup_scope``
set to an empty cgroup (``idle-scoped``: the agent's own floor, no event reaching it; its
program, whose text names the scope, is cached by a priming start first) since the shared
machine is never quiet. Aims (issue 16): first event <= 5 s warm, RSS <= 150 MB, idle CPU
<= 1% of a core.

Run: ``.venv/bin/python -m bench.agent_start`` (``--quick``: one pair, 10 s windows; ``--reps``,
``--steady``, ``--idle``, ``--no-bytecode``, ``--ab-bytecode``, ``--before-src DIR``). Needs root and the kernel; ends with a ``BENCH_SUMMARY {json}`` line.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench import aims
from bench.common import BenchError, machine_line, median, summary_line

AIM_START_S = aims.START_S
AIM_RSS_MB = aims.RSS_MB
AIM_IDLE_CPU = aims.IDLE_CPU
ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class StartRun:
    kind: str  # cold | warm | idle-scoped
    first_event_s: float
    first_event_cpu_s: float  # the run's CPU (user+sys, all threads) when the first event showed
    rss_mb: float
    peak_mb: float
    idle_cpu: float  # share of one core over the idle window
    origin: str  # what the run's log says it loaded from


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


class ExecLoop:
    """/bin/true every 100 ms until stopped: an event always on its way."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            subprocess.run(["/bin/true"], check=False)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass(frozen=True)
class Tree:
    """The agent's code a run imports: a copy of a ``src`` directory, byte-compiled or not."""

    path: Path  # holds the copied ``otelguard`` package
    bytecode: bool

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=str(self.path))
        if self.bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        else:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env


def copy_tree(src: Path, dest: Path, bytecode: bool) -> Tree:
    """``src/otelguard`` copied to ``dest`` (no ``__pycache__``), compiled when ``bytecode``."""
    shutil.copytree(src / "otelguard", dest / "otelguard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if bytecode and not compileall.compile_dir(str(dest / "otelguard"), quiet=1):
        raise BenchError(f"compileall failed in {dest}")
    return Tree(dest, bytecode)


def prime(cache: Path, work: Path, scope: str, tree: Tree) -> None:
    """Start a scoped run until its program is loaded (compiled into ``cache``), then stop it."""
    cfg = work / "prime.yaml"
    cfg.write_text(f"sensor:\n  program_cache_dir: {cache}\n  cgroup_scope: [{scope}]\n")
    log_path = work / "prime.log"
    env = tree.env()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from otelguard.cli import main; sys.exit(main())",
             "run", "--config", str(cfg), "--output", "jsonl:-",
             "--metrics", f"127.0.0.1:{_free_port()}"],
            env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=work)
        try:
            deadline = time.monotonic() + 900
            while " started in " not in log_path.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"priming run failed: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def one_run(kind: str, cache: Path, work: Path, steady_s: float, idle_s: float, tree: Tree,
            scope: Optional[str] = None) -> StartRun:
    cfg = work / f"{kind}.yaml"
    lines = ["sensor:", f"  program_cache_dir: {cache}"]
    if scope:
        lines.append(f"  cgroup_scope: [{scope}]")
    cfg.write_text("\n".join(lines) + "\n")
    log_path = work / f"{kind}.log"
    env = tree.env()
    cmd = [sys.executable, "-c", "import sys; from otelguard.cli import main; sys.exit(main())",
           "run", "--config", str(cfg), "--output", "jsonl:-",
           "--metrics", f"127.0.0.1:{_free_port()}"]  # stopped by SIGTERM below
    loop = ExecLoop()
    loop.start()
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log, cwd=work)
        try:
            first = FirstLine(proc, started).wait(900.0 if scope is None else 60.0)
            first_cpu = _cpu_s(proc.pid)
            if scope is not None:
                first = first_cpu = float("nan")  # nothing in scope: no event ever shows
            loop.stop()
            time.sleep(max(0.0, steady_s - (time.monotonic() - started)))
            if proc.poll() is not None:
                raise BenchError(f"otelguard run ({kind}) exited with {proc.returncode}; see "
                                 f"{log_path}")
            rss, peak = _status_kb(proc.pid, "VmRSS") / 1024, _status_kb(proc.pid, "VmHWM") / 1024
            cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
            time.sleep(idle_s)
            idle = (_cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
        finally:
            loop.stop()
            proc.send_signal(signal.SIGINT)  # Ctrl-C: otelguard run stops cleanly
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    text = log_path.read_text(errors="replace")
    origin = "cache" if "(program from the cache)" in text else (
        "compiled" if "(program compiled)" in text else "?")
    return StartRun(kind, first, first_cpu, rss, peak, idle, origin)


class FirstLine:
    """Reads the run's stdout (its ``jsonl:-`` output): notes when the first whole line arrived,
    then discards the rest (the shared machine's activity makes gigabytes of records)."""

    def __init__(self, proc: subprocess.Popen[bytes], started: float) -> None:
        self.at: Optional[float] = None
        self._seen = threading.Event()
        self._proc = proc
        self._started = started
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self._proc.stdout
        assert stream is not None
        if stream.readline().endswith(b"\n"):
            self.at = time.monotonic() - self._started
        self._seen.set()
        while stream.read(1 << 20):
            pass

    def wait(self, timeout_s: float) -> float:
        """Seconds from start to the first line; NaN when none came within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self._seen.wait(0.05):
            if self._proc.poll() is not None:
                raise BenchError(f"otelguard run exited with {self._proc.returncode} before "
                                 "any event")
            if time.monotonic() > deadline:
                return float("nan")
        return self.at if self.at is not None else float("nan")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one pair, 10 s windows")
    ap.add_argument("--reps", type=int, default=None, help="cold/warm pairs (default 2)")
    ap.add_argument("--steady", type=float, default=None,
                    help="seconds after start at which RSS is read (default 60)")
    ap.add_argument("--idle", type=float, default=None,
                    help="seconds of the idle-CPU window (default 60)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="runs compile the agent's modules from source (the behaviour before)")
    ap.add_argument("--ab-bytecode", action="store_true",
                    help="after each warm run, one from a copy without bytecode (warm-nobc)")
    ap.add_argument("--before-src", type=Path, default=None,
                    help="another tree's src: a cold and a warm run of it per pair")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("agent_start: needs root (BPF)", file=sys.stderr)
        return 2
    reps = args.reps or (1 if args.quick else 2)
    steady = args.steady or (10.0 if args.quick else 60.0)
    idle = args.idle or (10.0 if args.quick else 60.0)
    print(machine_line())
    runs: list[StartRun] = []
    work = Path(tempfile.mkdtemp(prefix="og-bench-start-"))
    from otelguard.ebpf.cgroup import cgroup2_mount

    root = cgroup2_mount()
    if root is None:
        raise BenchError("no cgroup v2 mount for the idle-scoped run")
    empty = Path(root) / f"og-bench-empty-{os.getpid()}"
    try:
        bytecode = not args.no_bytecode
        tree = copy_tree(ROOT / "src", work / "src", bytecode)
        plain = copy_tree(ROOT / "src", work / "src-nobc", False) if args.ab_bytecode else None
        before = (copy_tree(args.before_src, work / "src-before", bytecode)
                  if args.before_src is not None else None)
        for rep in range(reps):
            cache = work / f"cache-{rep}"
            plan: list[tuple[str, Path, Tree]] = []
            if before is not None and rep % 2 == 0:  # alternating which tree goes first
                plan += [("before-cold", work / f"cache-before-{rep}", before),
                         ("before-warm", work / f"cache-before-{rep}", before)]
            plan += [("cold", cache, tree), ("warm", cache, tree)]
            if plain is not None:
                plan.append(("warm-nobc", cache, plain))
            if before is not None and rep % 2 == 1:
                plan += [("before-cold", work / f"cache-before-{rep}", before),
                         ("before-warm", work / f"cache-before-{rep}", before)]
            for kind, kind_cache, kind_tree in plan:
                r = one_run(kind, kind_cache, work, steady, idle, kind_tree)
                runs.append(r)
                _print_run(r)
        empty.mkdir()
        prime(work / "cache-0", work, f"/{empty.name}", tree)  # the scope is in the text
        r = one_run("idle-scoped", work / "cache-0", work, steady, idle, tree,
                    scope=f"/{empty.name}")
        runs.append(r)
        _print_run(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if empty.is_dir():
            empty.rmdir()
    figures = _figures(runs)
    figures["bytecode"] = not args.no_bytecode
    print()
    print(f"start to first event: cold {figures['cold_first_event_s']:.1f} s, warm "
          f"{figures['warm_first_event_s']:.1f} s (warm/cold x{figures['warm_vs_cold_start']:.2f}; "
          f"aim <= {AIM_START_S:.0f} s: x{figures['warm_vs_aim_start']:.2f} of it); CPU spent by "
          f"then: cold {figures['cold_first_event_cpu_s']:.1f} s, warm "
          f"{figures['warm_first_event_cpu_s']:.1f} s (x{figures['warm_vs_cold_start_cpu']:.2f}; "
          "on a loaded machine the wall time waits for a core, the CPU time does not)")
    print(f"RSS after {steady:.0f} s: cold {figures['cold_rss_mb']:.0f} MB (peak "
          f"{figures['cold_peak_mb']:.0f}), warm {figures['warm_rss_mb']:.0f} MB (peak "
          f"{figures['warm_peak_mb']:.0f}); warm/cold x{figures['warm_vs_cold_rss']:.2f}; "
          f"aim <= {AIM_RSS_MB:.0f} MB: x{figures['warm_vs_aim_rss']:.2f} of it")
    print(f"idle CPU over {idle:.0f} s: host-wide {100 * figures['idle_cpu_host']:.2f}% of a core "
          f"(the shared machine's own activity reaches it), scoped to an empty cgroup "
          f"{100 * figures['idle_cpu_scoped']:.2f}% (aim <= {100 * AIM_IDLE_CPU:.0f}%: "
          f"x{figures['idle_scoped_vs_aim']:.2f} of it)")
    for other, label in (("warm-nobc", "without bytecode"), ("before-warm", "the --before-src tree")):
        if any(r.kind == other for r in runs):
            wall = median([r.first_event_s for r in runs if r.kind == other])
            cpu = median([r.first_event_cpu_s for r in runs if r.kind == other])
            key = other.replace("-", "_")
            figures.update({f"{key}_first_event_s": round(wall, 2),
                            f"{key}_first_event_cpu_s": round(cpu, 2),
                            f"warm_vs_{key}_start": round(figures["warm_first_event_s"] / wall, 3),
                            f"warm_vs_{key}_start_cpu":
                                round(figures["warm_first_event_cpu_s"] / cpu, 3)})
            print(f"warm start against {label} ({other}): wall {wall:.2f} -> "
                  f"{figures['warm_first_event_s']:.2f} s (x{figures[f'warm_vs_{key}_start']:.2f}), "
                  f"CPU {cpu:.2f} -> {figures['warm_first_event_cpu_s']:.2f} s "
                  f"(x{figures[f'warm_vs_{key}_start_cpu']:.2f})")
    print(summary_line("agent_start", figures))
    return 0


def _print_run(r: StartRun) -> None:
    print(f"{r.kind:12s} origin={r.origin:8s} first_event={r.first_event_s:6.2f} s "
          f"(cpu {r.first_event_cpu_s:6.2f} s) "
          f"rss={r.rss_mb:6.1f} MB peak={r.peak_mb:6.1f} MB idle_cpu={100 * r.idle_cpu:5.2f}%",
          flush=True)


def _figures(runs: list[StartRun]) -> dict[str, Any]:
    def med(kind: str, attr: str) -> float:
        return median([getattr(r, attr) for r in runs if r.kind == kind])

    cold_s, warm_s = med("cold", "first_event_s"), med("warm", "first_event_s")
    cold_cpu, warm_cpu = med("cold", "first_event_cpu_s"), med("warm", "first_event_cpu_s")
    cold_rss, warm_rss = med("cold", "rss_mb"), med("warm", "rss_mb")
    host_idle = median([r.idle_cpu for r in runs if r.kind in ("cold", "warm")])
    scoped = med("idle-scoped", "idle_cpu")
    return {
        "cold_first_event_s": round(cold_s, 2), "warm_first_event_s": round(warm_s, 2),
        "warm_vs_cold_start": round(warm_s / cold_s, 3),
        "cold_first_event_cpu_s": round(cold_cpu, 2), "warm_first_event_cpu_s": round(warm_cpu, 2),
        "warm_vs_cold_start_cpu": round(warm_cpu / cold_cpu, 3),
        "warm_vs_aim_start": round(warm_s / AIM_START_S, 3),
        "cold_rss_mb": round(cold_rss, 1), "warm_rss_mb": round(warm_rss, 1),
        "cold_peak_mb": round(med("cold", "peak_mb"), 1),
        "warm_peak_mb": round(med("warm", "peak_mb"), 1),
        "warm_vs_cold_rss": round(warm_rss / cold_rss, 3),
        "warm_vs_aim_rss": round(warm_rss / AIM_RSS_MB, 3),
        "idle_cpu_host": round(host_idle, 4), "idle_cpu_scoped": round(scoped, 4),
        "idle_scoped_rss_mb": round(med("idle-scoped", "rss_mb"), 1),  # nothing flowing in
        "idle_scoped_vs_aim": round(scoped / AIM_IDLE_CPU, 3),
        "origins": [f"{r.kind}:{r.origin}" for r in runs],
    }


if __name__ == "__main__":
    sys.exit(main())
