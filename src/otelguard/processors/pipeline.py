"""Runs the configured stages in order on one OTLP batch; the same object serves ``otelguard run``
(in-process, no serialisation) and the processor service.

Each stage call is wrapped here, not inside the stage: timing into
``telemetry.pipeline_latency{stage}``, records in/out and failures into processors.metrics, and
error catching. A stage that raises is logged and counted, and the batch goes on *as it entered
that stage* (``restore_on_failure``: a ``CopyFrom`` snapshot before each stage, ~3-5 µs per
record of the agent's shape per stage with upb; turn it off to trade that guarantee for speed).
A stage that says how little it changes gets a cheaper restore (stage.py): ``additive`` (only
sets absent attributes) none, ``appends_only`` (adds Resource groups at the end, changes nothing
already there: falco_rules, incidents) the count of Resource groups, cut back to on failure,
``changes_only`` (event names: changes or deletes only those records, within their scopes:
noise_control) copies of the scopes holding them, ``logs_only`` (returns a traces batch as it
came) none for traces. The pipeline never raises from :meth:`Pipeline.process`.

Stages that hold records back (noise_control's throttle records) may implement
:class:`HoldsRecords`; :meth:`Pipeline.flush` (called on a timer by the service) and
:meth:`Pipeline.shutdown` drain them and run what they release through the stages after them.
Stages whose held state must survive a crash implement :class:`PersistsState`: the service opens
their journals in its state directory and calls :meth:`Pipeline.persist` before it acknowledges
a request that changed held state or forwards what a flush released; a journaled stage that
also releases held records into a caller's batch (k8s_attributes) implements
:class:`ReleasesIntoRequests`, and the service calls :meth:`Pipeline.settle_request` once that
batch was forwarded or its loss counted.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence, runtime_checkable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv, telemetry
from otelguard.processors import metrics, registry
from otelguard.processors.config import ProcessorSpec
from otelguard.processors.journal import JournalWrite
from otelguard.otlp.messages import count_records
from otelguard.processors.stage import Batch, Stage

log = logging.getLogger(__name__)

_LOG_EVERY_SECONDS = 10.0


@runtime_checkable
class HoldsRecords(Protocol):
    """A stage that keeps records between batches and releases them later."""

    def drain(self, final: bool) -> list[Batch]:
        """Records due now (all of them when ``final``), as new batches."""
        ...


@runtime_checkable
class PersistsState(Protocol):
    """A stage that keeps held state in a journal (noise_control). ``state_version`` grows with
    every change a request must not be acknowledged before; ``journal_write`` hands over the
    changes since the last call; ``settle(n)`` says the records of its first ``n`` drains were
    forwarded or counted (each :meth:`Pipeline.flush` drains every stage once)."""

    state_version: int

    def open_state(self, path: Path, compact_bytes: int) -> None: ...

    def journal_write(self) -> Optional[JournalWrite]: ...

    def settle(self, drains: int) -> None: ...


@runtime_checkable
class ReleasesIntoRequests(Protocol):
    """A journaled stage that puts held records into the batch of a later request. Right after
    its ``process()`` the pipeline takes the ids of the held records it put there; they stay in
    its journal until ``settle_request_releases(ids)`` (that request's forward finished)."""

    def take_request_releases(self) -> list[int]: ...

    def settle_request_releases(self, rids: list[int]) -> None: ...


@runtime_checkable
class Reconfigurable(Protocol):
    """A stage whose config can change while it runs (falco_rules). ``prepare(config)`` does the
    whole load off to the side, raising on any problem with nothing changed; the function it
    returns makes the new config live and must not fail (the pipeline calls it between
    batches). Stages without it keep their config until a restart."""

    def prepare(self, config: Any) -> Callable[[], None]: ...


@dataclass
class Reconfiguration:
    """What :meth:`Pipeline.reconfigure` did: stages given their new config, and the changes
    it could not make live (they keep the running value until a restart)."""

    applied: list[str]
    needs_restart: list[str]


@dataclass
class PipelineResult:
    """The processed batch; ``records_dropped`` is what OTLP partial success reports.

    ``records_removed`` is the net decrease per stage (held or throttled records included);
    ``records_dropped`` only counts records stages dropped for good, read from the optional
    cumulative ``dropped_records: int`` attribute a stage may expose (see :class:`ReportsDrops`).
    """

    batch: Batch
    records_in: int
    records_out: int
    records_removed: int
    failed_stages: tuple[str, ...] = ()
    records_dropped: int = 0
    records_released: int = 0  # records held from earlier batches put into this one
    state_changed: bool = False  # a journaled stage's held state changed: persist() before OK
    # (stage, ids) of held records released into this batch: Pipeline.settle_request() after
    # the forward finished (delivered or counted)
    request_releases: tuple[tuple[ReleasesIntoRequests, list[int]], ...] = ()


class ReportsDrops(Protocol):
    """A stage that drops records for good keeps a running total here (besides counting them in
    ``telemetry.dropped``); the pipeline turns the per-batch increase into partial success."""

    dropped_records: int


class ReleasesRecords(Protocol):
    """A stage that puts records it held from earlier batches (whose callers were answered)
    into the batch it processes keeps a running total here; the service counts them as dropped
    when that batch's forward fails, since that batch's caller retries only its own records."""

    released_records: int


class _Slot:
    """One stage with its pre-bound metric children (label lookups cost more than the inc)."""

    def __init__(self, name: str, stage: Stage) -> None:
        self.name = name
        self.stage = stage
        self.latency = telemetry.pipeline_latency.labels(name)
        self.records_in = metrics.stage_records_in.labels(name)
        self.records_out = metrics.stage_records_out.labels(name)
        self.failures = metrics.stage_failures.labels(name)
        self.last_error_log = 0.0
        # An additive stage only sets attributes that were absent: whatever it did before an
        # exception leaves a valid batch, so no snapshot is taken (~1.5 us/record saved).
        self.additive = bool(getattr(stage, "additive", False))
        # Appends only: the restore is cutting the Resource groups back to their count before
        # (stage.py); logs only: a traces batch passes it untouched, so nothing to restore.
        self.appends_only = bool(getattr(stage, "appends_only", False))
        self.logs_only = bool(getattr(stage, "logs_only", False))
        # changes only records of these events, in place or by deleting them (noise_control's
        # detections): the restore copies only the scopes that hold such records
        self.changes_only: frozenset[str] = frozenset(getattr(stage, "changes_only", ()))
        self.releases: Optional[ReleasesIntoRequests] = None  # set once its journal is open
        self.config: Any = None  # the config it was created with (from_specs), or last given


def _groups(batch: Batch) -> Any:
    """The batch's top-level Resource groups (ResourceLogs or ResourceSpans)."""
    return batch.resource_logs if isinstance(batch, ExportLogsServiceRequest) \
        else batch.resource_spans


class _Restore:
    """What puts a batch back as it entered a stage that failed, taken before the stage: as
    little as the stage's declarations allow (stage.py), else a copy of the whole batch."""

    __slots__ = ("copy", "groups", "scopes")

    def __init__(self, slot: _Slot, batch: Batch) -> None:
        self.copy: Optional[Batch] = None
        self.groups = -1  # the Resource groups to cut back to
        self.scopes: list[tuple[int, int, Any]] = []  # (group, scope, its copy)
        logs = isinstance(batch, ExportLogsServiceRequest)
        if slot.additive or (slot.logs_only and not logs):
            return
        if slot.appends_only or (slot.changes_only and logs):
            self.groups = len(_groups(batch))
        if slot.changes_only and logs:
            wanted = slot.changes_only
            for i, rl in enumerate(batch.resource_logs):
                for j, sl in enumerate(rl.scope_logs):
                    for rec in sl.log_records:
                        if rec.event_name in wanted:
                            saved = type(sl)()
                            saved.CopyFrom(sl)
                            self.scopes.append((i, j, saved))
                            break
        elif not slot.appends_only:
            self.copy = type(batch)()
            self.copy.CopyFrom(batch)

    def apply(self, batch: Batch) -> Batch:
        if self.copy is not None:
            return self.copy
        if self.groups >= 0:
            del _groups(batch)[self.groups:]
        for i, j, saved in self.scopes:
            batch.resource_logs[i].scope_logs[j].CopyFrom(saved)
        return batch


class Pipeline:
    """Stages in order. ``start()`` before the first batch, ``shutdown()`` flushes held records."""

    def __init__(
        self, stages: Sequence[tuple[str, Stage]], restore_on_failure: bool = True
    ) -> None:
        names = [name for name, _ in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be distinct: {names}")
        self._slots = [_Slot(name, stage) for name, stage in stages]
        self._restore = restore_on_failure
        self._lock = threading.Lock()
        self._io_lock = threading.Lock()  # journal writes in the order they were handed over
        self._started = False
        self._journaled: list[PersistsState] = []
        self.flushes = 0  # flush() calls so far: what settle() is given
        # held records a later stage released into a flushed batch: settled with that flush
        self._flush_releases: list[tuple[int, PipelineResult]] = []

    @classmethod
    def from_specs(
        cls, specs: Iterable[ProcessorSpec], restore_on_failure: bool = True
    ) -> Pipeline:
        """Create each configured stage through the registry (RegistryError names the bad one)."""
        specs = list(specs)
        pipeline = cls(
            [(spec.name, registry.create(spec.type, spec.config)) for spec in specs],
            restore_on_failure,
        )
        for slot, spec in zip(pipeline._slots, specs):
            slot.config = spec.config
        return pipeline

    def reconfigure(self, specs: Sequence[ProcessorSpec]) -> Reconfiguration:
        """Give running stages their config from ``specs`` (docs/architecture.md#live-reload).

        Every :class:`Reconfigurable` stage named in ``specs`` with the same type is prepared
        (rules re-read even when its config is unchanged: their files may have changed); any
        exception leaves every stage as it was and propagates. Then all of them commit at once
        under the batch lock, so no batch sees half the change. Stages added, removed,
        reordered or retyped, and changed configs of other stages, are reported as needing a
        restart and keep running as they are."""
        slots = {slot.name: slot for slot in self._slots}
        running = [(slot.name, slot.stage.type_name) for slot in self._slots]
        wanted = [(spec.name, spec.type) for spec in specs]
        restart: list[str] = []
        if wanted != running:
            restart.append("processors: stages " + ", ".join(f"{n} ({t})" for n, t in wanted)
                           + " instead of " + ", ".join(f"{n} ({t})" for n, t in running))
        commits: list[tuple[_Slot, Any, Callable[[], None]]] = []
        for spec in specs:
            slot = slots.get(spec.name)
            if slot is None or slot.stage.type_name != spec.type:
                continue
            if isinstance(slot.stage, Reconfigurable):
                commits.append((slot, spec.config, slot.stage.prepare(spec.config)))
            elif slot.config is not None and spec.config != slot.config:
                restart.append(f"processors.{spec.name}.config")
        with self._lock:
            for slot, config, commit in commits:
                commit()
                slot.config = config
        return Reconfiguration([slot.name for slot, _, _ in commits], restart)

    @property
    def stage_names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    def stages(self) -> list[tuple[str, Stage]]:
        """(name, stage) in order, for callers that read a stage's state (receiver/health.py)."""
        return [(slot.name, slot.stage) for slot in self._slots]

    def start(self) -> None:
        """Start stages in order; if one fails, the ones already started are shut down."""
        started: list[_Slot] = []
        for slot in self._slots:
            try:
                slot.stage.start()
            except Exception:
                for done in reversed(started):
                    self._shutdown_one(done)
                raise
            started.append(slot)
        self._started = True

    def process(self, batch: Batch) -> PipelineResult:
        """Run every stage on ``batch``; never raises."""
        with self._lock:
            return self._run(batch, self._slots)

    def _run(self, batch: Batch, slots: Sequence[_Slot]) -> PipelineResult:
        first_in = count_records(batch)
        n = first_in
        removed = 0
        dropped = 0
        released = 0
        changed = False
        failed: list[str] = []
        releases: list[tuple[ReleasesIntoRequests, list[int]]] = []
        for slot in slots:
            version = getattr(slot.stage, "state_version", 0)
            drops_before = getattr(slot.stage, "dropped_records", 0)
            released_before = getattr(slot.stage, "released_records", 0)
            restore = _Restore(slot, batch) if self._restore else None
            slot.records_in.inc(n)
            t0 = time.perf_counter()
            try:
                out = slot.stage.process(batch)
            except Exception:
                self._take_releases(slot, releases)
                slot.latency.observe(time.perf_counter() - t0)
                slot.failures.inc()
                failed.append(slot.name)
                self._log_failure(slot)
                if restore is not None:
                    batch = restore.apply(batch)
                slot.records_out.inc(n)
                continue
            slot.latency.observe(time.perf_counter() - t0)
            self._take_releases(slot, releases)
            if out is None or type(out) is not type(batch):
                # A stage broke the contract; treat as a failure, keep the batch flowing.
                slot.failures.inc()
                failed.append(slot.name)
                self._log_failure(slot, f"returned {type(out).__name__}")
                if restore is not None:
                    batch = restore.apply(batch)
                slot.records_out.inc(n)
                continue
            batch = out
            changed = changed or getattr(slot.stage, "state_version", 0) != version
            drops_after = getattr(slot.stage, "dropped_records", 0)
            if isinstance(drops_after, int) and isinstance(drops_before, int):
                dropped += max(0, drops_after - drops_before)
            released_after = getattr(slot.stage, "released_records", 0)
            if isinstance(released_after, int) and isinstance(released_before, int):
                released += max(0, released_after - released_before)
            m = count_records(batch)
            slot.records_out.inc(m)
            if m < n:
                removed += n - m
            n = m
        return PipelineResult(batch, first_in, n, removed, tuple(failed), dropped, released,
                              changed, tuple(releases))

    @staticmethod
    def _take_releases(slot: _Slot,
                       into: list[tuple[ReleasesIntoRequests, list[int]]]) -> None:
        if slot.releases is not None:
            rids = slot.releases.take_request_releases()
            if rids:
                into.append((slot.releases, rids))

    def _log_failure(self, slot: _Slot, what: str = "raised") -> None:
        now = time.monotonic()
        if now - slot.last_error_log >= _LOG_EVERY_SECONDS:
            slot.last_error_log = now
            log.warning("stage %s %s; batch passed through unchanged (logged at most every "
                        "%.0fs, all counted in %s)", slot.name, what, _LOG_EVERY_SECONDS,
                        semconv.METRIC_PROC_STAGE_FAILURES, exc_info=(what == "raised"))

    def flush(self, final: bool = False) -> list[Batch]:
        """Records held by stages that are due (all when ``final``), run through later stages."""
        out: list[Batch] = []
        with self._lock:
            self.flushes += 1
            for i, slot in enumerate(self._slots):
                stage = slot.stage
                if not isinstance(stage, HoldsRecords):
                    continue
                try:
                    released = stage.drain(final)
                except Exception:
                    slot.failures.inc()
                    self._log_failure(slot, "failed to drain")
                    continue
                for batch in released:
                    if count_records(batch) == 0:
                        continue
                    result = self._run(batch, self._slots[i + 1:])
                    if result.request_releases:
                        self._flush_releases.append((self.flushes, result))
                    if result.records_out:
                        out.append(result.batch)
        return out

    def open_state(self, state_dir: Path, compact_bytes: int) -> None:
        """Open a journal per :class:`PersistsState` stage (``<state_dir>/<stage name>.journal``)
        and let it take over what the previous process left there. Before ``start()``."""
        for slot in self._slots:
            if isinstance(slot.stage, PersistsState):
                slot.stage.open_state(state_dir / f"{slot.name}.journal", compact_bytes)
                self._journaled.append(slot.stage)
                if isinstance(slot.stage, ReleasesIntoRequests):
                    slot.releases = slot.stage

    @property
    def journaled(self) -> bool:
        return bool(self._journaled)

    def persist(self) -> None:
        """Make every journaled change so far durable (blocks on fsync: call it on a worker
        thread). Concurrent callers share the writes: a caller returns only once the changes
        handed over before it are on disk."""
        if not self._journaled:
            return
        with self._io_lock:
            with self._lock:
                writes = [w for w in (s.journal_write() for s in self._journaled) if w]
            for write in writes:
                write.run()

    def settle(self, flushes: int) -> None:
        """What the first ``flushes`` flushes released was forwarded or counted."""
        with self._lock:
            for stage in self._journaled:
                stage.settle(flushes)
            for n, result in self._flush_releases:
                if n <= flushes:
                    self._settle_releases(result)
            self._flush_releases = [(n, r) for n, r in self._flush_releases if n > flushes]

    def settle_request(self, result: PipelineResult) -> None:
        """The held records released into ``result``'s batch were forwarded, or their loss was
        counted: their journals may forget them (written with the next persist)."""
        if result.request_releases:
            with self._lock:
                self._settle_releases(result)

    @staticmethod
    def _settle_releases(result: PipelineResult) -> None:
        for stage, rids in result.request_releases:
            stage.settle_request_releases(rids)

    def shutdown(self) -> list[Batch]:
        """Drain held records (returned for forwarding), then shut stages down in reverse."""
        flushed = self.flush(final=True) if self._started else []
        for slot in reversed(self._slots):
            self._shutdown_one(slot)
        self._started = False
        return flushed

    def _shutdown_one(self, slot: _Slot) -> None:
        try:
            slot.stage.shutdown()
        except Exception:
            slot.failures.inc()
            log.warning("stage %s failed to shut down", slot.name, exc_info=True)

