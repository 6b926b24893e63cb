"""Vulnerability reports (CycloneDX with VEX, grype, trivy) read into one shape and labelled
with package states, critical-and-in-use first (docs/risk.md#vulnerability-reports)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otelguard import semconv as S
from otelguard.risk.packages.databases import Package
from otelguard.risk.packages.labels import label
from otelguard.risk.packages.reports import ReportError, parse
from otelguard.risk.packages.usage import Use
from tests.support.risk_reports import Entry, cyclonedx, grype, trivy

ENTRIES = [
    Entry("CVE-1", "high", "deb", "libssl3", "3.0.11-1"),
    Entry("CVE-2", "critical", "deb", "libc6", "2.36-9"),
    Entry("CVE-3", "critical", "pypi", "PyYAML", "5.3"),  # PEP 503 names
    Entry("CVE-4", "critical", "deb", "bash", "5.2-2"),
    Entry("CVE-5", "critical", "deb", "zlib1g", "1:1.2.13", vex="not_affected"),
    Entry("CVE-6", "medium", "npm", "lodash", "4.17.20"),
]
STATES = {
    Package("deb", "libssl3", "3.0.11-1"): ("loaded", Use("loaded", 1, 2, ["u1"], ["/p"])),
    Package("deb", "libc6", "2.36-9"): ("loaded", Use("loaded", 1, 2, ["u2"], ["/q"])),
    Package("pypi", "pyyaml", "5.3"): ("installed-only", None),
    Package("deb", "bash", "5.2-2"): ("executed", Use("executed", 1, 2, ["u3"], ["/bin/bash"])),
    Package("deb", "zlib1g", "1:1.2.13"): ("loaded", Use("loaded", 1, 2, ["u4"], ["/z"])),
}


@pytest.mark.parametrize("write", [cyclonedx, grype, trivy])
def test_every_format_reads_the_same(tmp_path: Path, write: object) -> None:
    path = write(tmp_path / "r.json", ENTRIES)  # type: ignore[operator]
    vulns = parse(path.read_text(), str(path))
    assert {(v.id, v.severity, v.kind, v.name, v.version) for v in vulns} == {
        (e.id, e.severity, e.ecosystem, e.name, e.version) for e in ENTRIES}
    found = label(vulns, STATES, str(path))
    assert {dict(f.attributes)[S.VULNERABILITY_ID]: f.state for f in found} == {
        "CVE-1": "loaded", "CVE-2": "loaded", "CVE-3": "installed-only", "CVE-4": "executed",
        "CVE-5": "loaded", "CVE-6": "not-found"}


def test_order_is_severity_then_in_use_then_vex(tmp_path: Path) -> None:
    path = cyclonedx(tmp_path / "r.json", ENTRIES)
    found = label(parse(path.read_text()), STATES, str(path))
    assert [dict(f.attributes)[S.VULNERABILITY_ID] for f in found] == [
        "CVE-4", "CVE-2", "CVE-3", "CVE-5", "CVE-1", "CVE-6"]
    first = found[0]
    assert first.severity == "critical" and first.state == "executed"
    assert first.evidence == ("u3",) and "in use (executed)" in first.summary
    assert dict(found[3].attributes)[S.VULNERABILITY_VEX_STATE] == "not_affected"


def test_bad_reports_are_clear_errors() -> None:
    with pytest.raises(ReportError, match="not JSON"):
        parse("{", "x.json")
    with pytest.raises(ReportError, match="neither CycloneDX"):
        parse('{"spdxVersion": "SPDX-2.3"}', "x.json")
