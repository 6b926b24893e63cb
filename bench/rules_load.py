"""Reading the default Falco rules at start: libyaml's C parser against PyYAML's pure one.

``otelguard run`` reads and compiles the default rules files (``load_rules``: YAML, then the
collector and the condition compiler) before its first event, and parses its config with the
same reader (otelguard.config.reader). This times ``load_rules(DEFAULT_RULE_FILES)`` and the
YAML parse alone with each parser the reader has here (``libyaml`` when PyYAML was built with
it, ``python`` always), each in a fresh interpreter (as a start does it: no warm caches, the
imports done first and not counted), alternating in one run, and prints the medians and their
ratio.

Run: ``.venv/bin/python -m bench.rules_load [--reps 5]``; ends with a ``BENCH_SUMMARY {json}``
line. No root needed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from bench.common import machine_line, median, summary_line


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _one(parser: str) -> dict[str, float]:
    """One fresh process's first build, then the parse alone (files already read)."""
    from otelguard.config import reader
    from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
    from otelguard.processors.detection.loader import load_rules

    reader.PARSER = parser  # benchmarks only: the reader's choice of parser
    texts = [p.read_text() for p in DEFAULT_RULE_FILES]
    build = _seconds(lambda: load_rules(DEFAULT_RULE_FILES).raise_if_errors())
    parse = _seconds(lambda: [reader.load_yaml(t, text_scalars=True) for t in texts])
    return {"build_s": build, "parse_s": parse}


def _spawn(parser: str) -> dict[str, float]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{root / 'src'}:{root}")
    out = subprocess.run([sys.executable, "-m", "bench.rules_load", "--one", parser], env=env,
                         capture_output=True, text=True, check=True, cwd=root)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: Optional[list[str]] = None) -> int:
    from otelguard.config import reader
    from otelguard.processors.detection.engine import DEFAULT_RULE_FILES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="fresh processes per parser")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # the child's side
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one)))
        return 0
    print(machine_line())
    parsers = sorted(reader.LOADERS, reverse=True)  # python first: the baseline
    runs: dict[str, list[dict[str, float]]] = {p: [] for p in parsers}
    for _ in range(args.reps):  # alternating, so load drifts hit both alike
        for parser in parsers:
            runs[parser].append(_spawn(parser))
    figures: dict[str, Any] = {"reps": args.reps, "files": [p.name for p in DEFAULT_RULE_FILES]}
    base = parsers[0]
    base_b = median([r["build_s"] for r in runs[base]])
    base_y = median([r["parse_s"] for r in runs[base]])
    for parser in parsers:
        b = median([r["build_s"] for r in runs[parser]])
        y = median([r["parse_s"] for r in runs[parser]])
        figures[parser] = {"build_s": round(b, 3), "parse_s": round(y, 3)}
        ratio = f" (x{b / base_b:.2f} build, x{y / base_y:.2f} parse)" if parser != base else ""
        print(f"{parser:8s} load_rules {b:6.3f} s, YAML parse alone {y:6.3f} s{ratio}")
    print(summary_line("rules_load", figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
