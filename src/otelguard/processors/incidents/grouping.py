"""Which incident a detection belongs to (docs/incidents.md#grouping).

A detection joins an open incident of the same workload when it comes from the same process
tree (its trace id is one of the incident's) or from a causally linked one: its process is a
detected process or a child of one (pids are learned from the detections and from the fork and
exec records of their children, across trace boundaries), or one of its ancestors is. An
incident stays open while related detections keep coming: ``idle_seconds`` after its last one
it closes. Anything else opens a new incident, so unrelated detections on the same node stay
apart. Repeats of one step fold into it; a detection uid seen before (a retried request) is not
counted again.

No OTLP here: the stage hands in plain values. Cost: a few dict lookups per detection; raw
records cost one dict lookup by trace id each (:meth:`Grouper.event`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Optional

from otelguard import semconv as S
from otelguard.processors.incidents.config import Config
from otelguard.processors.incidents.evidence import Place, Step, step_of
from otelguard.processors.incidents.incident import Incident, incident_id

MAX_PIDS = 1024  # linked processes per incident
MAX_SEEN_UIDS = 65_536  # detection uids remembered against retries


class Grouper:
    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.incidents: dict[str, Incident] = {}
        self.by_trace: dict[bytes, Incident] = {}
        self.by_pid: dict[tuple[str, int], Incident] = {}
        self.instances: dict[str, int] = {}  # instance -> open incidents there
        self.pending: dict[bytes, int] = {}  # raw events per trace before any detection
        self.seen: OrderedDict[str, None] = OrderedDict()

    # --- raw events ------------------------------------------------------------------------

    def event(self, trace: bytes) -> Optional[Incident]:
        """Count one raw record of process trace ``trace``; its incident, if any."""
        inc = self.by_trace.get(trace)
        if inc is not None:
            inc.events += 1
            return inc
        pending = self.pending
        pending[trace] = pending.get(trace, 0) + 1
        if len(pending) > self.config.max_traces:
            del pending[next(iter(pending))]  # the oldest trace first seen
        return None

    def child(self, instance: str, pid: int, ppid: int, trace: bytes) -> bool:
        """A fork or exec of ``pid``: linked to an incident when its parent is (True)."""
        inc = self.by_pid.get((instance, ppid))
        if inc is None or (instance, pid) in self.by_pid:
            return False
        self._link(inc, instance, pid, trace)
        return True

    # --- detections ------------------------------------------------------------------------

    def detection(self, workload: str, instance: str, resource: dict[str, Any],
                  attrs: dict[str, Any], trigger: Optional[dict[str, Any]], time_ns: int,
                  trace: bytes, span: bytes, severity: int, severity_text: str,
                  count: int) -> tuple[Optional[Incident], list[Incident]]:
        """Fold one detection record in; returns its incident (None: a retry already
        counted) and the incidents closed early to make room."""
        uid = str(attrs.get(S.LOG_RECORD_UID) or "")
        if uid:
            if uid in self.seen:
                return None, []
            self.seen[uid] = None
            if len(self.seen) > MAX_SEEN_UIDS:
                self.seen.popitem(last=False)
        facts = trigger or {}
        pid = int(attrs.get(S.PROCESS_PID) or facts.get(S.PROCESS_PID) or 0)
        now = self.clock()
        inc = self._find(workload, instance, trace, pid, facts, attrs, now)
        evicted: list[Incident] = []
        if inc is None:
            evicted = self._make_room()
            inc = Incident(incident_id(uid), workload, instance, Place.of(resource),
                           {k: v for k, v in resource.items()}, now, now)
            self.incidents[inc.id] = inc
            self.instances[instance] = self.instances.get(instance, 0) + 1
        step = step_of(attrs, trigger, len(inc.steps) + 1, time_ns, trace.hex(), span.hex(),
                       severity, severity_text)
        step.count = count
        same = inc.step_for(step.fold_key())
        if same is not None:
            same.count += count
            same.last_ns = max(same.last_ns, time_ns)
            same.time_ns = min(same.time_ns, time_ns)
        elif len(inc.steps) < self.config.max_steps:
            inc.steps.append(step)
        else:
            inc.untold += count
        inc.detections += count
        inc.last_activity = now
        inc.dirty = True
        self._link(inc, instance, pid, trace)
        return inc, evicted

    def _find(self, workload: str, instance: str, trace: bytes, pid: int,
              trigger: dict[str, Any], attrs: dict[str, Any], now: float) -> Optional[Incident]:
        candidates = [self.by_trace.get(trace)] if trace else []
        if pid:
            candidates.append(self.by_pid.get((instance, pid)))
        ancestors = trigger.get(S.PROCESS_ANCESTOR_PIDS) or attrs.get(S.PROCESS_ANCESTOR_PIDS)
        parents = list(ancestors) if isinstance(ancestors, list) else []
        ppid = trigger.get(S.PROCESS_PARENT_PID) or attrs.get(S.PROCESS_PARENT_PID)
        if ppid and ppid not in parents:
            parents.insert(0, ppid)
        candidates += [self.by_pid.get((instance, int(a))) for a in parents if a]
        for inc in candidates:
            if inc is not None and inc.workload == workload and \
                    now - inc.last_activity <= self.config.idle_seconds:
                return inc
        return None

    def _link(self, inc: Incident, instance: str, pid: int, trace: bytes) -> None:
        if trace and trace not in self.by_trace:
            self.by_trace[trace] = inc
            inc.traces.append(trace.hex())
            inc.events += self.pending.pop(trace, 0)
        if pid and (instance, pid) not in self.by_pid and len(inc.pids) < MAX_PIDS:
            self.by_pid[(instance, pid)] = inc
            inc.pids.append(pid)

    # --- closing -----------------------------------------------------------------------------

    def expired(self, now: float) -> list[Incident]:
        """Close the incidents idle for ``idle_seconds``."""
        idle = [i for i in self.incidents.values()
                if now - i.last_activity > self.config.idle_seconds]
        for inc in idle:
            self.close(inc)
        return idle

    def _make_room(self) -> list[Incident]:
        if len(self.incidents) < self.config.max_open:
            return []
        oldest = min(self.incidents.values(), key=lambda i: i.last_activity)
        self.close(oldest)
        return [oldest]

    def close(self, inc: Incident) -> None:
        inc.status = "closed"
        inc.dirty = True
        self.incidents.pop(inc.id, None)
        for t in inc.traces:
            self.by_trace.pop(bytes.fromhex(t), None)
        for p in inc.pids:
            self.by_pid.pop((inc.instance, p), None)
        left = self.instances.get(inc.instance, 1) - 1
        if left > 0:
            self.instances[inc.instance] = left
        else:
            self.instances.pop(inc.instance, None)

    def restore(self, inc: Incident) -> None:
        """An open incident read back from the journal."""
        self.incidents[inc.id] = inc
        self.instances[inc.instance] = self.instances.get(inc.instance, 0) + 1
        for t in inc.traces:
            self.by_trace[bytes.fromhex(t)] = inc
        for p in inc.pids:
            self.by_pid[(inc.instance, p)] = inc
        for s in inc.steps:
            if s.uid:
                self.seen[s.uid] = None
