"""Vulnerability report files in the three formats the packages analyser reads, written from
one list of entries, shaped as CycloneDX 1.5 (with a VEX analysis), grype ``-o json`` and trivy
``--format json`` write them (the fields those tools emit; everything else left out)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

_PURL_TYPE = {"deb": "deb/debian", "pypi": "pypi", "npm": "npm", "apk": "apk/alpine"}
_GRYPE_TYPE = {"deb": "deb", "pypi": "python", "npm": "npm", "apk": "apk"}
_TRIVY_TYPE = {"deb": ("debian", "os-pkgs"), "pypi": ("python-pkg", "lang-pkgs"),
               "npm": ("node-pkg", "lang-pkgs"), "apk": ("alpine", "os-pkgs")}


@dataclass(frozen=True)
class Entry:
    id: str
    severity: str  # lower case
    ecosystem: str  # deb, pypi, npm, apk
    name: str
    version: str
    vex: str = ""  # CycloneDX analysis.state

    def purl(self) -> str:
        return f"pkg:{_PURL_TYPE[self.ecosystem]}/{self.name}@{self.version}"


def cyclonedx(path: Path, entries: list[Entry]) -> Path:
    comps, vulns = {}, []
    for e in entries:
        comps[e.purl()] = {"type": "library", "bom-ref": e.purl(), "name": e.name,
                           "version": e.version, "purl": e.purl()}
        v = {"id": e.id, "ratings": [{"severity": e.severity, "method": "CVSSv31"}],
             "affects": [{"ref": e.purl()}]}
        if e.vex:
            v["analysis"] = {"state": e.vex, "justification": "code_not_reachable"}
        vulns.append(v)
    path.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
                                "components": list(comps.values()), "vulnerabilities": vulns}))
    return path


def grype(path: Path, entries: list[Entry]) -> Path:
    matches = [{"vulnerability": {"id": e.id, "severity": e.severity.capitalize(),
                                  "fix": {"versions": [], "state": "not-fixed"}},
                "artifact": {"name": e.name, "version": e.version,
                             "type": _GRYPE_TYPE[e.ecosystem], "purl": e.purl()}}
               for e in entries]
    path.write_text(json.dumps({"matches": matches, "source": {"type": "image"}}))
    return path


def trivy(path: Path, entries: list[Entry]) -> Path:
    results: dict[str, dict[str, object]] = {}
    for e in entries:
        typ, cls = _TRIVY_TYPE[e.ecosystem]
        r = results.setdefault(typ, {"Target": typ, "Class": cls, "Type": typ,
                                     "Vulnerabilities": []})
        r["Vulnerabilities"].append({  # type: ignore[attr-defined]
            "VulnerabilityID": e.id, "PkgName": e.name, "InstalledVersion": e.version,
            "Severity": e.severity.upper(), "PkgIdentifier": {"PURL": e.purl()}})
    path.write_text(json.dumps({"SchemaVersion": 2, "ArtifactName": "test",
                                "Results": list(results.values())}))
    return path
