"""The ``profiles`` stage: learns per-workload behaviour profiles and reports deviations from
the approved ones as detections (docs/profiles.md; docs/architecture.md#behaviour-profiles).

Runs after ``falco_rules`` (its WARNING-or-above detections taint a learning workload, and their
trigger processes are not learned from) and before ``noise_control`` (which throttles repeated
deviations per rule, workload and value, ``otelguard.anomaly.value`` being one of its key
fields, so a decoy deviation never silences a different one). ``process`` does no I/O: a sync
thread started in ``start()`` reads the profiles people changed (files, or WorkloadProfile
objects with ``store.kind: kube``) and writes the profiles learning changed, every
``save_interval_seconds`` and at shutdown. Reports about profiles
themselves (tampered, partial) leave through :meth:`ProfilesStage.drain` (the flush timer).

Cost per record: an event name the stage does not read costs one set lookup; the others the
reads of the 1-9 attributes their observations need (by remembered position; the process
context only when a trigger, a flagged process, a host record or a deviation needs it), then
dict hits: the observations remembered per values read, the allowed entries (~7 µs/record on
the agent-shaped stream, x1.1-1.7 the request's parse: docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

import otelguard
from otelguard import semconv as S
from otelguard.kube import CustomResources, KubeAccessError, api_client_from, own_namespace
from otelguard.otlp.messages import set_attr
from otelguard.processors.errors import ProcessorsError
from otelguard.processors.journal import StateDirOnly
from otelguard.processors.profiles import metrics, records
from otelguard.processors.profiles.config import Config
from otelguard.processors.profiles.cluster import ObjectStore
from otelguard.processors.profiles.document import (
    ProfileDocument, content_hash, from_document, spec_of, to_document,
)
from otelguard.processors.profiles.model import APPROVED, LEARNING, STATES, Profile
from otelguard.processors.profiles.objects import PLURAL
from otelguard.processors.profiles.observe import (
    CONTEXT_READ, OBSERVED, READ_EVENTS, FieldReader, Observation, Observer, networks,
)
from otelguard.processors.profiles.store import DirectoryStore, ProfileStore
from otelguard.processors.profiles.tree import TreeProfiles
from otelguard.processors.profiles.workload import Origin, of_host_record, of_resource
from otelguard.processors.stage import Batch, Periodic

TYPE_NAME = "profiles"
MAX_FLAGGED = 4096  # (instance, pid) of processes a rule flagged: never learned from
_NONE: Mapping[str, Any] = {}  # a record's context not read (never written to)

log = logging.getLogger(__name__)


class ProfilesStage(StateDirOnly):
    """The stage; ``clock`` (wall-clock seconds: learning windows outlive restarts) is
    injectable for tests."""

    type_name = TYPE_NAME
    logs_only = True

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._internal = networks(config.internal_cidrs)
        self._profiles: dict[str, Profile] = {}
        self._lock = threading.Lock()  # process() and drain() against the sync thread
        self._released: list[ResourceLogs] = []
        self._flagged: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._fields = FieldReader(OBSERVED, {})
        self._context = FieldReader({}, CONTEXT_READ)
        self._observer = Observer(self._internal)
        self._directory = Path(config.directory) if config.directory else None
        self._store: Optional[ProfileStore] = None
        self._client: Any = None  # the kube store's ApiClient (its connection pool), closed last
        self._periodic = Periodic("profiles-sync", config.save_interval_seconds, self.sync,
                                  "profiles: sync failed; retrying next interval", log)
        self.anomalies = 0
        self._policy: Optional[TreeProfiles] = None  # with policy_dir: what the tree says

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load every profile (approved ones enforce from the first batch), then start the sync
        thread. Without a store (no ``directory``, no state_dir, ``store.kind: dir``) profiles
        live in memory only."""
        if self.config.policy_dir:
            self._policy = TreeProfiles(Path(self.config.policy_dir))
            self._adopt_tree(self._policy.load())  # a tree that does not validate stops start
        store = self._open_store()
        if store is None and self._policy is None:
            return
        self._store = store
        self.sync()
        self._periodic.start()

    def _open_store(self) -> Optional[ProfileStore]:
        cfg = self.config.store
        store: ProfileStore
        if cfg.kind == "kube":
            try:
                client = self._client = api_client_from(cfg.kubeconfig, cfg.context)
            except KubeAccessError as exc:  # stops startup with the reason
                raise ProcessorsError(f"profiles: {exc}") from exc
            store = ObjectStore(CustomResources(client, PLURAL),
                                cfg.namespace or own_namespace("otelguard"),
                                cfg.watch_timeout_seconds)
        elif self._directory is not None:
            store = DirectoryStore(self._directory)
        else:
            return None
        store.open()
        return store

    def shutdown(self) -> None:
        """Stop the sync thread and write what learning changed since its last pass."""
        self._periodic.stop()
        if self._store is not None:
            self._save()
            self._store.close()
        if self._client is not None:
            self._client.close()
            self._client = None

    def sync(self) -> None:
        """One pass of the sync thread: read changed files, end due learning windows, write
        changed profiles, update the gauges."""
        if self._policy is not None:
            changed = self._policy.poll()  # a new tree revision, validated (else the old stays)
            if changed is not None:
                self._adopt_tree(changed)
            self._policy.expire()
        if self._store is not None:
            docs = self._store.scan()
            loaded = [from_document(d, self.config) for d in docs]
            with self._lock:
                pinned = self._policy.workloads if self._policy is not None else frozenset()
                for p in loaded:
                    if p.workload not in pinned:  # the tree's profile wins over the store's
                        self._adopt(p)
        with self._lock:
            now = self._clock()
            for p in self._profiles.values():
                if p.due(now, self.config):
                    p.finish(now, self.config)
        if self._store is not None:
            self._save()
        self._gauges()

    def _adopt(self, p: Profile) -> None:
        """A profile read from its file replaces the live one: what a human wrote wins."""
        self._profiles[p.workload] = p
        if p.tampered:
            self._report(p, tampered=True, detail=(
                "its spec does not match the content hash of its approval "
                f"({p.approval[2] if p.approval else 'no approval recorded'}); not enforced"))
            log.warning("profiles: %s is approved but its spec does not match its hash: "
                        "not enforced", p.workload)

    def _adopt_tree(self, docs: list[ProfileDocument]) -> None:
        """The tree's profiles replace the live ones; a workload the tree no longer names
        starts learning afresh."""
        loaded = [from_document(d, self.config) for d in docs]
        with self._lock:
            assert self._policy is not None
            for workload in self._policy.previous_workloads - self._policy.workloads:
                self._profiles.pop(workload, None)
            for p in loaded:
                p.dirty = False
                self._adopt(p)

    def _save(self) -> None:
        if self._store is None:
            return
        with self._lock:
            pinned = self._policy.workloads if self._policy is not None else frozenset()
            dirty = [to_document(p) for p in self._profiles.values()
                     if p.dirty and p.workload not in pinned]
            for p in self._profiles.values():
                p.dirty = False
        for doc in dirty:
            if not self._store.save(doc):
                log.info("profiles: %s changed in the store; reading it instead of writing",
                         doc.metadata.workload)

    def _gauges(self) -> None:
        with self._lock:
            states = {s: 0 for s in (*STATES, "tampered")}
            allowed = quarantined = 0
            for p in self._profiles.values():
                states["tampered" if p.tampered else p.state] += 1
                allowed += p.entries()
                quarantined += p.quarantined()
        for state, n in states.items():
            metrics.profiles.labels(state).set(n)
        metrics.entries.labels("allowed").set(allowed)
        metrics.entries.labels("quarantined").set(quarantined)

    # --- the batch ---------------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        if not isinstance(batch, ExportLogsServiceRequest):
            return batch
        with self._lock:
            now = self._clock()
            triggers = self._read_detections(batch, now)
            added: list[ResourceLogs] = []
            for rl in batch.resource_logs:
                origin = of_resource(rl.resource.attributes)
                if origin.detection:
                    continue
                found = self._observe(rl, origin, triggers, now)
                if found:
                    out = ResourceLogs(schema_url=S.SEMCONV_SCHEMA_URL)
                    out.resource.CopyFrom(rl.resource)
                    _as_detection(out, found)
                    added.append(out)
            batch.resource_logs.extend(added)
        return batch

    def _read_detections(self, batch: ExportLogsServiceRequest,
                         now: float) -> dict[str, tuple[str, bool]]:
        """Rule detections at or above ``taint_severity``: taint their learning workload and
        flag their trigger process. Returns trigger uid -> (rule, taint) for the triggers read
        while observing: those on host Resources (their workload is known per record only, so
        they taint there) and those whose detection does not carry the process id (a rule's
        evidence is the fields its output names; the pid is read from the trigger record)."""
        triggers: dict[str, tuple[str, bool]] = {}
        for rl in batch.resource_logs:
            origin: Optional[Origin] = None
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    if rec.event_name != S.EV_DETECTION or \
                            rec.severity_number < self.config.taint_severity:
                        continue
                    rule, uid, pid = "", "", 0
                    for kv in rec.attributes:
                        if kv.key == S.SECURITY_RULE_NAME:
                            rule = kv.value.string_value
                        elif kv.key == S.TRIGGER_RECORD_UID:
                            uid = kv.value.string_value
                        elif kv.key == S.PROCESS_PID:
                            pid = kv.value.int_value
                        elif kv.key == S.SECURITY_RULE_RULESET_NAME and \
                                kv.value.string_value == records.RULESET:
                            rule = ""
                            break
                    if not rule:
                        continue  # a profile deviation or report is no rule hit
                    if origin is None:
                        origin = of_resource(rl.resource.attributes)
                    if pid:
                        self._flag(origin.instance, pid)
                    if origin.workload is None:
                        if uid:
                            triggers[uid] = (rule, True)
                        continue
                    if uid and not pid:
                        triggers[uid] = (rule, False)
                    p = self._profiles.get(origin.workload)
                    if p is not None:
                        p.taint(rule, now, origin.instance)
        return triggers

    def _flag(self, instance: str, pid: int) -> None:
        self._flagged[(instance, pid)] = None
        self._flagged.move_to_end((instance, pid))
        while len(self._flagged) > MAX_FLAGGED:
            self._flagged.popitem(last=False)

    def _observe(self, rl: ResourceLogs, origin: Origin, triggers: dict[str, tuple[str, bool]],
                 now: float) -> list[LogRecord]:
        found: list[LogRecord] = []
        namespace = ""
        host = origin.workload is None
        context, fields, observer = self._context, self._fields, self._observer
        p: Optional[Profile] = None
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                name = rec.event_name
                observed = name in READ_EVENTS
                if not observed and not triggers:
                    continue
                # the process context only when something needs it (see observe.CONTEXT)
                ctx = context.read(rec, name) if triggers or host or self._flagged else _NONE
                workload = origin.workload or of_host_record(
                    origin.host, ctx.get(S.PROCESS_LINUX_CGROUP) or "",
                    ctx.get(S.PROCESS_EXECUTABLE_PATH) or "")
                if triggers:
                    trigger = triggers.get(ctx.get(S.LOG_RECORD_UID) or "")
                    if trigger is not None:
                        self._flag(origin.instance, ctx.get(S.PROCESS_PID) or 0)
                        tainted = self._profiles.get(workload) if trigger[1] else None
                        if tainted is not None:
                            tainted.taint(trigger[0], now, origin.instance)
                if not observed:
                    continue
                obs = observer(name, fields.read(rec, name))
                if not obs:
                    continue
                if p is None or p.workload != workload:
                    p = self._profile(workload, now)
                    if p is None:
                        continue
                if p.state == LEARNING:
                    if p.due(now, self.config):
                        p.finish(now, self.config)
                    else:
                        self._learn(p, obs, origin, ctx, rl)
                    continue
                if not p.enforcing:
                    continue
                for o in obs:
                    allowed = p.allowed(o.kind)
                    if allowed.matches(o.value):
                        continue
                    if self._policy is not None and \
                            self._policy.excepted(workload, o.kind, o.value):
                        metrics.excepted.labels(o.kind).inc()
                        continue
                    if ctx is _NONE:
                        ctx = context.read(rec, name)
                    if not namespace:
                        namespace = workload.split("/")[1] if workload.startswith("k8s/") \
                            else ""
                    self.anomalies += 1
                    metrics.anomalies.labels(o.kind).inc()
                    dev = records.deviation(
                        o.kind, o.value, rec, ctx.get(S.LOG_RECORD_UID) or "", self._facts(p),
                        allowed.nearest(o.value), len(allowed.values), namespace)
                    if self._policy is not None:
                        set_attr(dev.attributes, S.POLICY_REVISION, self._policy.revision)
                    found.append(dev)
        return found

    def _learn(self, p: Profile, obs: tuple[Observation, ...], origin: Origin,
               ctx: Mapping[str, Any], rl: ResourceLogs) -> None:
        flagged = self._flagged
        if flagged:  # then ctx was read
            pid = ctx.get(S.PROCESS_PID) or 0
            if (origin.instance, pid) in flagged or \
                    (origin.instance, ctx.get(S.PROCESS_PARENT_PID) or 0) in flagged:
                self._flag(origin.instance, pid)  # its children are not learned from either
                return
        for o in obs:
            overflow = p.learn(o, origin.instance, self._clock(), self.config)
            if overflow:
                metrics.overflow.labels(overflow).inc()
                if not p.partial_reported:
                    p.partial_reported = True
                    self._report(p, tampered=False, resource=rl.resource, detail=(
                        f"{overflow} bound reached while learning ({o.kind} {o.value} and "
                        "what follows is not learned; counted in status.overflow)"))

    def _profile(self, workload: str, now: float) -> Optional[Profile]:
        p = self._profiles.get(workload)
        if p is None:
            if len(self._profiles) >= self.config.max_profiles:
                metrics.overflow.labels("profiles").inc()
                return None
            p = self._profiles[workload] = Profile(workload, now, self.config)
        return p

    def _facts(self, p: Profile) -> records.ProfileFacts:
        digest = p.approval[2] if p.approval else content_hash(spec_of(p.spec))
        return records.ProfileFacts(p.workload, p.state, p.revision, digest, p.ended,
                                    p.observations, p.approval[0] if p.approval else "")

    def _report(self, p: Profile, tampered: bool, detail: str,
                resource: Optional[Resource] = None) -> None:
        rl = ResourceLogs(schema_url=S.SEMCONV_SCHEMA_URL)
        if resource is not None:
            rl.resource.CopyFrom(resource)
        namespace = p.workload.split("/")[1] if p.workload.startswith("k8s/") else ""
        _as_detection(rl, [records.about_profile(tampered, self._facts(p), detail, namespace,
                                                 int(self._clock() * 1e9))])
        self._released.append(rl)

    def drain(self, final: bool) -> list[Batch]:
        """Reports about profiles (tampered, partial) written since the last drain."""
        with self._lock:
            if not self._released:
                return []
            batch = ExportLogsServiceRequest()
            batch.resource_logs.extend(self._released)
            self._released = []
        return [batch]

    # --- for the CLI and tests ---------------------------------------------------------------

    def profile(self, workload: str) -> Optional[Profile]:
        with self._lock:
            return self._profiles.get(workload)

    def workloads(self) -> list[str]:
        with self._lock:
            return sorted(self._profiles)

    def approve(self, workload: str, by: str) -> None:
        """Approve the live profile's current spec (tests; people use ``otelguard profile
        approve`` on the file)."""
        with self._lock:
            p = self._profiles[workload]
            p.approval = (by, self._clock(), content_hash(spec_of(p.spec)))
            p.state, p.tampered, p.dirty = APPROVED, False, True


def _as_detection(rl: ResourceLogs, recs: list[LogRecord]) -> None:
    set_attr(rl.resource.attributes, S.STREAM, S.STREAM_DETECTION, overwrite=True)
    sl = rl.scope_logs.add()
    sl.scope.name = S.SCOPE_PROCESSORS
    sl.scope.version = otelguard.__version__
    sl.log_records.extend(recs)


def create(config: Config) -> ProfilesStage:
    return ProfilesStage(config)
