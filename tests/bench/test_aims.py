"""The aims table (bench/aims.py): met / not met / not measured and figure/aim from recorded
summaries, the parser of run_all's output, and that every aim's key is printed by its benchmark
(the cheap benchmarks run for real with tiny counts; the agent ones on the real kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import aims
from bench.aims import AIMS, Aim, evaluate, lookup, parse_output
from bench.before_after import SPECS, own_args, shared_args, skip_reason
from bench.run_all import accepts_flag
from tests.support.prerequisites import require_root

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = aims.SUMMARY_PREFIX


def nest(key: str, value: Any) -> dict[str, Any]:
    """The summary a benchmark would print with ``value`` at the dotted ``key``."""
    doc: dict[str, Any] = {}
    for part in key.split("+"):
        node = doc
        steps = part.split(".")
        for step in steps[:-1]:
            node = node.setdefault(step, {})
        node[steps[-1]] = value
    return doc


def ok_run(aim: Aim, value: Any, **extra: Any) -> dict[str, Any]:
    summary = {"bench": aim.bench, **dict(aim.when), **nest(aim.keys[0], value), **extra}
    return {"bench": aim.bench, "status": "ok", "seconds": 1.0, "summary": summary}


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def run_bench(*args: str, timeout: float = 300) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=bench_env(),
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


SCORED = [a for a in AIMS if a.limit is not None]


@pytest.mark.parametrize("aim", SCORED, ids=lambda a: a.what)
@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_an_aim_is_met_on_its_side_of_the_limit(aim: Aim, factor: float) -> None:
    assert aim.limit is not None
    [row] = evaluate([ok_run(aim, aim.limit * factor)], [aim])
    assert row.figure == pytest.approx(aim.limit * factor)
    assert row.ratio == pytest.approx(factor)
    assert row.key == aim.keys[0]
    better = factor >= 1 if aim.higher_is_better else factor <= 1
    assert row.status == ("met" if better else "not met")
    assert row.why == ""


def test_every_aim_of_both_issues_is_in_the_table() -> None:
    rows = evaluate([ok_run(a, (a.limit or 1) * 2) for a in AIMS])
    assert [r.aim for r in rows] == list(AIMS)
    assert {a.issue for a in SCORED} == {15, 16}
    # 250k/s (opens, mix), 2 us (Python path, native lane), x1.15, x1.10 x2, 150 MB, 5 s, 1 %,
    # 5 us, 15 us
    assert len(SCORED) == 12
    table = aims.format_table(rows)
    for a in AIMS:
        assert f"{a.bench}:{a.keys[0]}" in table
    assert f"aims met: {sum(r.status == 'met' for r in rows)} of {len(SCORED)}" in table


def test_not_measured_says_why() -> None:
    aim = next(a for a in SCORED if a.bench == "agent_start")
    cases: dict[str, list[dict[str, Any]]] = {
        "did not run": [],
        "failed (exit 1)": [{"bench": aim.bench, "status": "failed (exit 1)", "summary": None}],
        "timeout": [{"bench": aim.bench, "status": "timeout", "summary": None}],
        "printed no BENCH_SUMMARY": [{"bench": aim.bench, "status": "ok", "summary": None}],
        "(an older tree?)": [{"bench": aim.bench, "status": "ok",
                              "summary": {"bench": aim.bench, "other": 1}}],
    }
    for why, runs in cases.items():
        [row] = evaluate(runs, [aim])
        assert row.figure is None and row.ratio is None
        assert row.status == "not measured"
        assert why in row.why, (why, row.why)
        assert why in aims.format_table([row])


def test_a_run_with_other_rules_does_not_count_for_the_detection_aim() -> None:
    aim = next(a for a in AIMS if a.when)
    assert aim.limit is not None
    run = ok_run(aim, aim.limit / 2)
    run["summary"]["rules"] = "stable"
    [row] = evaluate([run], [aim])
    assert row.status == "not measured" and "rules=stable" in row.why


def test_null_figures_say_what_null_means() -> None:
    per_core, drops = (next(a for a in AIMS if a.keys[0] == k)
                       for k in ("per_core", "drops_begin_at"))
    rows = evaluate([ok_run(per_core, None, drops_begin_at=None)], [per_core, drops])
    assert rows[0].status == "not measured" and rows[0].why == per_core.null_means
    assert rows[1].status == "reported" and rows[1].why == drops.null_means
    [row] = evaluate([ok_run(drops, 32768.0)], [drops])
    assert row.status == "reported" and row.figure == 32768.0 and row.ratio is None


@pytest.mark.parametrize("consumed_share", [0.05, 1.0])
def test_a_throughput_run_whose_generator_never_reached_the_agent_is_refused(
        consumed_share: float) -> None:
    aim = next(a for a in AIMS if a.keys[0] == "per_core")
    step = {"target_per_s": 5000.0, "generated_per_s": 5000.0, "per_core": 40_000,
            "consumed_per_s": 5000.0 * consumed_share, "kernel_drops": 0, "queue_drops": 0}
    [row] = evaluate([ok_run(aim, 40_000, steps=[step])], [aim])
    if consumed_share < 0.9:
        assert row.status == "not measured" and "did not reach the agent" in row.why
    else:
        assert row.figure == 40_000 and row.status == "not met"


def test_an_older_summary_is_read_through_the_fallback_key() -> None:
    aim = next(a for a in AIMS if a.bench == "hot_path")
    fallback = aim.keys[1]
    summary = {"bench": "hot_path", **{k: 3.0 + i for i, k in enumerate(fallback.split("+"))}}
    [row] = evaluate([{"bench": "hot_path", "status": "ok", "summary": summary}], [aim])
    assert row.key == fallback
    assert row.figure == pytest.approx(sum(3.0 + i for i in range(len(fallback.split("+")))))
    assert row.status == "not met"


def test_rounds_give_the_median_and_a_failed_round_is_left_out() -> None:
    aim = SCORED[2]
    assert aim.limit is not None
    runs = [ok_run(aim, aim.limit * f) for f in (0.5, 3.0, 0.9)]
    runs.append({"bench": aim.bench, "status": "timeout", "summary": None})
    [row] = evaluate(runs, [aim])
    assert row.figure == pytest.approx(aim.limit * 0.9)


def test_lookup_reads_dotted_and_summed_keys() -> None:
    doc = {"a": {"b-c": {"d": 2}}, "x": 1.5, "y": None, "s": "text", "t": True}
    assert lookup(doc, "a.b-c.d") == (True, 2.0)
    assert lookup(doc, "x+a.b-c.d") == (True, 3.5)
    assert lookup(doc, "y") == (True, None)
    assert lookup(doc, "x+y") == (True, None)
    assert lookup(doc, "a.missing") == (False, None)
    assert lookup(doc, "s")[0] is False and lookup(doc, "t")[0] is False


def test_parse_output_reads_loose_summaries_and_prefers_run_alls_line() -> None:
    aim = SCORED[0]
    loose = "\n".join([
        "some benchmark output",
        SUMMARY + '{"bench": "hot_path", "us_per_event": 12.5}',
        SUMMARY + "{not json",
        "  " + SUMMARY + '{"bench": "indented", "x": 1}',
        SUMMARY + '{"bench": "detection_eval", "generated_avg_us": 9.0}',
    ])
    got = parse_output(loose)
    assert [(r["bench"], r["status"]) for r in got] == [("hot_path", "ok"), ("detection_eval", "ok")]
    assert got[0]["summary"]["us_per_event"] == 12.5
    failed = {"bench": aim.bench, "status": "failed (exit 1)", "seconds": 3.0, "summary": None}
    text = loose + "\n" + SUMMARY + json.dumps({"bench": "run_all", "results": [failed]})
    assert parse_output(text) == [failed]


def test_before_after_runs_every_aims_benchmark_with_flags_it_declares() -> None:
    assert {s.name for s in SPECS} == set(aims.AIM_BENCHES)
    for spec in SPECS:
        for group in spec.quick + spec.full + spec.own:
            assert accepts_flag(spec.name, group[0], ROOT), (spec.name, group[0])


def test_before_after_passes_only_flags_both_trees_declare(tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "bench").mkdir(parents=True)
    spec = next(s for s in SPECS if len(s.quick) > 1)
    kept_flag, *dropped_flags = [g[0] for g in spec.quick]
    (old / "bench" / f"{spec.name}.py").write_text(f'"{kept_flag}"\nsummary_line(\n')
    args, dropped = shared_args(spec, True, [old, ROOT])
    assert args[0] == kept_flag and dropped == dropped_flags
    assert skip_reason(old, spec.name, "old") is None
    (old / "bench" / f"{spec.name}.py").write_text(f'"{kept_flag}"\nprint("no summary")\n')
    assert "prints no BENCH_SUMMARY" in (skip_reason(old, spec.name, "old") or "")
    assert "does not exist" in (skip_reason(old, "absent", "old") or "")


def test_a_feature_off_switch_goes_to_each_tree_that_declares_it(tmp_path: Path) -> None:
    """agent_throughput's --dedup-ms 0 reaches this tree even when the older one lacks it (the
    older one predates the dedup): otherwise the generator's repeated open never reaches this
    tree's agent and its throughput is not measured."""
    old = tmp_path / "old"
    (old / "bench").mkdir(parents=True)
    spec = next(s for s in SPECS if s.name == "agent_throughput")
    (old / "bench" / "agent_throughput.py").write_text('"--quick"\n"--no-profile"\n')
    assert own_args(spec, old) == []
    assert own_args(spec, ROOT) == ["--dedup-ms", "0", "--workloads", "opens,mix"]


# --- for real: the benchmarks print the keys the aims read ----------------------------------------

CHEAP = {"hot_path": ("--events", "2000", "--repeat", "1"),
         "detection_eval": ("--records", "1000", "--repeats", "1")}


@pytest.mark.parametrize("bench", sorted(CHEAP))
def test_a_cheap_benchmark_prints_its_aims_keys(bench: str) -> None:
    out = run_bench(f"bench.{bench}", *CHEAP[bench])
    mine = [a for a in AIMS if a.bench == bench]
    assert mine
    for row in evaluate(parse_output(out), mine):
        assert row.key == row.aim.keys[0], row  # the current key, not an older fallback
        assert row.figure is not None and row.figure > 0, row


AGENT = {"agent_throughput": ("--quick", "--no-profile", "--rates", "2000", "--step-s", "1",
                              "--workloads", "opens,mix"),
         "agent_overhead": ("--quick", "--no-bpf-stats", "--only", "open-filtered", "exec",
                            "connect"),
         "agent_start": ("--reps", "1", "--steady", "3", "--idle", "3")}


@pytest.mark.kernel
@pytest.mark.parametrize("bench", sorted(AGENT))
def test_an_agent_benchmark_prints_its_aims_keys(bench: str) -> None:
    require_root()
    out = run_bench(f"bench.{bench}", *AGENT[bench], timeout=580)
    [result] = [r for r in parse_output(out) if r["bench"] == bench]
    mine = [a for a in AIMS if a.bench == bench]
    assert mine
    for aim in mine:
        for key in (aim.keys[0], *(k for _, k in aim.also)):
            present, _ = lookup(result["summary"], key)
            assert present, (bench, key)
    for row in evaluate([result], mine):  # read (a refused run says why, never "no key")
        assert "summary has no" not in row.why and "did not run" not in row.why, row


def test_run_all_prints_the_aims_table_and_aims_from_reprints_it(tmp_path: Path) -> None:
    out = run_bench("bench.run_all", "--only", "hot_path", "--quick")
    assert "===== aims" in out
    results = parse_output(out)
    assert [(r["bench"], r["status"]) for r in results] == [("hot_path", "ok")]
    rows = evaluate(results)
    table = aims.format_table(rows)
    assert table in out
    hot = next(r for r in rows if r.aim.bench == "hot_path")
    assert hot.figure is not None and hot.status in ("met", "not met")
    assert all(r.status == "not measured" and "did not run" in r.why
               for r in rows if r.aim.bench != "hot_path")
    saved = tmp_path / "bench.out"
    saved.write_text(out)
    assert run_bench("bench.aims", "--from", str(saved)).strip() == table


def test_before_after_in_one_run_against_the_pre_issue_16_tree(tmp_path: Path) -> None:
    out = run_bench("bench.aims", "--before", "--quick", "--only", "hot_path", "detection_eval",
                    timeout=500)
    record = aims.before_after_record(out)
    assert record is not None and record["before_ref"].startswith(aims.PRE_ISSUE_16[:7])
    chosen = aims.aims_of(record["benches"])
    assert {a.bench for a in chosen} == {"hot_path", "detection_eval"}
    before, after = evaluate(record["before"], chosen), evaluate(record["after"], chosen)
    hot_b, hot_a = (next(r for r in rows if r.aim.bench == "hot_path") for rows in (before, after))
    assert hot_b.key == "decode_us+encode_us" and hot_b.figure  # that tree had no us_per_event
    assert hot_a.key == "us_per_event" and hot_a.figure
    det_b = next(r for r in before if r.aim.bench == "detection_eval")
    assert det_b.status == "not measured" and "prints no BENCH_SUMMARY" in det_b.why
    assert next(r for r in after if r.aim.bench == "detection_eval").figure
    assert f"x{hot_a.figure / hot_b.figure:.3f}" in out
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                               text=True, check=True).stdout
    assert "og-aims-before-" not in worktrees
    saved = tmp_path / "ba.out"
    saved.write_text(out)
    reprint = run_bench("bench.aims", "--from", str(saved))
    assert aims.format_before_after(before, after, record["before_ref"]) in reprint
