"""The ``risk`` stage: runs the risk analysers (otelguard.risk) over raw event records and
reports their findings (docs/risk.md; docs/architecture.md#runtime-risk).

Runs after ``k8s_attributes`` (the workload key reads the names it adds); it reads the batch
and only appends to it, so any place after enrichment works; registered last. Before
``incidents``, its finding records pass that stage, whose stories cite them
(docs/incidents.md#risk-facts). ``process`` keys
each raw Resource to its workload (profiles' key, docs/profiles.md#workloads) and hands each
record whose event name an analyser asked for to that analyser as an :class:`Observation` (no
I/O: analysers queue their I/O for their own threads), then appends the findings an analyser
wants out at once (``urgent()``: a new sensitive edge) to the batch. A report thread, every
``report_interval_seconds``, asks each analyser for each workload's findings, turns new or
changed findings into ``otelguard.risk.finding`` records (released through
:meth:`RiskStage.drain`, the flush timer), sets the per-workload gauges and writes one JSON
snapshot per workload for ``otelguard risk show``. Workloads beyond ``max_workloads``: the least recently seen is forgotten by every
analyser (counted as ``workloads_full``).

Cost per record: an event name no analyser reads costs one dict lookup; the others an attribute
dict of the attribute keys the analysers read (``fields``) and their ``observe`` (see
docs/benchmarks.md#risk-packages).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otelguard import semconv as S
from otelguard.config import write_atomic
from otelguard.otlp.messages import attrs_dict, from_any
from otelguard.processors.journal import StateDirOnly
from otelguard.processors.profiles.observe import FieldReader, getters_for
from otelguard.processors.profiles.workload import of_host_record, of_resource
from otelguard.processors.risk import metrics, records
from otelguard.processors.risk.config import Config
from otelguard.processors.stage import Batch, Periodic
from otelguard.risk import analysers as registry
from otelguard.risk.analyser import Analyser, Dropped
from otelguard.risk.model import Finding, Observation

TYPE_NAME = "risk"
_RAW = ("", S.STREAM_EVENT)  # streams whose records are observations
# what the stage itself reads of a record: its uid, and a host record's workload
_STAGE_FIELDS = frozenset({S.LOG_RECORD_UID, S.PROCESS_LINUX_CGROUP, S.PROCESS_EXECUTABLE_PATH})

log = logging.getLogger(__name__)

GaugeKey = tuple[str, str, str, str]  # analyser, kind, state, severity


class _Workload:
    __slots__ = ("resource", "refresh", "emitted", "gauges")

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.refresh = False  # copy the Resource again at the next record (after a report)
        self.emitted: dict[tuple[str, str, str], tuple[str, str]] = {}  # key -> fingerprint
        self.gauges: set[GaugeKey] = set()


class RiskStage(StateDirOnly):
    type_name = TYPE_NAME
    logs_only = True

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._analysers: list[Analyser] = [
            registry.create(name, config, _dropped(name)) for name in config.analysers]
        self._by_event: dict[str, list[Analyser]] = {}
        self._fields: dict[str, frozenset[str]] = {}  # event -> attribute keys decoded
        for a in self._analysers:
            for event in a.events:
                self._by_event.setdefault(event, []).append(a)
                wanted = getattr(a, "fields_by_event", {}).get(event, a.fields)
                self._fields[event] = self._fields.get(event, _STAGE_FIELDS) | wanted
        # by remembered position where every key's type is known (profiles' reader)
        table = {e: g for e, keys in self._fields.items()
                 if (g := getters_for(keys)) is not None}
        self._reader = FieldReader(table, {})
        self._workloads: OrderedDict[str, _Workload] = OrderedDict()
        self._released: list[ResourceLogs] = []
        self._directory = Path(config.directory) if config.directory else None
        self._periodic = Periodic("risk-report", config.report_interval_seconds, self.report,
                                  "risk: report failed; retrying next interval", log)
        self.reports = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for a in self._analysers:
            a.start()
        self._periodic.start()

    def shutdown(self) -> None:
        self._periodic.stop()
        for a in self._analysers:
            a.shutdown()

    def read_path_prefixes(self) -> tuple[str, ...]:
        """What the kernel read filter must let through for these analysers (runner.py adds
        them to the sensor's; docs/risk.md#what-the-sensor-must-send)."""
        packages = self.config.packages.read_path_prefixes \
            if "packages" in self.config.analysers else ()
        others = tuple(p for a in self._analysers for p in getattr(a, "read_path_prefixes", ()))
        return tuple(dict.fromkeys(packages + others))

    # --- the batch ---------------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        if not isinstance(batch, ExportLogsServiceRequest) or not self._by_event:
            return batch
        by_event = self._by_event
        with self._lock:
            for rl in batch.resource_logs:
                origin = None
                res: dict[str, Any] = {}
                for sl in rl.scope_logs:
                    for rec in sl.log_records:
                        wanted = by_event.get(rec.event_name)
                        if not wanted:
                            continue
                        if origin is None:
                            res = attrs_dict(rl.resource.attributes)
                            if res.get(S.STREAM, "") not in _RAW:
                                break
                            origin = of_resource(rl.resource.attributes)
                        self._observe(rl, rec, origin, res, wanted)
        # findings an analyser wants out at once (a new sensitive edge) leave with this batch
        batch.resource_logs.extend(self._urgent())
        return batch

    def _observe(self, rl: ResourceLogs, rec: LogRecord, origin: Any, res: dict[str, Any],
                 wanted: list[Analyser]) -> None:
        if rec.event_name in self._reader.table:
            attrs = self._reader.read(rec, rec.event_name)
        else:
            wanted_keys = self._fields[rec.event_name]
            attrs = {kv.key: from_any(kv.value) for kv in rec.attributes if kv.key in wanted_keys}
        workload = origin.workload or of_host_record(
            origin.host, str(attrs.get(S.PROCESS_LINUX_CGROUP) or ""),
            str(attrs.get(S.PROCESS_EXECUTABLE_PATH) or ""))
        w = self._workload(workload, rl.resource)
        if w is None:
            return
        obs = Observation(
            workload=workload, instance=origin.instance,
            container_id=str(res.get(S.CONTAINER_ID) or "") if origin.workload else "",
            host=origin.host, event_name=rec.event_name, time_unix_nano=rec.time_unix_nano,
            uid=str(attrs.get(S.LOG_RECORD_UID) or ""), attributes=attrs, resource=res,
            trace_id=rec.trace_id.hex())
        for a in wanted:
            a.observe(obs)

    def _workload(self, workload: str, resource: Resource) -> Optional[_Workload]:
        w = self._workloads.get(workload)
        if w is None:
            while len(self._workloads) >= self.config.max_workloads:
                old, ow = self._workloads.popitem(last=False)
                self._forget(old, ow)
                metrics.dropped.labels("risk", "workloads_full").inc()
            w = self._workloads[workload] = _Workload(_copy(resource))
            metrics.workloads.set(len(self._workloads))
        else:
            self._workloads.move_to_end(workload)
            if w.refresh:
                w.resource, w.refresh = _copy(resource), False
        return w

    def _forget(self, workload: str, w: _Workload) -> None:
        for a in self._analysers:
            a.forget(workload)
        for key in w.gauges:
            metrics.findings.remove(workload, *key)

    # --- reports -----------------------------------------------------------------------------

    def report(self) -> None:
        """One pass of the report thread (and the last one at shutdown): findings of every
        workload, records for the new or changed ones, gauges, snapshots."""
        with self._lock:
            names = list(self._workloads)
        now_ns = int(self._clock() * 1e9)
        for workload in names:
            found: list[Finding] = []
            for a in self._analysers:
                found.extend(a.findings(workload))
            with self._lock:
                w = self._workloads.get(workload)
                if w is None:
                    continue
                fresh = [f for f in found if w.emitted.get(f.key()) != f.fingerprint()
                         and _recorded(f)]
                for f in fresh:
                    w.emitted[f.key()] = f.fingerprint()
                if fresh:
                    self._released.append(records.resource_logs(
                        w.resource, [records.record(f, workload, now_ns) for f in fresh]))
                w.refresh = True
                self._gauges(workload, w, found)
            self._snapshot(workload, found, now_ns)
        self.reports += 1

    def _gauges(self, workload: str, w: _Workload, found: list[Finding]) -> None:
        counts: dict[GaugeKey, int] = {}
        for f in found:
            key = (f.analyser, f.kind, f.state, f.severity)
            counts[key] = counts.get(key, 0) + 1
        for key in w.gauges - set(counts):
            metrics.findings.remove(workload, *key)
        for key, n in counts.items():
            metrics.findings.labels(workload, *key).set(n)
        w.gauges = set(counts)

    def _snapshot(self, workload: str, found: list[Finding], now_ns: int) -> None:
        if self._directory is None:
            return
        doc = {"workload": workload, "written": records.iso(now_ns),
               "findings": [records.to_json(f) for f in found]}
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self._directory / snapshot_name(workload),
                         json.dumps(doc, indent=1, sort_keys=True).encode())
        except OSError as exc:
            metrics.dropped.labels("risk", "snapshot_write").inc()
            log.warning("risk: cannot write the snapshot of %s: %s", workload, exc)

    def drain(self, final: bool) -> list[Batch]:
        """Finding records written by reports since the last drain (at shutdown: one more
        report first, so the last verdicts leave)."""
        if final:
            try:
                self.report()
            except Exception:  # noqa: BLE001 - shutdown goes on
                log.exception("risk: final report failed")
        urgent = self._urgent()
        with self._lock:
            self._released.extend(urgent)
            if not self._released:
                return []
            batch = ExportLogsServiceRequest()
            batch.resource_logs.extend(self._released)
            self._released = []
        return [batch]

    def _urgent(self) -> list[ResourceLogs]:
        """Findings an analyser wants out before the next report (``urgent()``, optional: a
        new sensitive edge), each once like a report's; ``process`` appends them to the batch
        that showed them, ``drain`` releases any left."""
        out: list[ResourceLogs] = []
        now_ns = int(self._clock() * 1e9)
        for a in self._analysers:
            take = getattr(a, "urgent", None)
            if take is None:
                continue
            for workload, f in take():
                with self._lock:
                    w = self._workloads.get(workload)
                    if w is None or w.emitted.get(f.key()) == f.fingerprint():
                        continue
                    w.emitted[f.key()] = f.fingerprint()
                    out.append(records.resource_logs(
                        w.resource, [records.record(f, workload, now_ns)]))
        return out

    # --- for the CLI and tests ---------------------------------------------------------------

    def workloads(self) -> list[str]:
        with self._lock:
            return list(self._workloads)

    def findings(self, workload: str) -> list[Finding]:
        return [f for a in self._analysers for f in a.findings(workload)]

    def analyser(self, name: str) -> Analyser:
        return next(a for a in self._analysers if a.name == name)


def _recorded(f: Finding) -> bool:
    """Findings that become records: everything but installed-only packages without a known
    vulnerability (hundreds per image; they stay in the gauges and snapshots) and findings
    their analyser marks ``record=False`` (used grants, windows still learning)."""
    return f.record and not (f.kind == "package" and f.state == "installed-only")


def _copy(resource: Resource) -> Resource:
    r = Resource()
    r.CopyFrom(resource)
    return r


def _dropped(analyser: str) -> Dropped:
    def count(reason: str, n: int) -> None:
        metrics.dropped.labels(analyser, reason).inc(n)
    return count


def snapshot_name(workload: str) -> str:
    """A workload's snapshot file name (its key, percent-encoded)."""
    return urllib.parse.quote(workload, safe="") + ".json"


def create(config: Config) -> RiskStage:
    return RiskStage(config)


__all__ = ["TYPE_NAME", "RiskStage", "create", "snapshot_name"]
