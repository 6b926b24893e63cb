"""``otelguard rules validate FILE...`` and ``otelguard rules list [--rules FILE]``.

validate prints every rule as loaded, skipped (with the exact unsupported field or source) or
disabled, then warnings and errors with file:line, and exits 1 when any error was found (the
files would stop the processor's startup). list prints what a processor would run.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.ruleset import ENGINE_VERSION, RuleSet


def _where(file: str, line: object) -> str:
    return f"{file}:{line}" if line else file


def report(rs: RuleSet, out: TextIO) -> None:
    for file, ver in rs.required_engine_versions:
        out.write(f"required_engine_version {ver} ({file}); implemented "
                  f"{'.'.join(map(str, ENGINE_VERSION))}\n")
    for file, name, ver in rs.required_plugins:
        out.write(f"required plugin {name} {ver} ({file}): accepted, its fields come from the "
                  "OTel Resource\n")
    for s in rs.statuses:
        tail = f": {s.reason}" if s.reason and s.state != "loaded" else ""
        out.write(f"{s.state.upper():9} {s.name} ({_where(s.file, s.line)}){tail}\n")
    for w in rs.warnings:
        out.write(f"{w}\n")
    for e in rs.errors:
        out.write(f"{e}\n")
    out.write(f"{rs.count('loaded')} loaded, {rs.count('skipped')} skipped, "
              f"{rs.count('disabled')} disabled, {len(rs.errors)} error(s), "
              f"{len(rs.warnings)} warning(s)\n")


def validate_main(args: argparse.Namespace) -> int:
    rs = load_rules(list(args.files))
    report(rs, sys.stdout)
    return 0 if rs.ok else 1


def list_main(args: argparse.Namespace) -> int:
    files = list(args.rules) if getattr(args, "rules", None) else [str(p) for p in
                                                                   DEFAULT_RULE_FILES]
    rs = load_rules(files)
    if not rs.ok:
        for e in rs.errors:
            sys.stderr.write(f"{e}\n")
        return 1
    for r in rs.rules:
        types = ",".join(sorted(r.event_types)) if r.event_types else "*"
        tactics = ",".join(r.mitre.tactic_names) or "-"
        techniques = ",".join(r.mitre.technique_ids) or "-"
        sys.stdout.write(f"{r.priority.name:13} {r.name} [{r.ruleset}] types={types} "
                         f"tactics={tactics} techniques={techniques}\n")
    sys.stdout.write(f"{len(rs.rules)} active rule(s) from {', '.join(files)}\n")
    return 0
