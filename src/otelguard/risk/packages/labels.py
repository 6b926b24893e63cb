"""A vulnerability report's findings labelled with what the workload does with each package
(docs/risk.md#vulnerability-reports).

Each :class:`~reports.Vuln` is matched to a package of the workload by ecosystem, name (PyPI
names normalised as PEP 503 says) and version (exact; a report of another build of the image
matches nothing), and becomes a ``vulnerability`` finding whose state is the package's:
``executed``, ``loaded``, ``installed-only``, or ``not-found`` (no such package version in the
workload's roots: the report describes something else). :func:`order` sorts them as people
triage: severity first, then in use before installed-only before not found; a VEX
``not_affected``/``false_positive``/``resolved`` analysis sorts after everything of its severity.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.risk.model import SEVERITY_RANK, Finding
from otelguard.risk.packages.config import ReportSource
from otelguard.risk.packages.databases import Package, normalise_pypi
from otelguard.risk.packages.reports import ReportError, Vuln, parse

NOT_FOUND = "not-found"
_STATE_RANK = {"executed": 0, "loaded": 1, "installed-only": 2, NOT_FOUND: 3}
_DISMISSED = {"not_affected", "false_positive", "resolved", "resolved_with_pedigree"}


def applies(source: ReportSource, workload: str) -> bool:
    return any(fnmatch.fnmatchcase(workload, p) for p in source.workloads)


class ReportCache:
    """Parsed reports by path, re-read when the file's mtime or size changes."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int], list[Vuln]]] = {}

    def get(self, path: str) -> Optional[list[Vuln]]:
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
            hit = self._cache.get(path)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            with open(path, encoding="utf-8") as f:
                vulns = parse(f.read(), path)
        except (OSError, ReportError):
            return None
        self._cache[path] = (stamp, vulns)
        return vulns


def _name(kind: str, name: str) -> str:
    return normalise_pypi(name) if kind == "pypi" else name


def label(vulns: list[Vuln], states: dict[Package, tuple[str, Any]],
          source: str) -> list[Finding]:
    index: dict[tuple[str, str, str], tuple[Package, str, Any]] = {}
    for p, (st, u) in states.items():
        index[(p.ecosystem, _name(p.ecosystem, p.name), p.version)] = (p, st, u)
    found: list[Finding] = []
    for v in vulns:
        hit = index.get((v.kind, _name(v.kind, v.name), v.version))
        if hit is None and not v.kind:  # a report without types: any ecosystem of that name
            hit = next((h for k, h in index.items() if k[1:] == (v.name, v.version)), None)
        pkg: Optional[Package] = hit[0] if hit is not None else None
        state, use = (hit[1], hit[2]) if hit is not None else (NOT_FOUND, None)
        subject = f"{v.id}|{pkg.key if pkg else (v.kind or '?') + ':' + v.name}"
        attrs: list[tuple[str, Any]] = [
            (S.VULNERABILITY_ID, v.id), (S.PACKAGE_NAME, v.name),
            (S.PACKAGE_VERSION, v.version), (S.PACKAGE_ECOSYSTEM, v.kind),
            (S.VULNERABILITY_SOURCE, source)]
        if v.purl or pkg is not None:
            attrs.append((S.PACKAGE_PURL, v.purl or (pkg.purl() if pkg else "")))
        if v.vex_state:
            attrs.append((S.VULNERABILITY_VEX_STATE, v.vex_state))
        if use is not None and use.paths:
            attrs.append((S.RISK_EVIDENCE_PATHS, list(use.paths)))
        if use is not None and use.traces:
            attrs.append((S.RISK_EVIDENCE_TRACES, list(use.traces)))
        how = {"executed": "in use (executed)", "loaded": "in use (loaded)",
               "installed-only": "installed, never used", NOT_FOUND: "not found in the "
               "workload's root"}[state]
        found.append(Finding(
            analyser="packages", kind="vulnerability", subject=subject, state=state,
            severity=v.severity,
            summary=f"{v.id} ({v.severity}) in {v.kind or '?'} {v.name} {v.version}: {how}"
            + (f"; VEX: {v.vex_state}" if v.vex_state else ""),
            first_seen_ns=use.first_ns if use else 0, last_seen_ns=use.last_ns if use else 0,
            evidence=tuple(use.evidence) if use else (), attributes=tuple(attrs)))
    return order(found)


def order(found: list[Finding]) -> list[Finding]:
    def key(f: Finding) -> tuple[int, int, int, str]:
        vex = dict(f.attributes).get(S.VULNERABILITY_VEX_STATE, "")
        return (SEVERITY_RANK.get(f.severity, 9), 1 if vex in _DISMISSED else 0,
                _STATE_RANK.get(f.state, 9), f.subject)
    return sorted(found, key=key)
