"""Before/after in one run: the aims' benchmarks in an older commit and in this tree, alternately.

``python -m bench.aims --before [REF]`` checks REF out into a temporary git worktree (``git
worktree add --detach``, removed at the end unless ``--keep``) and runs each benchmark of
:data:`SPECS` there and here, one after the other (``bench/run_all.py``'s ``run_one``, each tree's
``src`` first on the path, one shared venv), the order alternating from benchmark to benchmark
and from round to round so that a drift of the machine's load does not favour one side. Then it
prints the aims table of both sides with after/before per aim (``bench/aims.py``) and a
``BENCH_SUMMARY`` line holding every run, which ``python -m bench.aims --from FILE`` reprints.

An older tree may lack a benchmark, a flag or a summary key: a benchmark missing on one side, or
one that prints no ``BENCH_SUMMARY`` there, is not run on that side (its aims read "not
measured", with why); a flag is passed only when both trees' benchmarks declare it (so both
sides run the same way; the dropped flags are printed); a missing key is "not measured".
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from bench import aims
from bench.common import SUMMARY_PREFIX, machine, machine_line
from bench.run_all import accepts_flag, run_one

REPO = Path(__file__).resolve().parents[1]
AIM_OVERHEAD_WORKLOADS = ("open-filtered", "exec", "connect")


@dataclass(frozen=True)
class BenchSpec:
    """How to run one aims benchmark: argument groups (a flag and its values), quick and full."""

    name: str
    quick: tuple[tuple[str, ...], ...]
    full: tuple[tuple[str, ...], ...] = ()
    # switches that turn a newer feature off: each tree whose benchmark declares one gets it
    # (a tree without the flag predates the feature, so it already runs without it)
    own: tuple[tuple[str, ...], ...] = ()


SPECS: tuple[BenchSpec, ...] = (
    BenchSpec("hot_path", (("--quick",),)),
    BenchSpec("detection_eval", (("--records", "5000"), ("--repeats", "1"))),
    # dedup off: the generator repeats one open, which the kernel otherwise counts, not sends
    BenchSpec("agent_throughput", (("--quick",), ("--no-profile",)), (("--no-profile",),),
              own=(("--dedup-ms", "0"), ("--workloads", "opens,mix"))),
    BenchSpec("agent_overhead",
              (("--quick",), ("--no-bpf-stats",), ("--only", *AIM_OVERHEAD_WORKLOADS)),
              (("--only", *AIM_OVERHEAD_WORKLOADS),)),
    BenchSpec("agent_start", (("--quick",),)),
)


def bench_source(root: Path, name: str) -> Optional[str]:
    path = root / "bench" / f"{name}.py"
    return path.read_text(encoding="utf-8") if path.is_file() else None


def skip_reason(root: Path, name: str, ref: str) -> Optional[str]:
    """Why ``bench/<name>.py`` of this tree cannot give aims figures (None: it can)."""
    src = bench_source(root, name)
    if src is None:
        return f"not run: bench/{name}.py does not exist at {ref}"
    if "summary_line(" not in src and "SUMMARY_PREFIX" not in src:
        return f"not run: bench/{name}.py prints no BENCH_SUMMARY at {ref}"
    return None


def shared_args(spec: BenchSpec, quick: bool, roots: Sequence[Path]) -> tuple[list[str], list[str]]:
    """(arguments every tree's benchmark declares, flags dropped because one tree lacks them)."""
    kept: list[str] = []
    dropped: list[str] = []
    for group in spec.quick if quick else spec.full:
        if all(accepts_flag(spec.name, group[0], root) for root in roots):
            kept.extend(group)
        else:
            dropped.append(group[0])
    return kept, dropped


def own_args(spec: BenchSpec, root: Path) -> list[str]:
    """The spec's feature-off switches that this tree's benchmark declares."""
    return [a for group in spec.own if accepts_flag(spec.name, group[0], root) for a in group]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def run_before_after(ref: str, *, quick: bool, rounds: int = 1,
                     only: Optional[Sequence[str]] = None, timeout_s: Optional[float] = None,
                     keep: bool = False) -> int:
    started = time.monotonic()
    before_sha = git("rev-parse", "--short", f"{ref}^{{commit}}")
    after_sha = git("rev-parse", "--short", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    after_ref = after_sha + ("+changes" if dirty else "")
    timeout = timeout_s or (300.0 if quick else 900.0)
    specs = [s for s in SPECS if not only or s.name in only]
    work = Path(tempfile.mkdtemp(prefix="og-aims-before-"))
    old = work / f"tree-{before_sha}"
    print(machine_line())
    print(f"before: {ref} ({before_sha}) in {old}; after: this tree ({after_ref}); "
          f"{rounds} round(s){' (quick)' if quick else ''}; benchmarks "
          f"{', '.join(s.name for s in specs)}", flush=True)
    git("worktree", "add", "--detach", str(old), before_sha)
    trees = {"before": old, "after": REPO}
    labels = {"before": before_sha, "after": after_ref}
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    try:
        plans = []
        for spec in specs:
            skips = {side: skip_reason(root, spec.name, labels[side]) for side, root in trees.items()}
            runnable = [root for side, root in trees.items() if skips[side] is None]
            args, dropped = shared_args(spec, quick, runnable)
            if dropped:
                print(f"{spec.name}: not passing {' '.join(dropped)} (not declared by both trees' "
                      "benchmark)", flush=True)
            for side, why in skips.items():
                if why is not None:
                    print(f"{spec.name} [{side}]: {why}", flush=True)
                    results[side].append({"bench": spec.name, "status": why, "seconds": 0.0,
                                          "summary": None})
            plans.append((spec, args, skips))
        for rnd in range(rounds):
            for i, (spec, args, skips) in enumerate(plans):
                order = ("before", "after") if (rnd + i) % 2 == 0 else ("after", "before")
                for side in order:
                    if skips[side] is None:
                        results[side].append(run_one(
                            spec.name, False, timeout, root=trees[side],
                            args=[*args, *own_args(spec, trees[side])],
                            label=f"{side} {labels[side]} r{rnd + 1}"))
    finally:
        if keep:
            print(f"kept the worktree {old} (remove: git worktree remove --force {old})")
        else:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           check=False, capture_output=True)
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    print(f"\n===== aims before/after: {before_sha} -> {after_ref} "
          f"({seconds / 60:.1f} min wall, {rounds} round(s){', quick' if quick else ''}) =====")
    for side in ("before", "after"):
        for r in results[side]:
            load = (r.get("summary") or {}).get("machine", {}).get("load1", "-")
            print(f"  {side:<6} {r['bench']:<18} {r['status']:<28} {r['seconds']:>6.1f} s  "
                  f"load at its end {load}")
    chosen = aims.aims_of(s.name for s in specs)
    print(aims.format_before_after(aims.evaluate(results["before"], chosen),
                                   aims.evaluate(results["after"], chosen), before_sha))
    print(SUMMARY_PREFIX + json.dumps({
        "bench": aims.BEFORE_AFTER, "before_ref": before_sha, "after_ref": after_ref,
        "benches": [s.name for s in specs],
        "quick": quick, "rounds": rounds, "seconds": round(seconds, 1),
        "before": results["before"], "after": results["after"], "machine": machine()},
        sort_keys=True))
    return 0
