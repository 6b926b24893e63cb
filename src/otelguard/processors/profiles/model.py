"""One workload's profile: learning, the end of learning, enforcement (docs/profiles.md).

States: ``learning`` (candidates gather evidence) -> ``learned`` (the window closed, or no new
entry for a quarter of it after half of it; the candidates that pass the evidence bar are the
allowed entries, the rest are quarantined with a reason) or ``tainted`` (a rule detection at
WARNING or above hit the workload while it learned: nothing is allowed until a human decides)
-> ``approved`` (a human recorded the exact content's hash) -> enforced. Only approved profiles
whose spec still matches that hash raise deviations.

Poisoning defences here: an entry is allowed only when seen in ``min_buckets`` separate time
buckets and by ``min_replicas`` instances (or all instances of a workload that had fewer);
risky observations never become allowed; a profile takes at most ``max_new_per_bucket`` new
entries per bucket and ``max_entries`` per kind (after sibling collapse), and is marked
``partial`` with an ``overflow`` count beyond that.
"""

from __future__ import annotations

from typing import Optional

from otelguard.processors.profiles.config import Config
from otelguard.processors.profiles.matching import Allowed, group_of
from otelguard.processors.profiles.observe import KINDS, Observation

LEARNING, LEARNED, TAINTED, APPROVED = "learning", "learned", "tainted", "approved"
STATES = (LEARNING, LEARNED, TAINTED, APPROVED)
MAX_INSTANCES = 64  # instances remembered per profile (only their count matters beyond k)
MAX_TAINTS = 16
# The quarantine reason of entries that passed the evidence bar in a tainted window: listed so
# a reviewer has the candidates to promote (docs/profiles.md#states), never allowed by itself.
TAINTED_REASON = "passed the bar in a tainted window: a human decides"


class Entry:
    """Evidence for one candidate: sightings, first/last time, distinct instances and buckets
    (each kept only up to the bar it must reach)."""

    __slots__ = ("count", "first", "last", "instances", "buckets", "risky")

    def __init__(self, now: float, risky: str = "") -> None:
        self.count = 0
        self.first = now
        self.last = now
        self.instances: list[str] = []
        self.buckets: list[int] = []
        self.risky = risky

    def merge(self, other: Entry, max_instances: int, max_buckets: int) -> None:
        self.count += other.count
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        for i in other.instances:
            if i not in self.instances and len(self.instances) < max_instances:
                self.instances.append(i)
        for b in other.buckets:
            if b not in self.buckets and len(self.buckets) < max_buckets:
                self.buckets.append(b)
        self.risky = self.risky or other.risky


class Profile:
    """The live profile of one workload; the stage holds one per workload under its lock."""

    def __init__(self, workload: str, now: float, config: Config) -> None:
        self.workload = workload
        self.state = LEARNING
        self.revision = 0
        self.started = now
        self.ends = now + config.learn_seconds
        self.ended: Optional[float] = None
        self.last_new = now
        self.observations = 0
        self.instances: list[str] = []
        self.candidates: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        # (kind, collapsed entry) -> its candidates so far, until they collapse
        self.siblings: dict[tuple[str, str], list[str]] = {}
        self.spec: dict[str, list[str]] = {k: [] for k in KINDS}
        self.quarantine: list[tuple[str, str, Entry, str]] = []
        self.taints: list[tuple[str, float, str]] = []
        self.partial = False
        self.partial_reported = False
        self.overflow = 0
        self.approval: Optional[tuple[str, float, str]] = None  # by, at, content hash
        self.tampered = False
        self.bucket = 0
        self.bucket_new = 0
        self.dirty = True
        self._allowed: Optional[dict[str, Allowed]] = None

    # --- learning ----------------------------------------------------------------------------

    def learn(self, obs: Observation, instance: str, now: float, config: Config) -> str:
        """Record one observation; returns '' or the overflow reason when it was not kept."""
        self.observations += 1
        self.dirty = True
        if instance not in self.instances and len(self.instances) < MAX_INSTANCES:
            self.instances.append(instance)
        bucket = int((now - self.started) // config.bucket_seconds)
        cands = self.candidates[obs.kind]
        entry = cands.get(obs.value)
        if entry is None:
            group = group_of(obs.kind, obs.value)
            entry = cands.get(group) if group is not None else None
            if entry is None:
                overflow = self._admit(obs, group, bucket, now, config)
                if overflow:
                    return overflow
                entry = cands[obs.value] if obs.value in cands else cands[group or obs.value]
        entry.count += 1
        entry.last = now
        entry.risky = entry.risky or obs.risky
        if instance not in entry.instances and len(entry.instances) < config.min_replicas:
            entry.instances.append(instance)
        if bucket not in entry.buckets and len(entry.buckets) < config.min_buckets:
            entry.buckets.append(bucket)
        return ""

    def _admit(self, obs: Observation, group: Optional[str], bucket: int, now: float,
               config: Config) -> str:
        if bucket != self.bucket:
            self.bucket, self.bucket_new = bucket, 0
        cands = self.candidates[obs.kind]
        if self.bucket_new >= config.max_new_per_bucket:
            return self._overflow("bucket_growth")
        if len(cands) >= config.max_entries and not self._collapse_largest(obs.kind, config):
            return self._overflow("entries")
        self.bucket_new += 1
        self.last_new = now
        cands[obs.value] = Entry(now, obs.risky)
        if group is not None:
            members = self.siblings.setdefault((obs.kind, group), [])
            members.append(obs.value)
            if len(members) >= config.glob_siblings:
                self._collapse(obs.kind, group, config)
        return ""

    def _overflow(self, reason: str) -> str:
        self.overflow += 1
        self.partial = True
        return reason

    def _collapse(self, kind: str, group: str, config: Config) -> None:
        cands = self.candidates[kind]
        merged = cands.get(group)
        for value in self.siblings.pop((kind, group)):
            member = cands.pop(value, None)
            if member is None:
                continue
            if merged is None:
                merged = member
            else:
                merged.merge(member, config.min_replicas, config.min_buckets)
        if merged is not None:
            cands[group] = merged

    def _collapse_largest(self, kind: str, config: Config) -> bool:
        """Full: collapse the largest sibling group of ``kind`` (True if that made room)."""
        groups = [(len(m), g) for (k, g), m in self.siblings.items() if k == kind and len(m) > 1]
        if not groups:
            return False
        _, group = max(groups)
        self._collapse(kind, group, config)
        return len(self.candidates[kind]) < config.max_entries

    def taint(self, rule: str, now: float, instance: str) -> None:
        if self.state == LEARNING and len(self.taints) < MAX_TAINTS:
            self.taints.append((rule, now, instance))
            self.dirty = True

    def due(self, now: float, config: Config) -> bool:
        """The window closed, or nothing new for a quarter of it after half of it."""
        if self.state != LEARNING:
            return False
        if now >= self.ends:
            return True
        return (now - self.started >= config.learn_seconds / 2
                and now - self.last_new >= config.learn_seconds / 4)

    def finish(self, now: float, config: Config) -> None:
        """End learning: allowed entries into the spec, the rest quarantined with a reason."""
        need_instances = min(config.min_replicas, max(1, len(self.instances)))
        self.quarantine = []
        for kind, cands in self.candidates.items():
            allowed = []
            for value, entry in sorted(cands.items()):
                reason = entry.risky and f"risky: {entry.risky}"
                if not reason and len(entry.buckets) < config.min_buckets:
                    reason = f"seen in {len(entry.buckets)} of {config.min_buckets} buckets"
                if not reason and len(entry.instances) < need_instances:
                    reason = f"seen by {len(entry.instances)} of {need_instances} instances"
                if reason:
                    self.quarantine.append((kind, value, entry, reason))
                else:
                    allowed.append(value)
            self.spec[kind] = allowed
        if self.taints:
            self.state = TAINTED
            for kind, values in self.spec.items():  # a human decides what of it is normal
                cands = self.candidates[kind]
                self.quarantine.extend((kind, v, cands[v], TAINTED_REASON) for v in values)
            self.spec = {k: [] for k in KINDS}
        else:
            self.state = LEARNED
        self.ended = now
        self.revision += 1
        self._allowed = None
        self.dirty = True

    # --- enforcement -------------------------------------------------------------------------

    @property
    def enforcing(self) -> bool:
        return self.state == APPROVED and not self.tampered

    def allowed(self, kind: str) -> Allowed:
        if self._allowed is None:
            self._allowed = {k: Allowed(k, v) for k, v in self.spec.items()}
        return self._allowed[kind]

    def evidence_count(self, kind: str, value: str) -> int:
        entry = self.candidates[kind].get(value)
        return entry.count if entry is not None else 0

    def entries(self) -> int:
        return sum(len(v) for v in self.spec.values())

    def quarantined(self) -> int:
        if self.state == LEARNING:
            return 0
        return len(self.quarantine)
