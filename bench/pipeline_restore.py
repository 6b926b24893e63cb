"""What the pipeline's restore-on-failure guarantee costs in ``otelguard run``'s default pipeline.

The stages of ``otelguard run`` without ``--config`` (falco_rules, noise_control, incidents:
runner.run_specs) process the same agent-shaped batches (bench/exporter_build.py's mix, as
``OtlpBuilder.logs`` parses them, plus the spans those events made) three ways, interleaved
batch by batch in one run:

- ``no restore``: ``restore_on_failure=False`` (the baseline: no snapshot at all);
- ``copy per stage``: a ``CopyFrom`` snapshot before every stage that is not additive (what the
  pipeline did before stages could declare ``appends_only``, ``changes_only``, ``logs_only``);
- ``declared``: the pipeline as it is (processors/pipeline.py, processors/stage.py).

Each variant has its own stages (state is per pipeline) and gets its own parsed copy of each
batch. Prints thread CPU µs per record and the ratio of each variant to the baseline.
Run: ``.venv/bin/python -m bench.pipeline_restore`` (``--quick``: fewer batches).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import summary_line
from bench.exporter_build import NODE, T0, make_events
from otelguard.exporter.builder import OtlpBuilder
from otelguard.processors.pipeline import Pipeline
from otelguard.runner import run_specs


def _pipeline(restore: bool, declared: bool) -> Pipeline:
    p = Pipeline.from_specs(run_specs(None, None), restore_on_failure=restore)
    if not declared:
        for slot in p._slots:  # the pipeline before the declarations: a copy per stage
            slot.appends_only = slot.logs_only = False
            slot.changes_only = frozenset()
    p.start()
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="20 batches")
    args = ap.parse_args()
    if args.quick:
        args.batches = 20
    b = OtlpBuilder(NODE, clock=lambda: T0)
    events = make_events(args.batches * args.batch, process_part=True)
    logs = [b.logs_bytes(events[i:i + args.batch]) for i in range(0, len(events), args.batch)]
    b.spans.end_all(T0 + 10**12)
    finished = b.spans.take_finished()
    traces = [b.traces_bytes(finished[i:i + args.batch])
              for i in range(0, len(finished), args.batch)]
    variants = {"no restore": _pipeline(False, True), "copy per stage": _pipeline(True, False),
                "declared": _pipeline(True, True)}
    print(f"stages: {[n for n, _ in variants['declared'].stages()]}; {len(logs)} log batches of "
          f"{args.batch} records, {len(traces)} span batches ({len(finished)} spans)")
    cpu = dict.fromkeys(variants, 0.0)
    records = dict.fromkeys(variants, 0)
    from otelguard.transport.contract import as_logs, as_traces

    work: list[Any] = [(as_logs, d) for d in logs] + [(as_traces, d) for d in traces]
    for parse, data in work:
        for name, p in variants.items():
            batch = parse(data)
            t = time.thread_time()
            res = p.process(batch)
            cpu[name] += time.thread_time() - t
            records[name] += res.records_in
            assert not res.failed_stages, res.failed_stages
    base = cpu["no restore"] / records["no restore"]
    for name in variants:
        us = 1e6 * cpu[name] / records[name]
        print(f"  {name:15s} {us:8.2f} us/record  x{us / (1e6 * base):5.2f} of no restore")
    for p in variants.values():
        p.shutdown()
    print(summary_line("pipeline_restore", {
        name.replace(" ", "_") + "_us": round(1e6 * cpu[name] / records[name], 2)
        for name in variants}))


if __name__ == "__main__":
    main()
