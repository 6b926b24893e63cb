"""One incident: its steps, where it happens, what links records to it, and its severity.

Severity is the highest step's, raised one level for each further ATT&CK tactic its steps
cover, up to CRITICAL: steps from several tactics (execution -> credential access -> command
and control) are a chain, worse than any one of them (docs/incidents.md#severity). Techniques
are listed in ATT&CK tactic order, then by first sighting.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from otelguard.processors.incidents.evidence import Place, RiskCitation, Step
from otelguard.processors.incidents.references import TACTIC_RANK

# Falco priority words by OTel severity_number, low to high (docs/architecture.md#detection-records)
LADDER = ((5, "DEBUG"), (9, "INFORMATIONAL"), (10, "NOTICE"), (13, "WARNING"), (17, "ERROR"),
          (21, "CRITICAL"))
_NAMESPACE = uuid.UUID("7b4f3a52-8f0e-4c1e-9d6a-2b1c0e5f9a31")  # incident ids and record uids


def incident_id(first_uid: str) -> str:
    """Deterministic from the first detection's uid: a retried request opens the same one."""
    return str(uuid.uuid5(_NAMESPACE, "incident/" + first_uid)) if first_uid \
        else str(uuid.uuid4())


def record_uid(iid: str, version: int) -> str:
    """The ``log.record.uid`` of one version: a re-emitted version is recognisably the same."""
    return str(uuid.uuid5(_NAMESPACE, f"{iid}/{version}"))


def level_of(severity: int) -> int:
    return max((i for i, (n, _) in enumerate(LADDER) if severity >= n), default=0)


@dataclass
class Narration:
    """What the narrator made of one version's facts."""

    result: str  # llm | rejected | template (the model failed: timeout, error, malformed)
    detail: str = ""  # why not llm
    title: str = ""
    bullets: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    for_steps: int = 0  # steps the narrated facts had


@dataclass
class Incident:
    id: str
    workload: str
    instance: str
    place: Place
    resource: dict[str, Any]  # the first detection's Resource attributes (for the record)
    opened: float  # stage clock
    last_activity: float  # stage clock of the last detection folded in
    steps: list[Step] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)  # detected processes and their children
    traces: list[str] = field(default_factory=list)  # hex trace ids of its process trees
    events: int = 0  # raw events of those trees
    detections: int = 0  # detection records folded in (counts of throttle stops included)
    untold: int = 0  # distinct detections past max_steps: counted, not told
    version: int = 0  # the last version emitted
    told: str = ""  # fingerprint of that version's record (records.fingerprint)
    status: str = "open"
    narration: Optional[Narration] = None
    risks: list[RiskCitation] = field(default_factory=list)  # R<n>: risk facts told (risks.py)
    dirty: bool = True  # changed since the last version emitted
    # restored from the journal: emit the last version again if the restored state still tells
    # it word for word (same fingerprint), else a new version
    reemit: bool = False

    def step_for(self, key: tuple[Any, ...]) -> Optional[Step]:
        for s in self.steps:
            if s.fold_key() == key:
                return s
        return None

    @property
    def first_ns(self) -> int:
        return min((s.time_ns for s in self.steps), default=0)

    @property
    def last_ns(self) -> int:
        return max((s.last_ns for s in self.steps), default=0)

    def ordered_steps(self) -> list[Step]:
        return sorted(self.steps, key=lambda s: (s.time_ns, s.eid))

    def tactics(self) -> list[str]:
        seen = {t for s in self.steps for t in s.tactics}
        return sorted(seen, key=lambda t: TACTIC_RANK.get(t, len(TACTIC_RANK)))

    def techniques(self) -> list[str]:
        """ATT&CK ids in tactic order (a step's technique takes its step's first tactic),
        then by first sighting."""
        best: dict[str, tuple[int, int]] = {}
        for s in self.ordered_steps():
            rank = min((TACTIC_RANK.get(t, len(TACTIC_RANK)) for t in s.tactics),
                       default=len(TACTIC_RANK))
            for t in s.techniques:
                if t not in best:
                    best[t] = (rank, s.time_ns)
        return sorted(best, key=lambda t: best[t])

    def severity(self) -> tuple[int, str, str]:
        """(severity_number, priority word, why it was raised or '')."""
        top = max((s.severity for s in self.steps), default=13)
        level = level_of(top)
        tactics = self.tactics()
        raised = min(len(LADDER) - 1, level + max(0, len(tactics) - 1))
        number, word = LADDER[raised]
        if raised > level:
            why = (f"raised from {LADDER[level][1]}: steps chain {len(tactics)} ATT&CK tactics "
                   f"({' -> '.join(tactics)})")
            return number, word, why
        return max(number, top), word, ""

    def evidence(self) -> list[str]:
        """What the story cites: step uids in E order, then their distinct trace ids, then the
        risk records' uids in R order."""
        uids = [s.uid for s in sorted(self.steps, key=lambda s: s.eid) if s.uid]
        traces = list(dict.fromkeys(s.trace_id for s in self.steps if s.trace_id))
        return uids + traces + [r.uid for r in self.risks]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("dirty")
        d.pop("reemit")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Incident:
        d = dict(d)
        d["place"] = Place(**d["place"])
        d["steps"] = [Step.from_json(s) for s in d["steps"]]
        d["risks"] = [RiskCitation.from_json(r) for r in d.get("risks", [])]
        if d.get("narration") is not None:
            d["narration"] = Narration(**d["narration"])
        inc = cls(**d)
        inc.dirty = False
        inc.reemit = True
        return inc
