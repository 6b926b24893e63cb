"""``otelguard risk list|show``: the risk stage's snapshots in the terminal (docs/risk.md#cli).

``show WORKLOAD`` reads ``<directory>/<workload>.json`` (the key, or a substring naming one
workload) and prints its vulnerabilities (critical and in use first), then its packages (in use
first; installed-only ones with ``--all``). ``--report FILE`` labels a vulnerability report
against the snapshot offline (no network), whether the stage knew the report or not. Exit
codes: 0, 1 (no such workload), 2 (no snapshot directory, unreadable report).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.processors.risk.processor import snapshot_name
from otelguard.risk.model import SEVERITY_RANK
from otelguard.risk.packages import labels
from otelguard.risk.packages.databases import Package
from otelguard.risk.packages.reports import ReportError, parse
from otelguard.risk.packages.usage import Use
from otelguard.transport.controls import visible


def _snapshots(directory: Path) -> dict[str, Path]:
    return {urllib.parse.unquote(p.name[:-5]): p for p in sorted(directory.glob("*.json"))}


def _find(directory: Path, workload: str) -> Optional[Path]:
    exact = directory / snapshot_name(workload)
    if exact.is_file():
        return exact
    hits = [p for w, p in _snapshots(directory).items() if workload in w]
    return hits[0] if len(hits) == 1 else None


def list_main(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"otelguard risk: no snapshot directory {directory}", file=sys.stderr)
        return 2
    for workload, path in _snapshots(directory).items():
        doc = json.loads(path.read_text())
        counts: dict[str, int] = {}
        for f in doc.get("findings", []):
            if f["kind"] != "vulnerability":  # packages by state; grants, edges by kind too
                key = f["state"] if f["kind"] == "package" else f"{f['kind']} {f['state']}"
                counts[key] = counts.get(key, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"{visible(workload)}  {text}")
    return 0


def _ns(iso: str) -> int:
    if not iso:
        return 0
    return int(datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1e9)


def states_of(doc: dict[str, Any]) -> dict[Package, tuple[str, Optional[Use]]]:
    """The package states a snapshot recorded (for labelling a report offline)."""
    out: dict[Package, tuple[str, Optional[Use]]] = {}
    for f in doc.get("findings", []):
        if f["kind"] != "package":
            continue
        a = f.get("attributes", {})
        pkg = Package(a.get(S.PACKAGE_ECOSYSTEM, ""), a.get(S.PACKAGE_NAME, ""),
                      a.get(S.PACKAGE_VERSION, ""))
        use = None if f["state"] == "installed-only" else Use(
            f["state"], _ns(f.get("first_seen", "")), _ns(f.get("last_seen", "")),
            list(f.get("evidence", [])), list(a.get(S.RISK_EVIDENCE_PATHS, [])))
        out[pkg] = (f["state"], use)
    return out


def show_main(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        print(f"otelguard risk: no snapshot directory {directory}", file=sys.stderr)
        return 2
    path = _find(directory, args.workload)
    if path is None:
        print(f"otelguard risk: no workload {args.workload!r} (or more than one) in "
              f"{directory}; `otelguard risk list` names them", file=sys.stderr)
        return 1
    doc = json.loads(path.read_text())
    findings = [f for f in doc.get("findings", []) if f["kind"] != "vulnerability"]
    vulns = [f for f in doc.get("findings", []) if f["kind"] == "vulnerability"]
    if args.report:
        try:
            text = Path(args.report).read_text(encoding="utf-8")
            parsed = parse(text, args.report)
        except (OSError, ReportError) as exc:
            print(f"otelguard risk: {exc}", file=sys.stderr)
            return 2
        from otelguard.processors.risk.records import to_json
        vulns = [to_json(f) for f in labels.label(parsed, states_of(doc), args.report)]
    if args.json:
        print(json.dumps({"workload": doc["workload"], "written": doc.get("written"),
                          "findings": findings + vulns}, indent=1))
        return 0
    print(f"workload {visible(doc['workload'])} (snapshot {doc.get('written', '?')})")
    if vulns:
        print("\nvulnerabilities (severity, then in use first):")
        for f in vulns:
            a = f.get("attributes", {})
            vex = f"  VEX {a[S.VULNERABILITY_VEX_STATE]}" if a.get(S.VULNERABILITY_VEX_STATE) \
                else ""
            print(f"  {f['severity']:<8} {f['state']:<14} {a.get(S.VULNERABILITY_ID, ''):<20} "
                  f"{visible(a.get(S.PACKAGE_NAME, ''))} {visible(a.get(S.PACKAGE_VERSION, ''))}"
                  f"{vex}")
    print("\npackages:")
    shown = 0
    for f in findings:
        if f["kind"] != "package" or (f["state"] == "installed-only" and not args.all):
            continue
        a = f.get("attributes", {})
        shown += 1
        print(f"  {f['state']:<14} {a.get(S.PACKAGE_ECOSYSTEM, ''):<6} "
              f"{visible(a.get(S.PACKAGE_NAME, ''))} {visible(a.get(S.PACKAGE_VERSION, ''))}  "
              f"first {f.get('first_seen') or '-'} last {f.get('last_seen') or '-'}")
        for p in a.get(S.RISK_EVIDENCE_PATHS, [])[:2]:
            print(f"      {visible(p)}")
        if f.get("evidence"):
            print(f"      evidence {', '.join(f['evidence'][:4])}")
    hidden = sum(1 for f in findings if f["state"] == "installed-only")
    if hidden and not args.all:
        print(f"  ({hidden} installed-only packages; --all lists them)")
    other = [f for f in findings if f["kind"] != "package"]
    if other:
        print("\nother findings:")
        for f in sorted(other, key=lambda f: SEVERITY_RANK.get(f["severity"], 9)):
            print(f"  {f['severity']:<8} {f['analyser']:<9} {f['kind']:<12} {f['state']:<14} "
                  f"{visible(f['summary'])}")
            if f.get("evidence"):
                print(f"      evidence {', '.join(visible(e) for e in f['evidence'][:4])}")
            if f.get("suggestion"):  # YAML: one printed line per line, each made safe
                print("      suggestion:")
                for line in str(f["suggestion"]).splitlines():
                    print(f"        {visible(line)}")
    return 0
