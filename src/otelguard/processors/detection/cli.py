"""``otelguard rules validate FILE...`` and ``otelguard rules list [--rules FILE]``.

validate prints every rule as loaded, disabled, cannot-run (a Falco field this sensor does not
provide, named with the reason) or skipped (``skip-if-unknown-filter``, a non-syscall source),
then warnings and errors with file:line. Exit codes: 0 every rule loads and can run (disabled
ones included); 1 errors (an unknown field, a syntax error, ...: the processor would refuse to
start, as Falco would); 3 the files load, but some rules cannot run on this sensor or were
skipped (2 is argparse's usage error). list prints what a processor would run.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.readfilter import read_filter
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
        reason = f"cannot run on this sensor: {s.reason}" if s.state == "cannot-run" \
            else s.reason
        tail = f": {reason}" if reason and s.state != "loaded" else ""
        out.write(f"{s.state.upper():9} {s.name} ({_where(s.file, s.line)}){tail}\n")
    for w in rs.warnings:
        out.write(f"{w}\n")
    for e in rs.errors:
        out.write(f"{e}\n")
    out.write(f"{rs.count('loaded')} loaded, {rs.count('cannot-run')} cannot run on this sensor, "
              f"{rs.count('skipped')} skipped, {rs.count('disabled')} disabled, "
              f"{len(rs.errors)} error(s), {len(rs.warnings)} warning(s)\n")


EXIT_OK, EXIT_ERRORS, EXIT_NOT_ALL_RUN = 0, 1, 3


def validate_main(args: argparse.Namespace) -> int:
    rs = load_rules(list(args.files), append_output=getattr(args, "append_output", "") or "")
    report(rs, sys.stdout)
    if not rs.ok:
        return EXIT_ERRORS
    # what the sensor's kernel filter sends for these rules (sensor.read_rules), besides the
    # configured read_path_prefixes; unbounded reads are named, they do not change the exit code
    for line in read_filter(rs.rules).lines():
        sys.stdout.write(line + "\n")
    return EXIT_NOT_ALL_RUN if rs.count("cannot-run") or rs.count("skipped") else EXIT_OK


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
