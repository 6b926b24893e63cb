"""The agent's aims (issues 15 and 16) as one table: each aim, its figure, figure/aim, met or not.

The thresholds live here and nowhere else: the benchmarks that print an aim line import them.
Each :class:`Aim` names the benchmark and the ``BENCH_SUMMARY`` key its figure comes from (a
dotted path into the summary's JSON; ``a+b`` sums two keys; the first of ``keys`` present wins,
so a tree from before a key existed can still be read where an older key says the same).
A figure that cannot be had is "not measured", with why: the benchmark did not run, failed,
printed no summary, or its summary lacks the key (an older tree).

``make bench`` (``bench/run_all.py``) prints the table at its end. Alone:

- ``python -m bench.aims --from FILE``: the table from saved output of ``make bench`` (any text
  with ``BENCH_SUMMARY`` lines), or the before/after table from a saved ``--before`` run;
- ``python -m bench.aims --before [REF]``: the same benchmarks in REF (a temporary git
  worktree; default :data:`PRE_ISSUE_16`) and in this tree, alternately, in one run
  (``bench/before_after.py``; ``--quick`` fits in ~15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

SUMMARY_PREFIX = "BENCH_SUMMARY "  # bench/common.py's (not imported: this module stays light)

# The commit before the first issue-16 commit: the ring readers (dbaeedb), the rules-derived
# kernel filter (edcf1c1) and the program cache (9aff862) all branch from it.
PRE_ISSUE_16 = "9bd7885"

# --- the thresholds (issue 16 unless said) ------------------------------------------------------
EVENTS_PER_S_PER_CORE = 250_000  # kernel -> OTLP bytes, drop-free
HOT_PATH_US = 2.0  # record -> OTLP bytes, one thread
OPEN_CLOSE_X = 1.15  # open/close loop vs no agent (wall)
EXEC_X = 1.10
CONNECT_X = 1.10
RSS_MB = 150.0  # steady
START_S = 5.0  # start to first event, warm node
IDLE_CPU = 0.01  # of a core
DETECTION_AVG_US = 5.0  # issue 15, stable + incubating rules
DETECTION_P99_US = 15.0


@dataclass(frozen=True)
class Aim:
    what: str
    issue: int
    bench: str
    keys: tuple[str, ...]  # first present wins; "a+b" sums
    limit: Optional[float]  # None: the figure is reported, there is no aim
    higher_is_better: bool = False
    unit: str = ""
    scale: float = 1.0  # display only (a fraction shown as %)
    also: tuple[tuple[str, str], ...] = ()  # (label, key) printed beside the figure
    when: tuple[tuple[str, Any], ...] = ()  # summary keys the run must have had
    null_means: str = "the key is null in the summary"
    note: str = ""
    refuse: Optional[Callable[[Mapping[str, Any]], Optional[str]]] = None  # why a run's figure
    # does not measure the aim (None: it does)

    def met(self, figure: float) -> bool:
        assert self.limit is not None
        return figure >= self.limit if self.higher_is_better else figure <= self.limit

    def limit_text(self) -> str:
        if self.limit is None:
            return "(reported)"
        return f"{'>=' if self.higher_is_better else '<='} {_num(self.limit * self.scale)}{self.unit}"


def _generator_reached_the_agent(summary: Mapping[str, Any]) -> Optional[str]:
    """agent_throughput's per-core figure is the agent's only if the generator's records reached
    it: a kernel filter or dedup that drops them leaves other processes' events per core."""
    best = next((s for s in summary.get("steps") or []
                 if isinstance(s, Mapping) and s.get("per_core") == summary.get("per_core")
                 and not s.get("kernel_drops") and not s.get("queue_drops")), None)
    if best is None:
        return None
    consumed, generated = float(best.get("consumed_per_s") or 0), float(best.get("generated_per_s") or 0)
    if generated and consumed < 0.9 * generated:
        return (f"the generator's records did not reach the agent at the best step ({consumed:,.0f}/s "
                f"consumed of {generated:,.0f}/s generated: filtered or deduplicated in the kernel)")
    return None


def _overhead(workload: str, what: str, limit: float) -> Aim:
    return Aim(what, 16, "agent_overhead", (f"workloads.{workload}.wall_ratio",), limit, unit="x",
               also=(("cpu x", f"workloads.{workload}.cpu_ratio"),
                     ("kdrop", f"workloads.{workload}.kernel_drops")))


AIMS: tuple[Aim, ...] = (
    Aim("kernel -> OTLP events/s per agent core, file opens", 16, "agent_throughput",
        ("per_core",), EVENTS_PER_S_PER_CORE, higher_is_better=True,
        also=(("drop-free max/s", "max_drop_free_per_s"),),
        null_means="no drop-free step: drops from the first rate offered",
        refuse=_generator_reached_the_agent),
    Aim("kernel -> OTLP events/s per agent core, agent-shaped mix", 16, "agent_throughput",
        ("workloads.mix.per_core",), EVENTS_PER_S_PER_CORE, higher_is_better=True,
        also=(("drop-free max/s", "workloads.mix.max_drop_free_per_s"),
              ("generator ceiling ops/s", "workloads.mix.generator_ceiling_per_s")),
        null_means="no drop-free step of the mix: drops from the first rate offered",
        note="exec, connect, DNS and opens (bench/syscall_loop.c mix)"),
    Aim("kernel -> OTLP offered rate where drops begin", 16, "agent_throughput",
        ("drops_begin_at",), None, unit="/s",
        null_means="no drops up to the highest rate offered", refuse=_generator_reached_the_agent),
    Aim("hot path, record -> OTLP bytes (one thread)", 16, "hot_path",
        ("us_per_event", "decode_us+encode_us"), HOT_PATH_US, unit=" us",
        also=(("events/s/core", "events_per_core"),)),
    Aim("hot path, native lane (file opens, known process)", 16, "hot_path",
        ("lane_us_per_event",), HOT_PATH_US, unit=" us",
        also=(("x Python path", "lane_vs_python"),),
        null_means="the native extension is not built (make setup with cargo)"),
    _overhead("open-filtered", "open/close loop, agent vs none (wall)", OPEN_CLOSE_X),
    _overhead("exec", "exec loop, agent vs none (wall)", EXEC_X),
    _overhead("connect", "connect loop, agent vs none (wall)", CONNECT_X),
    Aim("agent RSS, steady (warm, after --steady s)", 16, "agent_start",
        ("warm_rss_mb",), RSS_MB, unit=" MB",
        also=(("peak", "warm_peak_mb"), ("nothing flowing", "idle_scoped_rss_mb")),
        note="the shared machine's own activity flows in; no 200-container node here"),
    Aim("start to first event, warm node", 16, "agent_start", ("warm_first_event_s",), START_S,
        unit=" s", also=(("cpu s", "warm_first_event_cpu_s"), ("cold s", "cold_first_event_s"))),
    Aim("CPU at idle (scoped to an empty cgroup)", 16, "agent_start", ("idle_cpu_scoped",),
        IDLE_CPU, unit="%", scale=100.0, also=(("host-wide", "idle_cpu_host"),)),
    Aim("detection avg per record (stable+incub.)", 15, "detection_eval",
        ("generated_avg_us",), DETECTION_AVG_US, unit=" us",
        also=(("x pass-through", "vs_passthrough"),), when=(("rules", "stable+incubating"),)),
    Aim("detection p99 per record (stable+incub.)", 15, "detection_eval",
        ("generated_p99_us",), DETECTION_P99_US, unit=" us", when=(("rules", "stable+incubating"),)),
)

AIM_BENCHES: tuple[str, ...] = tuple(dict.fromkeys(a.bench for a in AIMS))


def aims_of(benches: Iterable[str]) -> tuple[Aim, ...]:
    """The aims whose figures come from these benchmarks, in table order."""
    wanted = set(benches)
    return tuple(a for a in AIMS if a.bench in wanted)


# --- reading summaries --------------------------------------------------------------------------

def lookup(summary: Mapping[str, Any], key: str) -> tuple[bool, Optional[float]]:
    """(present, value) of a dotted key; ``a+b`` is present when both are, None if either is."""
    total: Optional[float] = 0.0
    for part in key.split("+"):
        node: Any = summary
        for step in part.split("."):
            if not isinstance(node, Mapping) or step not in node:
                return False, None
            node = node[step]
        if node is None or total is None:
            total = None
        elif isinstance(node, bool) or not isinstance(node, (int, float)):
            return False, None
        else:
            total += float(node)
    return True, total


def parse_output(text: str) -> list[dict[str, Any]]:
    """Benchmark results (``{"bench", "status", "summary", ...}``) from ``make bench`` output.

    ``run_all``'s own last line, when there, is authoritative (it knows the failures); else each
    ``BENCH_SUMMARY`` line is one successful run. Unparsable summary lines are skipped."""
    loose: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.startswith(SUMMARY_PREFIX):
            continue
        try:
            doc = json.loads(line[len(SUMMARY_PREFIX):])
        except json.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("bench") == "run_all" and isinstance(doc.get("results"), list):
            return list(doc["results"])
        if isinstance(doc.get("bench"), str):
            loose.append({"bench": doc["bench"], "status": "ok", "summary": doc})
    return loose


# --- one table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AimRow:
    aim: Aim
    figure: Optional[float]
    key: Optional[str]  # the key the figure came from
    why: str  # when there is no figure: why not
    also: tuple[tuple[str, Optional[float]], ...] = ()

    @property
    def ratio(self) -> Optional[float]:
        if self.figure is None or not self.aim.limit:
            return None
        return self.figure / self.aim.limit

    @property
    def status(self) -> str:
        if self.figure is None:
            return "reported" if self.aim.limit is None and self.key else "not measured"
        if self.aim.limit is None:
            return "reported"
        return "met" if self.aim.met(self.figure) else "not met"

    def as_json(self) -> dict[str, Any]:
        return {"aim": self.aim.what, "issue": self.aim.issue, "bench": self.aim.bench,
                "key": self.key, "limit": self.aim.limit, "figure": self.figure,
                "ratio": None if self.ratio is None else round(self.ratio, 4),
                "status": self.status, "why": self.why, "also": dict(self.also)}


def evaluate(results: Iterable[Mapping[str, Any]],
             aims: Sequence[Aim] = AIMS) -> list[AimRow]:
    """One row per aim; several runs of one benchmark (rounds) give the median figure."""
    by_bench: dict[str, list[Mapping[str, Any]]] = {}
    for r in results:
        by_bench.setdefault(str(r.get("bench")), []).append(r)
    return [_row(aim, by_bench.get(aim.bench, [])) for aim in aims]


def _row(aim: Aim, runs: list[Mapping[str, Any]]) -> AimRow:
    if not runs:
        return AimRow(aim, None, None, f"{aim.bench} did not run")
    ok = [r for r in runs if r.get("status") == "ok"]
    if not ok:
        return AimRow(aim, None, None, f"{aim.bench} {runs[-1].get('status') or 'failed'}")
    summaries = [r["summary"] for r in ok if isinstance(r.get("summary"), Mapping)]
    if not summaries:
        return AimRow(aim, None, None, f"{aim.bench} printed no BENCH_SUMMARY")
    for name, want in aim.when:
        got = {str(s.get(name)) for s in summaries}
        if got != {str(want)}:
            return AimRow(aim, None, None, f"{aim.bench} ran with {name}={'/'.join(sorted(got))}, "
                                           f"the aim is for {name}={want}")
    if aim.refuse is not None:
        refusals = [why for s in summaries if (why := aim.refuse(s)) is not None]
        if refusals and len(refusals) == len(summaries):
            return AimRow(aim, None, None, f"{aim.bench}: {refusals[-1]}")
        summaries = [s for s in summaries if aim.refuse(s) is None]
    for key in aim.keys:
        found = [lookup(s, key) for s in summaries]
        if not all(present for present, _ in found):
            continue
        values = [v for _, v in found if v is not None]
        also = tuple((label, _median([v for s in summaries
                                      for present, v in [lookup(s, k)] if v is not None]))
                     for label, k in aim.also)
        if not values:
            return AimRow(aim, None, key, aim.null_means, also)
        return AimRow(aim, _median(values), key, "", also)
    return AimRow(aim, None, None, f"{aim.bench}'s summary has no {' or '.join(aim.keys)} "
                                   "(an older tree?)")


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _num(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _figure(row: AimRow) -> str:
    if row.figure is None:
        return "-"
    return f"{_num(row.figure * row.aim.scale)}{row.aim.unit}"


def _also(row: AimRow) -> str:
    return "; ".join(f"{label} {_num(v * row.aim.scale)}" for label, v in row.also if v is not None)


def _source(row: AimRow) -> str:
    return f"{row.aim.bench}:{row.key or '/'.join(row.aim.keys)}"


def format_table(rows: Sequence[AimRow]) -> str:
    """The aims table: aim, figure, aim, figure/aim, status, where from; then why/notes."""
    head = f"{'aim':<54} {'figure':>12} {'aim':>12} {'ratio':>8}  {'status':<13} from"
    lines = [head, "-" * len(head)]
    for row in rows:
        ratio = "-" if row.ratio is None else f"x{row.ratio:.2f}"
        lines.append(f"{row.aim.what + f' (#{row.aim.issue})':<54} {_figure(row):>12} "
                     f"{row.aim.limit_text():>12} {ratio:>8}  {row.status:<13} {_source(row)}")
        detail = [d for d in (row.why, _also(row), row.aim.note) if d]
        if detail:
            lines.append(f"{'':<4}{' | '.join(detail)}")
    met = sum(r.status == "met" for r in rows)
    scored = [r for r in rows if r.aim.limit is not None]
    lines.append(f"aims met: {met} of {len(scored)} "
                 f"({sum(r.status == 'not measured' for r in scored)} not measured)")
    return "\n".join(lines)


def format_before_after(before: Sequence[AimRow], after: Sequence[AimRow], ref: str) -> str:
    """before, after, after/before per aim (rows in the same order, from the same AIMS)."""
    head = (f"{'aim':<54} {'aim':>14} {'before ' + ref[:10]:>18} {'after':>18} "
            f"{'after/before':>12}  {'after':<13} from")
    lines = [head, "-" * len(head)]
    for b, a in zip(before, after):
        def cell(row: AimRow) -> str:
            if row.figure is None:
                return "not measured"
            return _figure(row) + ("" if row.ratio is None else f" (x{row.ratio:.2f})")

        change = "-" if a.figure is None or not b.figure else f"x{a.figure / b.figure:.3f}"
        lines.append(f"{a.aim.what + f' (#{a.aim.issue})':<54} {a.aim.limit_text():>14} "
                     f"{cell(b):>18} {cell(a):>18} {change:>12}  {a.status:<13} {_source(a)}")
        for label, row in (("before", b), ("after", a)):
            source = (f"from {row.key}" if row is b and row.key
                      and row.key != (a.key or a.aim.keys[0]) else "")
            detail = [d for d in (row.why, source, _also(row)) if d]
            if detail:
                lines.append(f"{'':<4}{label}: {' | '.join(detail)}")
    lines.append("(figure (xN) = figure/aim; after/before < 1 is better for an upper bound, > 1 "
                 "for a lower bound)")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="from_file", type=Path,
                     help="saved output of make bench / run_all (or of a --before run)")
    src.add_argument("--before", nargs="?", const=PRE_ISSUE_16, metavar="REF",
                     help=f"run the aims' benchmarks at REF (default {PRE_ISSUE_16}, before "
                          "issue 16) and in this tree, alternately, in one run")
    ap.add_argument("--quick", action="store_true",
                    help="with --before: the small counts (~15 min on 2 cores)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --before: before/after rounds (the order alternates; medians)")
    ap.add_argument("--only", nargs="+", choices=AIM_BENCHES,
                    help="with --before: only these benchmarks")
    ap.add_argument("--timeout", type=float, default=None,
                    help="with --before: seconds per benchmark run (default 900; quick 300)")
    ap.add_argument("--keep", action="store_true",
                    help="with --before: keep the temporary worktree")
    args = ap.parse_args(argv)
    if args.before is not None:
        from bench.before_after import run_before_after

        return run_before_after(args.before, quick=args.quick, rounds=args.rounds,
                                only=args.only, timeout_s=args.timeout, keep=args.keep)
    text = args.from_file.read_text(encoding="utf-8", errors="replace")
    saved = before_after_record(text)
    if saved is not None:
        chosen = aims_of(saved.get("benches") or AIM_BENCHES)
        print(format_before_after(evaluate(saved["before"], chosen),
                                  evaluate(saved["after"], chosen),
                                  str(saved.get("before_ref", "before"))))
        return 0
    results = parse_output(text)
    if not results:
        print(f"aims: no BENCH_SUMMARY line in {args.from_file}", file=sys.stderr)
        return 1
    print(format_table(evaluate(results)))
    return 0


BEFORE_AFTER = "aims_before_after"  # the bench name of a --before run's summary line


def before_after_record(text: str) -> Optional[dict[str, Any]]:
    """The last ``aims_before_after`` summary in ``text`` (a saved ``--before`` run), if any."""
    found: Optional[dict[str, Any]] = None
    for line in text.splitlines():
        if line.startswith(SUMMARY_PREFIX) and f'"{BEFORE_AFTER}"' in line:
            try:
                doc = json.loads(line[len(SUMMARY_PREFIX):])
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and doc.get("bench") == BEFORE_AFTER:
                found = doc
    return found


if __name__ == "__main__":
    sys.exit(main())
