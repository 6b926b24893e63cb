"""The ``noise_control`` stage: throttles repeats of one distinct detection, never first sightings.

Runs after detection (docs/architecture.md#noise-control has the full semantics). Only
LogRecords whose ``event_name`` is ``otelguard.security.detection`` are touched; raw events and
spans pass untouched (one string compare per record). A detection that passes costs ~10 µs (its
attribute dict, the key lookup, three attributes set), a suppressed one ~6 µs (one ``CopyFrom``
kept as the stop record's evidence); measured with 1,000-record batches on a loaded 2-core host.

A key is (rule, workload, the ``key_fields`` values); its window opens at its first sighting.
The first ``burst`` sightings pass one by one (the first always: a first-seen detection is never
dropped nor delayed); later ones are suppressed and counted, a throttle-start record goes out at
the first suppressed one and a throttle-stop record with the exact count when the window closes.
CRITICAL or higher detections are never throttled and hold no key. At most ``max_keys`` keys are
held; a new key beyond that closes the oldest early and is reported as a detection.

Everything the stage writes itself leaves through :meth:`NoiseControl.drain` (the pipeline's
flush timer and shutdown), never on a caller's request, so a request whose forward fails cannot
take a held record with it; the service counts what a flush cannot deliver.

With a journal (:meth:`NoiseControl.open_state`, the service's ``state_dir``) every change of held
state is also written to a change set (noise/journal.py) that the service persists before it
acknowledges the request or forwards the records that depend on it; a restart re-emits what was
held (unsettled records, and a stop record with the exact count for every open throttle).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from otelguard import semconv, telemetry
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.noise.config import Config
from otelguard.processors.journal import Journal, JournalWrite, replay
from otelguard.processors.noise.journal import ChangeSet, Recovered, Throttle, encode
from otelguard.processors.noise.keys import Key, describe, is_critical, key_of, workload_of
from otelguard.processors.noise.records import (
    Released, exhausted_record, mark_passed, shell, throttle_record,
)
from otelguard.processors.stage import Batch

TYPE_NAME = "noise_control"

log = logging.getLogger(__name__)


class _Track:
    """One key's window: what passed, what was suppressed, the last suppressed as evidence."""

    __slots__ = ("opened", "passed", "suppressed", "first_ns", "last_ns", "last",
                 "resource", "scope", "tid", "key_text")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.passed = 0
        self.suppressed = 0
        self.tid = 0  # the throttle's journal id, from its first suppressed sighting
        self.key_text = ""
        self.first_ns = 0
        self.last_ns = 0
        self.last: Optional[LogRecord] = None
        self.resource: Optional[ResourceLogs] = None
        self.scope: Optional[ScopeLogs] = None


class NoiseControl:
    """The stage; ``clock`` (monotonic seconds) is injectable for tests."""

    type_name = TYPE_NAME
    logs_only = True
    # marks or deletes detection records in place; throttle records leave through drain()
    changes_only = frozenset({semconv.EV_DETECTION})

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._tracks: OrderedDict[Key, _Track] = OrderedDict()  # in opening order
        self._released: list[Released] = []
        self._evicted = 0
        self._exhaustion_reported: Optional[float] = None
        self._lost = telemetry.dropped.labels(TYPE_NAME, "shutdown_unflushed")
        # log.record.uid -> passed (True) or suppressed and counted (False), latest last
        self._uids: OrderedDict[str, bool] = OrderedDict()
        self._emitted: list[tuple[int, Released]] = []  # (drain number, record) not settled
        self._drains = 0
        self._journal: Optional[Journal] = None
        self._changes = ChangeSet()
        self._next_id = 1
        self.state_version = 0  # bumped by a change a request must not be answered before

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        """Forget held state; whatever was not drained first is counted as lost, unless it is
        in the journal (written now), from which the next start re-emits it."""
        if self._journal is not None:
            self._journal.close(self.journal_write())
            self._journal = None
        else:
            held = self.held_detections + sum(1 for r in self._released if r.count == 0)
            if held:
                self._lost.inc(held)
        self._tracks.clear()
        self._released.clear()
        self._emitted.clear()

    def process(self, batch: Batch) -> Batch:
        if not isinstance(batch, ExportLogsServiceRequest):
            return batch
        now = self._clock()
        self._close_expired(now, final=False)  # a key whose window closed starts over
        for rl in batch.resource_logs:
            workload: Optional[str] = None
            for sl in rl.scope_logs:
                removed: list[int] = []
                for i, rec in enumerate(sl.log_records):
                    if rec.event_name != semconv.EV_DETECTION:
                        continue
                    if workload is None:
                        workload = workload_of(attrs_dict(rl.resource.attributes))
                    if not self._admit(rec, rl, sl, workload, now):
                        removed.append(i)
                for i in reversed(removed):
                    del sl.log_records[i]
        return batch

    def _admit(
        self, rec: LogRecord, rl: ResourceLogs, sl: ScopeLogs, workload: str, now: float
    ) -> bool:
        """True to keep ``rec`` in the batch; False when suppressed (counted in its key)."""
        attrs = attrs_dict(rec.attributes)
        if semconv.NOISE_THROTTLE in attrs:
            return True  # written by a noise control stage already
        seen_ns = rec.time_unix_nano or rec.observed_time_unix_nano or time.time_ns()
        if is_critical(rec, attrs.get(semconv.SECURITY_RULE_PRIORITY)):
            mark_passed(rec, seen_ns)
            return True
        raw_uid = attrs.get(semconv.LOG_RECORD_UID)
        uid = raw_uid if isinstance(raw_uid, str) and raw_uid else None
        if uid is not None and uid in self._uids:
            # A retried request: what passed passes again; what was counted is not counted twice.
            if self._uids[uid]:
                mark_passed(rec, seen_ns)
            return self._uids[uid]
        key = key_of(attrs, workload, self.config.key_fields)
        track = self._tracks.get(key)
        if track is None:
            if len(self._tracks) >= self.config.max_keys:
                self._evict_oldest(key, rl, sl, now)
            track = self._tracks[key] = _Track(now)
        passes = track.passed < self.config.burst
        if passes:
            track.passed += 1
            mark_passed(rec, seen_ns)
        else:
            self._suppress(track, key, rec, rl, sl, seen_ns)
        if uid is not None:
            self._remember(uid, passes)
        return passes

    def _remember(self, uid: str, passed: bool) -> None:
        self._uids[uid] = passed
        while len(self._uids) > self.config.remembered_uids:
            self._uids.popitem(last=False)
        if self._journal is not None:
            (self._changes.passed if passed else self._changes.suppressed).append(uid)
            self.state_version += 1

    def _suppress(self, track: _Track, key: Key, rec: LogRecord, rl: ResourceLogs,
                  sl: ScopeLogs, seen_ns: int) -> None:
        track.suppressed += 1
        track.last_ns = seen_ns
        if track.last is None:  # the throttle starts
            track.first_ns = seen_ns
            track.resource, track.scope = shell(rl, sl)
            track.last = LogRecord()
            track.tid = self._new_id()
            track.key_text = describe(key, self.config.key_fields)
            start = throttle_record(rec, semconv.NOISE_THROTTLE_START, track.key_text, 0,
                                    seen_ns, seen_ns)
            self._add_released(Released(track.resource, track.scope, start))
        track.last.CopyFrom(rec)
        if self._journal is not None:
            self._changes.throttles[track.tid] = self._throttle_of(track)
            self.state_version += 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _add_released(self, item: Released) -> None:
        item.rid = self._new_id()
        self._released.append(item)
        if self._journal is not None:
            self._changes.released.append((item.rid, (item.resource, item.scope, item.record)))

    @staticmethod
    def _throttle_of(track: _Track) -> Throttle:
        assert track.resource is not None and track.scope is not None and track.last is not None
        return Throttle(track.tid, track.key_text, track.suppressed, track.first_ns,
                        track.last_ns, (track.resource, track.scope, track.last))

    def _evict_oldest(self, key: Key, rl: ResourceLogs, sl: ScopeLogs, now: float) -> None:
        """The key space is full: close the oldest key early; at most one detection per window
        says so (every eviction is counted in the next one's body)."""
        old_key, oldest = self._tracks.popitem(last=False)
        self._release(old_key, oldest)
        self._evicted += 1
        last = self._exhaustion_reported
        if last is None or now - last >= self.config.window_seconds:
            self._exhaustion_reported = now
            self._add_released(exhausted_record(
                rl, sl, describe(key, self.config.key_fields), self.config.max_keys,
                self._evicted))

    def _release(self, key: Key, track: _Track) -> None:
        if track.last is None:
            return
        assert track.resource is not None and track.scope is not None
        stop = throttle_record(track.last, semconv.NOISE_THROTTLE_STOP, track.key_text,
                               track.suppressed, track.first_ns, track.last_ns)
        if self._journal is not None:
            self._changes.closed.append(track.tid)
        self._add_released(Released(track.resource, track.scope, stop))

    def _close_expired(self, now: float, final: bool) -> None:
        # Tracks are in opening order, so stop at the first one still open.
        while self._tracks:
            key, track = next(iter(self._tracks.items()))
            if not final and now - track.opened < self.config.window_seconds:
                break
            del self._tracks[key]
            self._release(key, track)

    def drain(self, final: bool) -> list[Batch]:
        """Records written since the last drain and stop records of windows closed by now (of
        every window when ``final``), as one new batch. With a journal they stay in it until
        :meth:`settle` is given this drain's number (``drains`` after the call)."""
        self._drains += 1
        self._close_expired(self._clock(), final)
        if not self._released:
            return []
        if self._journal is not None:
            self._emitted.extend((self._drains, item) for item in self._released)
        batch = ExportLogsServiceRequest()
        for item in self._released:
            rl = batch.resource_logs.add()
            rl.CopyFrom(item.resource)
            sl = rl.scope_logs.add()
            sl.CopyFrom(item.scope)
            sl.log_records.add().CopyFrom(item.record)
        self._released.clear()
        return [batch]

    # --- the journal (pipeline.PersistsState) ------------------------------------------------

    def open_state(self, path: Path, compact_bytes: int) -> None:
        """Open the journal at ``path`` and take over what a previous process held: its
        unsettled records and a stop record (exact count) per open throttle, released for the
        next drain; its remembered uids. Rewrites the journal from that state."""
        journal = Journal(path, compact_bytes)
        recovered = Recovered()
        replay(journal, TYPE_NAME, recovered.apply)
        self._journal = journal
        self._next_id = recovered.max_id + 1
        counted = 0
        for resource, scope, record in recovered.released.values():
            self._add_released(Released(resource, scope, record))
        for t in recovered.throttles.values():
            resource, scope, evidence = t.evidence
            stop = throttle_record(evidence, semconv.NOISE_THROTTLE_STOP, t.key, t.suppressed,
                                   t.first_ns, t.last_ns)
            self._add_released(Released(resource, scope, stop))
            counted += t.suppressed
        for uid, passed in recovered.uids.items():
            self._uids[uid] = passed
        if self._released:
            log.info("%s: re-emitting %d held record(s) (%d open throttle(s), %d suppressed "
                     "detection(s) counted)", path, len(self._released),
                     len(recovered.throttles), counted)
        self._changes = ChangeSet()
        journal.rewrite([self._snapshot()])

    def journal_write(self) -> Optional[JournalWrite]:
        """The change set since the last call as a write to run outside the pipeline's lock
        (or a rewrite of the live state when the journal grew past its compaction size)."""
        if self._journal is None or not self._changes:
            return None
        changes, self._changes = self._changes, ChangeSet()
        return self._journal.write_for(lambda: encode(changes), self._snapshot)

    def settle(self, drains: int) -> None:
        """Records of drains up to ``drains`` were forwarded or counted: the journal forgets
        them (a crash before that is written re-emits them: a duplicate, never a loss)."""
        if self._journal is None:
            return
        keep = [(n, item) for n, item in self._emitted if n > drains]
        self._changes.settled.extend(item.rid for n, item in self._emitted if n <= drains)
        self._emitted = keep

    def _snapshot(self) -> bytes:
        held = [item for _, item in self._emitted] + self._released
        return encode(ChangeSet(
            throttles={t.tid: self._throttle_of(t) for t in self._tracks.values()
                       if t.last is not None},
            released=[(i.rid, (i.resource, i.scope, i.record)) for i in held],
            passed=[u for u, p in self._uids.items() if p],
            suppressed=[u for u, p in self._uids.items() if not p]))

    @property
    def open_windows(self) -> int:
        return len(self._tracks)

    @property
    def held_detections(self) -> int:
        """Received detections that only held state stands for (suppressed, not yet released)."""
        return (sum(t.suppressed for t in self._tracks.values())
                + sum(r.count for r in self._released))

    @property
    def keys_evicted(self) -> int:
        return self._evicted


def create(config: Config) -> NoiseControl:
    return NoiseControl(config)
