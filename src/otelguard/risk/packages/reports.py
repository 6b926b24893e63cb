"""Vulnerability reports as files (docs/risk.md#vulnerability-reports): CycloneDX JSON (an SBOM
with ``vulnerabilities``, or a VEX document), grype's JSON (``-o json``) and trivy's JSON
(``--format json``). Read only; nothing is fetched. Each becomes a list of :class:`Vuln`: one
vulnerability of one package version, with the package's purl when the report gives one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from otelguard.risk.model import SEVERITIES


class ReportError(ValueError):
    pass


@dataclass(frozen=True)
class Vuln:
    id: str
    severity: str  # a word of SEVERITIES
    name: str  # package name as the report spells it
    version: str
    kind: str  # deb, apk, rpm, pypi, npm, maven ("" when unknown)
    purl: str = ""
    vex_state: str = ""  # CycloneDX analysis.state: not_affected, exploitable, ...
    fixed: str = ""


def _severity(word: Any) -> str:
    w = str(word or "").lower()
    return w if w in SEVERITIES else ("none" if w in ("negligible", "info") else "unknown")


# grype artifact types and trivy result types -> our ecosystems
_KINDS = {"deb": "deb", "debian": "deb", "ubuntu": "deb", "apk": "apk", "alpine": "apk",
          "rpm": "rpm", "redhat": "rpm", "centos": "rpm", "rocky": "rpm", "alma": "rpm",
          "amazon": "rpm", "fedora": "rpm", "oracle": "rpm", "suse": "rpm",
          "python": "pypi", "python-pkg": "pypi", "pip": "pypi", "pipenv": "pypi",
          "poetry": "pypi", "pypi": "pypi", "npm": "npm", "node-pkg": "npm", "yarn": "npm",
          "pnpm": "npm", "java-archive": "maven", "jar": "maven", "pom": "maven",
          "gradle": "maven", "maven": "maven"}


def kind_of_purl(purl: str) -> str:
    if not purl.startswith("pkg:"):
        return ""
    return _KINDS.get(purl[4:].split("/", 1)[0].lower(), "")


def parse(text: str, source: str = "") -> list[Vuln]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{source}: expected a JSON object")
    if doc.get("bomFormat") == "CycloneDX" or "vulnerabilities" in doc and "components" in doc:
        return _cyclonedx(doc)
    if "matches" in doc:
        return _grype(doc)
    if "Results" in doc or "ArtifactName" in doc:
        return _trivy(doc)
    raise ReportError(f"{source}: neither CycloneDX (bomFormat), grype (matches) nor trivy "
                      "(Results) JSON")


def _cyclonedx(doc: dict[str, Any]) -> list[Vuln]:
    comps: dict[str, dict[str, Any]] = {}

    def walk(items: Any) -> None:
        for c in items or []:
            if isinstance(c, dict):
                if c.get("bom-ref"):
                    comps[str(c["bom-ref"])] = c
                walk(c.get("components"))
    walk(doc.get("components"))
    out: list[Vuln] = []
    for v in doc.get("vulnerabilities") or []:
        sev = "unknown"
        ratings = [r for r in v.get("ratings") or [] if isinstance(r, dict)]
        ranked = sorted((_severity(r.get("severity")) for r in ratings),
                        key=SEVERITIES.index)
        if ranked:
            sev = ranked[0]
        state = str((v.get("analysis") or {}).get("state") or "")
        for a in v.get("affects") or []:
            ref = str(a.get("ref") or "")
            comp = comps.get(ref, {})
            purl = str(comp.get("purl") or (ref if ref.startswith("pkg:") else ""))
            name, version = str(comp.get("name") or ""), str(comp.get("version") or "")
            if purl and not name:
                name, version = _purl_name_version(purl)
            out.append(Vuln(str(v.get("id") or ""), sev, name, version, kind_of_purl(purl),
                            purl, state))
    return out


def _purl_name_version(purl: str) -> tuple[str, str]:
    body = purl.split("?", 1)[0].split("#", 1)[0]
    path, _, version = body.partition("@")
    return path.rsplit("/", 1)[-1], version


def _grype(doc: dict[str, Any]) -> list[Vuln]:
    out: list[Vuln] = []
    for m in doc.get("matches") or []:
        v, art = m.get("vulnerability") or {}, m.get("artifact") or {}
        fix = v.get("fix") or {}
        purl = str(art.get("purl") or "")
        out.append(Vuln(str(v.get("id") or ""), _severity(v.get("severity")),
                        str(art.get("name") or ""), str(art.get("version") or ""),
                        kind_of_purl(purl) or _KINDS.get(str(art.get("type") or ""), ""),
                        purl, "", ",".join(fix.get("versions") or [])))
    return out


def _trivy(doc: dict[str, Any]) -> list[Vuln]:
    out: list[Vuln] = []
    for r in doc.get("Results") or []:
        kind = _KINDS.get(str(r.get("Type") or "").lower(), "")
        for v in r.get("Vulnerabilities") or []:
            ident = v.get("PkgIdentifier") or {}
            purl = str(ident.get("PURL") or "")
            out.append(Vuln(str(v.get("VulnerabilityID") or ""), _severity(v.get("Severity")),
                            str(v.get("PkgName") or ""), str(v.get("InstalledVersion") or ""),
                            kind_of_purl(purl) or kind, purl, "",
                            str(v.get("FixedVersion") or "")))
    return out
