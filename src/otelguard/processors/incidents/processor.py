"""The ``incidents`` stage: folds detections into incidents and writes one record per incident
version (docs/incidents.md; docs/architecture.md#incidents).

Runs last, after ``noise_control``: every detection it cites is one that left the pipeline, so
each evidence uid resolves downstream; throttle-stop records add their exact counts to the step
they repeat. ``process`` reads the detection Resources of a batch (and, for the detections'
triggers in the same batch, their raw records' attributes: command lines, parents, ancestors)
and counts raw records per process trace; it keeps the risk stage's finding records that may
bear on a story (risks.py). Incident records leave through :meth:`drain` (the
flush timer, ~1 s), one per incident that changed since, so a burst of detections makes one
version, not one per batch. The optional narrator (narrator.py) runs on its own thread; its
answers are applied at the next drain. ``process`` never waits for it.

Crash safety, as noise_control's (processors/journal.py): with the service's ``state_dir`` every
change of an open incident is written to ``<state_dir>/<stage name>.journal``; a request whose
detections changed an incident is answered only after that is fsynced, and a flush persists the
new versions before it forwards them. A restart reads the open incidents back and re-emits their
last version (same uid, word for word: the journal keeps each version's fingerprint); an incident
whose journaled state says more than its last version (a detection acknowledged before the flush
that would have told it) gets a new version instead. What a SIGKILL loses: raw-event counts and child-process links learnt
since the last persist (at most one flush interval), and the memory of which folded detection
uids (beyond each step's first) were already counted, so a caller's retry of such a request
after the crash counts them again. Without ``state_dir`` a crash loses every open incident: the
versions already sent stay downstream, and detections after the restart open new incidents.

Cost per raw record: one trace-id dict lookup (plus an attribute scan for fork and exec records
on instances with an open incident); per detection ~20-40 µs (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.incidents import metrics
from otelguard.processors.incidents.config import Config
from otelguard.processors.incidents.grouping import Grouper
from otelguard.processors.incidents.incident import Incident, Narration
from otelguard.processors.incidents.narrator import Narrator
from otelguard.processors.incidents.records import fingerprint, incident_record
from otelguard.processors.incidents.risks import BODY, RiskFacts, bearing
from otelguard.processors.incidents.templates import story
from otelguard.processors.journal import Journal, JournalWrite, pack, replay, unpack
from otelguard.processors.profiles.workload import of_host_record, of_resource
from otelguard.processors.stage import Batch

TYPE_NAME = "incidents"
_LINK_EVENTS = frozenset({S.EV_PROCESS_FORK, S.EV_PROCESS_EXEC})

log = logging.getLogger(__name__)


class IncidentsStage:
    """The stage; ``clock`` (wall-clock seconds: idle windows outlive restarts) is injectable."""

    type_name = TYPE_NAME
    appends_only = True  # process() only reads; incident records leave through drain()
    logs_only = True

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()  # process()/drain() against readers (summary, tests)
        self.grouper = Grouper(config, clock)
        self.risk_facts = RiskFacts()  # the risk stage's records that may bear on a story
        self._closed: list[Incident] = []
        self._narrator: Optional[Narrator] = (
            Narrator(config.story.llm) if config.story.llm is not None else None)
        self._journal: Optional[Journal] = None
        self._changed: dict[str, Incident] = {}  # since the last journal write
        self._forget: list[str] = []
        self.state_version = 0
        self.emitted: list[tuple[str, int, str, str, str]] = []  # (id, version, status, sev, title)

    # --- lifecycle and journal -----------------------------------------------------------------

    def start(self) -> None:
        if self._narrator is not None:
            self._narrator.start()

    def shutdown(self) -> None:
        if self._narrator is not None:
            self._narrator.stop()
        if self._journal is not None:
            self._journal.close(self.journal_write())
            self._journal = None

    def open_state(self, path: Path, compact_bytes: int) -> None:
        """Read the open incidents back from ``path`` (docs/architecture.md#failure-handling)."""
        self._journal = Journal(path, compact_bytes)
        found: dict[str, Incident] = {}

        def apply(payload: bytes) -> None:
            head, _ = unpack(payload)
            for d in head.get("u", []):
                found[d["id"]] = Incident.from_json(d)
            for iid in head.get("c", []):
                found.pop(iid, None)

        replay(self._journal, TYPE_NAME, apply)
        for inc in found.values():
            self.grouper.restore(inc)
        if found:
            log.info("incidents: %d open incident(s) read back from %s", len(found), path)

    def journal_write(self) -> Optional[JournalWrite]:
        if self._journal is None or not (self._changed or self._forget):
            return None
        changed, forget = self._changed, self._forget
        self._changed, self._forget = {}, []
        return self._journal.write_for(
            lambda: pack({"u": [i.to_json() for i in changed.values()], "c": forget}, b""),
            lambda: pack({"u": [i.to_json() for i in self.grouper.incidents.values()],
                          "c": []}, b""))

    def settle(self, drains: int) -> None:
        pass  # an emitted version stays in the journal as the incident's state

    # --- the batch -----------------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        if not isinstance(batch, ExportLogsServiceRequest):
            return batch
        with self._lock:
            detections = []
            g = self.grouper
            for rl in batch.resource_logs:
                stream = ""
                for kv in rl.resource.attributes:
                    if kv.key == S.STREAM:
                        stream = kv.value.string_value
                        break
                if stream == S.STREAM_DETECTION:
                    detections.append(rl)
                    continue
                if stream == S.STREAM_INCIDENT:
                    continue
                if stream == S.STREAM_RISK:
                    self._risks(rl)
                    continue
                instance = None
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        trace = rec.trace_id
                        if not trace:
                            continue
                        g.event(trace)
                        if g.instances and rec.event_name in _LINK_EVENTS:
                            if instance is None:
                                instance = of_resource(rl.resource.attributes).instance
                            if instance in g.instances:
                                self._link(rec, instance, trace)
            if detections:
                self._detections(batch, detections)
        return batch

    def _link(self, rec: Any, instance: str, trace: bytes) -> None:
        pid = ppid = 0
        for kv in rec.attributes:
            if kv.key == S.PROCESS_PID:
                pid = kv.value.int_value
            elif kv.key == S.PROCESS_PARENT_PID:
                ppid = kv.value.int_value
        if pid and ppid and self.grouper.child(instance, pid, ppid, trace):
            inc = self.grouper.by_pid[(instance, pid)]
            self._changed[inc.id] = inc

    def _detections(self, batch: ExportLogsServiceRequest, rls: list[Any]) -> None:
        wanted: set[str] = set()
        found = []
        for rl in rls:
            res = attrs_dict(rl.resource.attributes)
            origin = of_resource(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    if rec.event_name != S.EV_DETECTION:
                        continue
                    attrs = attrs_dict(rec.attributes)
                    throttle = attrs.get(S.NOISE_THROTTLE)
                    if throttle == S.NOISE_THROTTLE_START or \
                            (throttle is None and attrs.get(S.NOISE_KEY)):
                        continue  # a throttle start repeats a step; key exhaustion is ours
                    trigger = attrs.get(S.TRIGGER_RECORD_UID)
                    if isinstance(trigger, str) and trigger:
                        wanted.add(trigger)
                    found.append((res, origin, rec, attrs))
        triggers = trigger_records(batch, wanted) if wanted else {}
        for res, origin, rec, attrs in sorted(found, key=lambda f: f[2].time_unix_nano):
            trig = triggers.get(str(attrs.get(S.TRIGGER_RECORD_UID) or ""))
            facts = trig or attrs
            workload = origin.workload or of_host_record(
                origin.host, str(facts.get(S.PROCESS_LINUX_CGROUP) or ""),
                str(facts.get(S.PROCESS_EXECUTABLE_PATH) or ""))
            count = attrs.get(S.DETECTION_COUNT)
            n = count if isinstance(count, int) and count > 0 else 1
            inc, evicted = self.grouper.detection(
                workload, origin.instance, res, attrs, trig,
                rec.time_unix_nano or rec.observed_time_unix_nano or time.time_ns(),
                rec.trace_id, rec.span_id, rec.severity_number, rec.severity_text, n)
            for old in evicted:
                self._closed.append(old)
                self._forget.append(old.id)
            if inc is not None:
                bearing(inc, self.risk_facts)
                self._changed[inc.id] = inc
                self.state_version += 1

    def _risks(self, rl: Any) -> None:
        """Risk finding records (the risk stage runs before this one): kept per workload, and
        told by the open incidents of that workload they now bear on (docs/incidents.md#risk-facts)."""
        told: set[str] = set()
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                if rec.event_name != S.EV_RISK_FINDING:
                    continue
                attrs = attrs_dict(rec.attributes)
                attrs[BODY] = rec.body.string_value
                workload = self.risk_facts.add(attrs)
                if workload:
                    told.add(workload)
        if not told:
            return
        for inc in self.grouper.incidents.values():
            if inc.workload in told and bearing(inc, self.risk_facts):
                inc.dirty = True
                self._changed[inc.id] = inc
                self.state_version += 1

    # --- releasing versions ----------------------------------------------------------------------

    def drain(self, final: bool) -> list[Batch]:
        """One record per incident changed since the last drain (closed ones included)."""
        with self._lock:
            if self._narrator is not None:
                self._apply(self._narrator.results())
            closed = self._closed + ([] if final else self.grouper.expired(self._clock()))
            self._closed = []
            out = ExportLogsServiceRequest()
            for inc in closed:
                self._forget.append(inc.id)
                self._changed.pop(inc.id, None)
            for inc in [*self.grouper.incidents.values(), *closed]:
                if not (inc.dirty or inc.reemit):
                    continue
                reason = "reemitted"
                if not inc.dirty:
                    told = story(inc)
                    record = incident_record(inc, told, self.config.links)
                    # the journal may hold more than that version said (a detection
                    # acknowledged, or events and child links persisted, before the crash)
                    inc.dirty = fingerprint(record) != inc.told
                if inc.dirty:
                    inc.version += 1
                    reason = "opened" if inc.version == 1 else (
                        "closed" if inc.status == "closed" else "changed")
                    told = story(inc)
                    record = incident_record(inc, told, self.config.links)
                    inc.told = fingerprint(record)
                    if inc.status == "open":
                        self._changed[inc.id] = inc
                inc.dirty = inc.reemit = False
                out.resource_logs.append(record)
                metrics.records.labels(reason).inc()
                self.emitted.append((inc.id, inc.version, inc.status, inc.severity()[1],
                                     told.title))
                if self._narrator is not None and inc.status == "open" and (
                        inc.narration is None or inc.narration.for_steps != len(inc.steps)):
                    self._narrator.submit(inc)
            metrics.open_incidents.set(len(self.grouper.incidents))
        return [out] if out.resource_logs else []

    def _apply(self, results: list[tuple[str, Narration]]) -> None:
        for iid, narration in results:
            inc = self.grouper.incidents.get(iid)
            if inc is None:
                continue
            inc.narration = narration
            inc.dirty = True

    # --- for the CLI, the run summary and tests ------------------------------------------------

    def open_incidents(self) -> list[Incident]:
        with self._lock:
            return list(self.grouper.incidents.values())


def trigger_records(batch: ExportLogsServiceRequest, wanted: set[str]
                    ) -> dict[str, dict[str, Any]]:
    """The raw records (by uid) that the batch's detections name as their triggers (the
    response stage reads their pid and peer the same way)."""
    out: dict[str, dict[str, Any]] = {}
    for rl in batch.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                if rec.event_name == S.EV_DETECTION or rec.event_name == S.EV_INCIDENT:
                    continue
                for kv in rec.attributes:
                    if kv.key == S.LOG_RECORD_UID:
                        if kv.value.string_value in wanted:
                            out[kv.value.string_value] = attrs_dict(rec.attributes)
                        break
    return out


def create(config: Config) -> IncidentsStage:
    return IncidentsStage(config)
