"""Risk facts an incident's story cites (docs/incidents.md#risk-facts).

The ``risk`` stage's finding records (``otelguard.stream=risk``, docs/risk.md#records) pass
through the batch; when that stage runs before this one, :class:`RiskFacts` keeps the latest
record of each finding that can bear on an incident, per workload (bounded; the least recently
told workload is forgotten first, counted in ``otelguard_incident_risk_facts_dropped``):

- a ``vulnerability`` in a package in use (``executed`` or ``loaded``): it bears on a step whose
  executable is one of the package's used paths, or whose process tree (trace id) is one of the
  latest that used the package;
- an ``unused`` grant (capability, service-account token): it bears on a step that exercised
  it (``used CAP_X``; a read under the token's directory) and, not exercised but of medium
  severity or more (an added capability, the token; not the runtime's default capabilities),
  on the incident as a whole (it widens what the incident's process could do);
- a sensitive-reach ``edge``: it bears on a step that connected to its address and port.

:func:`bearing` turns them into :class:`RiskCitation` s, numbered ``R<n>`` in the order found
(stable across versions, kept in the journal with the incident); each is one story sentence
citing the steps it concerns and the risk record's ``log.record.uid``. Cost: nothing per raw
record; per risk record one attribute decode; per incident change a scan of its workload's
facts (at most ``MAX_PER_WORKLOAD``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from otelguard import semconv as S
from otelguard.processors.incidents import metrics
from otelguard.processors.incidents.evidence import RiskCitation, Step
from otelguard.processors.incidents.incident import Incident

BODY = "body"  # the risk record's body, kept beside its attributes
MAX_WORKLOADS = 4096  # workloads whose risk facts are kept
MAX_PER_WORKLOAD = 256  # risk facts kept per workload (a new one past it forgets the oldest)
MAX_CITED = 8  # risk sentences per incident
IN_USE = ("executed", "loaded")
WIDENING = ("critical", "high", "medium")  # unused grants told though not exercised
TOKEN_DIRS = ("/var/run/secrets/kubernetes.io/serviceaccount/",
              "/run/secrets/kubernetes.io/serviceaccount/")


class RiskFacts:
    """The latest bearing risk record per (workload, analyser, kind, subject)."""

    def __init__(self) -> None:
        self.by_workload: OrderedDict[str, OrderedDict[tuple[str, str, str], dict[str, Any]]] = \
            OrderedDict()

    def add(self, attrs: dict[str, Any]) -> str:
        """One risk record's attributes; its workload ("" when it cannot bear on a story)."""
        workload = str(attrs.get(S.RISK_WORKLOAD) or "")
        kind, state = attrs.get(S.RISK_KIND), attrs.get(S.RISK_STATE)
        key = (str(attrs.get(S.RISK_ANALYSER) or ""), str(kind), str(attrs.get(S.RISK_SUBJECT)))
        facts = self.by_workload.get(workload)
        bears = (kind == "vulnerability" and state in IN_USE) or \
            (kind in ("capability", "token") and state == "unused") or kind == "edge"
        if not bears:  # a later verdict (used, fixed) withdraws an earlier one
            if facts is not None:
                facts.pop(key, None)
            return ""
        if not workload or not attrs.get(S.LOG_RECORD_UID):
            return ""
        if facts is None:
            facts = self.by_workload[workload] = OrderedDict()
            while len(self.by_workload) > MAX_WORKLOADS:
                self.by_workload.popitem(last=False)
                metrics.risk_facts_dropped.labels("workloads_full").inc()
        else:
            self.by_workload.move_to_end(workload)
        facts.pop(key, None)
        facts[key] = attrs
        while len(facts) > MAX_PER_WORKLOAD:
            facts.popitem(last=False)
            metrics.risk_facts_dropped.labels("facts_full").inc()
        return workload

    def of(self, workload: str) -> list[dict[str, Any]]:
        facts = self.by_workload.get(workload)
        return list(facts.values()) if facts is not None else []


def _paths(attrs: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for p in attrs.get(S.RISK_EVIDENCE_PATHS) or []:
        out.update(part.strip() for part in str(p).split(" -> "))
    return out


def _ties(attrs: dict[str, Any], steps: list[Step]) -> tuple[str, list[int]]:
    """How a risk record bears on the steps (how, eids), ("", []) when it does not."""
    kind, subject = attrs.get(S.RISK_KIND), str(attrs.get(S.RISK_SUBJECT) or "")
    if kind == "vulnerability":
        paths = _paths(attrs)
        hit = [s.eid for s in steps if s.facts.get("exe") and str(s.facts["exe"]) in paths]
        if hit:
            return "executed" if attrs.get(S.RISK_STATE) == "executed" else "loaded", hit
        traces = set(attrs.get(S.RISK_EVIDENCE_TRACES) or [])
        hit = [s.eid for s in steps if s.trace_id and s.trace_id in traces]
        return ("loaded", hit) if hit else ("", [])
    if kind in ("capability", "token"):
        hit = [s.eid for s in steps if s.facts.get("capability") == subject] \
            if kind == "capability" else \
            [s.eid for s in steps if str(s.facts.get("file", "")).startswith(TOKEN_DIRS)]
        if hit:
            return "exercised", hit
        # not exercised: told when it widens the reach (an added capability, the token), not
        # for the runtime's default capabilities nobody asked for (low)
        return ("granted", []) if attrs.get(S.RISK_SEVERITY) in WIDENING else ("", [])
    if kind == "edge":
        addr, port = attrs.get(S.NETWORK_PEER_ADDRESS), attrs.get(S.NETWORK_PEER_PORT)
        hit = [s.eid for s in steps if addr and s.facts.get("peer") == addr and
               (not port or s.facts.get("port") == port)]
        return ("connected", hit) if hit else ("", [])
    return "", []


def bearing(inc: Incident, facts: RiskFacts) -> bool:
    """Add to ``inc.risks`` the risk facts of its workload that now bear on it, and refresh
    the steps of those already cited; True when its story changes."""
    records = facts.of(inc.workload)
    if not records:
        return False
    changed = False
    cited = {(c.kind, c.subject): c for c in inc.risks}
    for attrs in records:
        how, eids = _ties(attrs, inc.steps)
        if not how:
            continue
        kind, subject = str(attrs.get(S.RISK_KIND)), str(attrs.get(S.RISK_SUBJECT) or "")
        c = cited.get((kind, subject))
        if c is not None:
            if (c.how, c.steps) != (how, eids) and not (how == "granted" and c.steps):
                c.how, c.steps, changed = how, eids, True
            continue
        if len(inc.risks) >= MAX_CITED:
            break
        keep = (S.VULNERABILITY_ID, S.PACKAGE_ECOSYSTEM, S.PACKAGE_NAME, S.PACKAGE_VERSION,
                S.RISK_TARGET, S.RISK_TARGET_TIER, S.RISK_TARGET_REASON)
        c = RiskCitation(
            rid=len(inc.risks) + 1, uid=str(attrs[S.LOG_RECORD_UID]), kind=kind,
            subject=subject, state=str(attrs.get(S.RISK_STATE) or ""),
            severity=str(attrs.get(S.RISK_SEVERITY) or ""),
            summary=str(attrs.get(BODY) or ""), how=how, steps=eids,
            facts={k.rsplit(".", 1)[-1] if k != S.RISK_TARGET else "target": attrs[k]
                   for k in keep if attrs.get(k) not in (None, "")})
        inc.risks.append(c)
        cited[(kind, subject)] = c
        changed = True
    return changed
