"""Granted vs used and sensitive reach over OTLP batches: what the ``risk`` stage runs for them.

Runs after ``k8s_attributes`` (it reads the pod-spec facts and peer names the enricher adds).
``process`` (per logs batch, no I/O) feeds every event Resource's records to the two trackers
and returns the sensitive-reach findings at once, as new ResourceLogs the stage appends to the
same batch (so a new edge leaves with the batch that showed it); ``due`` (flush timer) returns
the granted-vs-used findings of workloads whose learning window ended and refreshes the gauges.
``start`` lists and watches namespaces, Services and EndpointSlices for the tier map (through
the same :class:`~otelguard.processors.k8s.source.ApiServerSource` the enricher uses).

Finding records: ``event_name`` ``otelguard.risk.finding`` under a Resource marked
``otelguard.stream=risk`` (a copy of the trigger's for reach; the workload's names for grants),
scope ``otelguard.processors``; attributes ``otelguard.risk.*`` (docs/architecture.md#risk-records).
``log.record.uid`` derives from the finding's identity, so a retried batch makes the same one.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, SeverityNumber
from prometheus_client import Counter, Gauge

from otelguard import semconv as S
from otelguard import telemetry
from otelguard.otlp.messages import attrs_dict, set_attr, set_attrs
from otelguard.processors.k8s.source import ApiServerSource, K8sSource
from otelguard.processors.profiles.workload import of_resource
from otelguard.risk.grants import (
    READS as GRANT_READS, GrantFinding, GrantsConfig, GrantTracker, Ledger, Owner, read_fields,
    resource_grants,
)
from otelguard.risk.reach import READS as REACH_READS, ReachConfig, ReachFinding, ReachTracker, \
    TierMap, KINDS

log = logging.getLogger(__name__)

unused_capabilities = Gauge(
    S.METRIC_RISK_UNUSED_CAPABILITIES, "Capabilities granted and never used, per workload past "
    "its learning window.", ["k8s_namespace_name", "workload"], registry=telemetry.REGISTRY)
sensitive_edges = Gauge(
    S.METRIC_RISK_SENSITIVE_EDGES, "Edges from a lower tier into the sensitive one, per "
    "workload (remembered ones).", ["k8s_namespace_name", "workload"], registry=telemetry.REGISTRY)
access_findings = Counter(
    S.METRIC_RISK_ACCESS_FINDINGS, "Granted-vs-used and sensitive-reach findings written, by "
    "kind.", ["kind"], registry=telemetry.REGISTRY)

SENSITIVE_REACH = "sensitive_reach"
# Resource keys a grant finding's Resource carries (what Loki indexes and people filter on)
_NAME_KEYS = frozenset({
    S.K8S_NAMESPACE_NAME, S.K8S_DEPLOYMENT_NAME, S.K8S_STATEFULSET_NAME, S.K8S_DAEMONSET_NAME,
    S.K8S_CRONJOB_NAME, S.K8S_JOB_NAME, S.K8S_REPLICASET_NAME, S.K8S_CONTAINER_NAME,
    S.SERVICE_NAME, S.K8S_CLUSTER_NAME, S.K8S_NODE_NAME, S.CONTAINER_IMAGE_NAME,
})
_SCOPE = "otelguard.processors"


def owner_of(workload: str) -> Optional[Owner]:
    """``k8s/NS/KIND/NAME/CONTAINER`` (the profiles stage's key) -> Owner; None otherwise."""
    parts = workload.split("/", 4)
    if len(parts) != 5 or parts[0] != "k8s":
        return None
    return Owner(parts[1], parts[2], parts[3], parts[4])


def namespace_of(workload: str) -> str:
    o = owner_of(workload)
    return o.namespace if o else ""


class ExposureAnalyser:
    """Both trackers and the tier map; the ``risk`` stage holds one."""

    def __init__(self, grants: GrantsConfig, reach: ReachConfig, kubeconfig: str = "",
                 context: str = "", source: Optional[K8sSource] = None,
                 wait_for_sync_seconds: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.grants_cfg, self.reach_cfg = grants, reach
        self.tiers = TierMap(reach)
        self.grants = GrantTracker(grants, self.tiers.is_api_server)
        self.reach = ReachTracker(reach, self.tiers)
        self._kubeconfig, self._context = kubeconfig, context
        self.source = source
        self._wait = wait_for_sync_seconds
        self._clock = clock
        self._names: dict[str, dict[str, Any]] = {}  # workload -> Resource names (ledgers')
        self._gauged: set[tuple[str, str, str]] = set()
        self._evicted_seen = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.source is None:
            from otelguard.kube import api_client_from

            self.source = ApiServerSource(api_client_from(self._kubeconfig, self._context))
        self.source.start(self.tiers, KINDS, None)
        if self._wait > 0 and not self.source.wait_synced(self._wait):
            log.warning("risk: tier map not synced after %.0fs; judging with what is known",
                        self._wait)

    def shutdown(self) -> None:
        if self.source is not None:
            self.source.stop()

    # --- per batch -------------------------------------------------------------------------

    def process(self, batch: ExportLogsServiceRequest) -> list[ResourceLogs]:
        """Observe the batch; the sensitive-reach findings it showed, as new ResourceLogs."""
        now = self._clock()
        out: list[ResourceLogs] = []
        grants_on, reach_on = self.grants_cfg.enabled, self.reach_cfg.enabled
        for rl in batch.resource_logs:
            res = attrs_dict(rl.resource.attributes)
            if res.get(S.STREAM) not in (None, "", S.STREAM_EVENT) or res.get(S.HOST_PROCESS):
                continue
            workload = of_resource(rl.resource.attributes).workload
            if workload is None:
                continue
            owner = owner_of(workload)
            led: Optional[Ledger] = None
            if grants_on and owner is not None:
                led = self.grants.resource(workload, resource_grants(res, owner), now)
                if workload not in self._names:
                    self._names[workload] = {k: v for k, v in res.items() if k in _NAME_KEYS}
            ns = str(res.get(S.K8S_NAMESPACE_NAME) or "")
            pod_ip = str(res.get(S.K8S_POD_IP) or "")
            host_net = bool(res.get(S.K8S_POD_HOST_NETWORK))
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    event = rec.event_name
                    wanted = GRANT_READS.get(event) if led is not None else None
                    connect = reach_on and event == S.EV_NETWORK_CONNECT
                    if connect:
                        wanted = (wanted or frozenset()) | REACH_READS
                    if not wanted:
                        continue
                    f = read_fields(rec.attributes, wanted)
                    if led is not None:
                        self.grants.observe(led, event, f)
                    if connect:
                        found = self.reach.connect(workload, ns, pod_ip, host_net, f)
                        if found is not None:
                            out.append(self._reach_record(rl, rec, found))
        self._forget_evicted()
        return out

    def _forget_evicted(self) -> None:
        if self.grants.evicted != self._evicted_seen:
            telemetry.dropped.labels(stage="risk", reason="workloads_evicted").inc(
                self.grants.evicted - self._evicted_seen)
            self._evicted_seen = self.grants.evicted
            for w in list(self._names):
                if w not in self.grants.ledgers:
                    del self._names[w]

    def due(self) -> list[ResourceLogs]:
        """Granted-vs-used findings now due, as ResourceLogs; refreshes the gauges."""
        now = self._clock()
        out = [self._grant_record(f, now) for f in self.grants.due(now)]
        self._gauges(now)
        return out

    # --- records ---------------------------------------------------------------------------

    @staticmethod
    def _item(resource: dict[str, Any]) -> tuple[ResourceLogs, LogRecord]:
        rl = ResourceLogs()
        set_attrs(rl.resource.attributes, resource)
        set_attr(rl.resource.attributes, S.STREAM, S.STREAM_RISK, overwrite=True)
        sl = rl.scope_logs.add()
        sl.scope.name = _SCOPE
        return rl, sl.log_records.add()

    def _reach_record(self, trigger_rl: ResourceLogs, trigger: LogRecord,
                      found: ReachFinding) -> ResourceLogs:
        rl = ResourceLogs()
        rl.resource.CopyFrom(trigger_rl.resource)
        set_attr(rl.resource.attributes, S.STREAM, S.STREAM_RISK, overwrite=True)
        sl = rl.scope_logs.add()
        sl.scope.name = _SCOPE
        rec = sl.log_records.add()
        t = found.target
        rec.time_unix_nano = trigger.time_unix_nano or time.time_ns()
        rec.observed_time_unix_nano = time.time_ns()
        rec.severity_number = SeverityNumber.ValueType(13)  # WARNING
        rec.severity_text = "WARNING"
        rec.event_name = S.EV_RISK_FINDING
        rec.trace_id, rec.span_id = trigger.trace_id, trigger.span_id
        rec.body.string_value = (
            f"Sensitive reach: {found.workload} (tier {found.source_tier}) "
            f"{'connected' if found.connected else 'tried to connect'} to {t.id} "
            f"({found.address}:{found.port}; {t.reason}), an edge never seen before")
        seed = f"{SENSITIVE_REACH}/{found.workload}/{t.id}/{found.port}/{found.trigger_uid}"
        set_attrs(rec.attributes, {
            S.RISK_KIND: SENSITIVE_REACH, S.RISK_WORKLOAD: found.workload,
            S.RISK_SOURCE_TIER: found.source_tier, S.RISK_TARGET: t.id,
            S.RISK_TARGET_TIER: t.tier, S.RISK_TARGET_REASON: t.reason,
            S.NETWORK_PEER_ADDRESS: found.address, S.NETWORK_PEER_PORT: found.port,
            S.PROCESS_EXECUTABLE_PATH: found.executable or None,
            S.TRIGGER_RECORD_UID: found.trigger_uid or None,
            S.RISK_EVIDENCE: [found.trigger_uid] if found.trigger_uid else None,
            S.LOG_RECORD_UID: str(uuid.uuid5(uuid.NAMESPACE_OID, seed)),
        })
        access_findings.labels(kind=SENSITIVE_REACH).inc()
        return rl

    def _grant_record(self, f: GrantFinding, now: float) -> ResourceLogs:
        rl, rec = self._item(self._names.get(f.workload, {
            S.K8S_NAMESPACE_NAME: f.owner.namespace, S.K8S_CONTAINER_NAME: f.owner.container}))
        rec.time_unix_nano = rec.observed_time_unix_nano = int(now * 1e9)
        rec.severity_number = SeverityNumber.ValueType(10)  # NOTICE
        rec.severity_text = "NOTICE"
        rec.event_name = S.EV_RISK_FINDING
        hours = f.observed_seconds / 3600
        rec.body.string_value = (
            f"Unused grant: {f.workload}: {f.summary}, after {hours:.1f} h of observation "
            f"(learning window {f.learning_seconds / 3600:.1f} h: a grant used only more rarely "
            f"than that is reported too). Least privilege:\n{f.suggestion}")
        seed = f"{f.kind}/{f.workload}/{f.grant}"
        set_attrs(rec.attributes, {
            S.RISK_KIND: f.kind, S.RISK_WORKLOAD: f.workload, S.RISK_GRANT: f.grant,
            S.RISK_SUGGESTION: f.suggestion, S.RISK_OBSERVED_SECONDS: float(f.observed_seconds),
            S.RISK_LEARNING_SECONDS: float(f.learning_seconds),
            S.RISK_EVIDENCE: list(f.evidence) or None,
            S.LOG_RECORD_UID: str(uuid.uuid5(uuid.NAMESPACE_OID, seed)),
        })
        access_findings.labels(kind=f.kind).inc()
        return rl

    # --- gauges and the terminal -----------------------------------------------------------

    def _gauges(self, now: float) -> None:
        current: set[tuple[str, str, str]] = set()
        for gauge, name, values in (
                (unused_capabilities, "caps", self.grants.unused_capabilities(now)),
                (sensitive_edges, "edges", self.reach.sensitive_edges())):
            for workload, n in values.items():
                ns = namespace_of(workload)
                gauge.labels(k8s_namespace_name=ns, workload=workload).set(n)
                current.add((name, ns, workload))
        for name, ns, workload in self._gauged - current:
            gauge = unused_capabilities if name == "caps" else sensitive_edges
            gauge.remove(ns, workload)
        self._gauged = current

    def show(self, workload_prefix: str) -> list[dict[str, Any]]:
        """Every grant verdict and sensitive edge of the workloads whose key starts with
        ``workload_prefix`` (``otelguard risk show``)."""
        now = self._clock()
        rows: list[dict[str, Any]] = []
        for workload, led in self.grants.ledgers.items():
            if workload.startswith(workload_prefix):
                for verdict, grant, summary, evidence in self.grants.verdicts(workload, led, now):
                    rows.append({"workload": workload, "part": "grants", "verdict": verdict,
                                 "what": grant, "detail": summary, "evidence": evidence,
                                 "observed_seconds": round(led.observed_seconds(now)),
                                 "learning_seconds": self.grants_cfg.learning_seconds})
        for workload, edges in self.reach.edges.items():
            if workload.startswith(workload_prefix):
                for key, target in edges.items():
                    rows.append({"workload": workload, "part": "reach",
                                 "verdict": SENSITIVE_REACH, "what": key,
                                 "detail": target.reason, "evidence": ""})
        return rows
