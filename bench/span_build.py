"""How fast do finished spans become OTLP trace bytes? Three ways, in the same run.

- ``fields``: ``OtlpBuilder.traces_fields`` (opentelemetry-proto messages set field by field,
  then serialized): what the exporter did before spans were hand-encoded (the baseline);
- ``wire``: ``OtlpBuilder.traces_bytes`` (otelguard.exporter.wire: the agent's path now);
- ``wire+parse``: the same bytes parsed into messages (what ``otelguard run`` hands its pipeline).

The spans are the ones the exporter makes from bench/exporter_build.py's agent-shaped events
(process spans with the process's attributes, connection spans), ended as at shutdown; they are
encoded in requests of ``--batch`` spans, the variants interleaved round by round (``--rounds``),
CPU time of this process, the best round of each. Prints µs per span and each variant's ratio
to ``fields``. Run: ``.venv/bin/python -m bench.span_build`` (``--quick``: fewer events).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

from bench.common import summary_line
from bench.exporter_build import NODE, T0, make_events
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.spans import SpanData

Variant = Callable[[OtlpBuilder, Sequence[SpanData]], int]


def _fields(b: OtlpBuilder, spans: Sequence[SpanData]) -> int:
    req = b.traces_fields(spans)
    return len(req.SerializeToString()) if req is not None else 0


def _wire(b: OtlpBuilder, spans: Sequence[SpanData]) -> int:
    return len(b.traces_bytes(spans))


def _wire_parse(b: OtlpBuilder, spans: Sequence[SpanData]) -> int:
    req = b.traces(spans)
    return req.ByteSize() if req is not None else 0


VARIANTS: dict[str, Variant] = {"fields": _fields, "wire": _wire, "wire+parse": _wire_parse}


def finished_spans(events: int) -> list[SpanData]:
    b = OtlpBuilder(NODE, clock=lambda: T0)
    evs = make_events(events, process_part=True)
    for i in range(0, len(evs), 512):
        b.logs_bytes(evs[i:i + 512])
    b.spans.end_all(T0 + 10**12)
    return b.spans.take_finished()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=512, help="spans per request")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="10k events, 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.events, args.rounds = 10_000, 3
    spans = finished_spans(args.events)
    if not spans:
        raise SystemExit("no spans: the event mix opened none")
    kinds: dict[int, int] = {}
    for sd in spans:
        kinds[sd.kind] = kinds.get(sd.kind, 0) + 1
    attrs = sum(len(sd.attrs) for sd in spans) / len(spans)
    print(f"{len(spans)} spans from {args.events} events (kinds {kinds}), {attrs:.1f} attributes "
          f"per span, requests of {args.batch}, {args.rounds} interleaved rounds")
    sizes: dict[str, int] = {}
    best: dict[str, float] = {}
    b = OtlpBuilder(NODE, clock=lambda: T0)  # one builder: its caches warm as the agent's do
    for _ in range(args.rounds):
        for name, fn in VARIANTS.items():
            t = time.process_time()
            size = sum(fn(b, spans[i:i + args.batch]) for i in range(0, len(spans), args.batch))
            us = 1e6 * (time.process_time() - t) / len(spans)
            best[name] = min(best.get(name, us), us)
            sizes[name] = size
    if len(set(sizes.values())) != 1:
        raise SystemExit(f"the variants made different requests: bytes {sizes}")
    base = best["fields"]
    for name, us in best.items():
        print(f"  {name:12s} {us:8.2f} us/span  x{base / us:5.2f} faster than fields")
    print(summary_line("span_build", {
        "spans": len(spans), "fields_us": round(base, 2), "wire_us": round(best["wire"], 2),
        "wire_parse_us": round(best["wire+parse"], 2),
        "wire_speedup": round(base / best["wire"], 2)}))


if __name__ == "__main__":
    main()
