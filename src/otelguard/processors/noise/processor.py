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
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from otelguard import semconv, telemetry
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.noise.config import Config
from otelguard.processors.noise.keys import Key, describe, is_critical, key_of, workload_of
from otelguard.processors.noise.records import (
    Released, exhausted_record, mark_passed, shell, throttle_record,
)
from otelguard.processors.stage import Batch

TYPE_NAME = "noise_control"


class _Track:
    """One key's window: what passed, what was suppressed, the last suppressed as evidence."""

    __slots__ = ("opened", "passed", "passed_uids", "suppressed", "first_ns", "last_ns", "last",
                 "resource", "scope")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.passed = 0
        self.passed_uids: set[str] = set()
        self.suppressed = 0
        self.first_ns = 0
        self.last_ns = 0
        self.last: Optional[LogRecord] = None
        self.resource: Optional[ResourceLogs] = None
        self.scope: Optional[ScopeLogs] = None


class NoiseControl:
    """The stage; ``clock`` (monotonic seconds) is injectable for tests."""

    type_name = TYPE_NAME

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._tracks: OrderedDict[Key, _Track] = OrderedDict()  # in opening order
        self._released: list[Released] = []
        self._evicted = 0
        self._exhaustion_reported: Optional[float] = None
        self._lost = telemetry.dropped.labels(TYPE_NAME, "shutdown_unflushed")

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        """Forget held state; whatever was not drained first is counted as lost."""
        held = self.held_detections + sum(1 for r in self._released if r.count == 0)
        if held:
            self._lost.inc(held)
        self._tracks.clear()
        self._released.clear()

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
        key = key_of(attrs, workload, self.config.key_fields)
        track = self._tracks.get(key)
        if track is None:
            if len(self._tracks) >= self.config.max_keys:
                self._evict_oldest(key, rl, sl, now)
            track = self._tracks[key] = _Track(now)
        uid = attrs.get(semconv.LOG_RECORD_UID)
        if isinstance(uid, str) and uid in track.passed_uids:
            mark_passed(rec, seen_ns)  # a retried request: it passed before, it passes again
            return True
        if track.passed < self.config.burst:
            track.passed += 1
            if isinstance(uid, str):
                track.passed_uids.add(uid)
            mark_passed(rec, seen_ns)
            return True
        self._suppress(track, key, rec, rl, sl, seen_ns)
        return False

    def _suppress(self, track: _Track, key: Key, rec: LogRecord, rl: ResourceLogs,
                  sl: ScopeLogs, seen_ns: int) -> None:
        track.suppressed += 1
        track.last_ns = seen_ns
        if track.last is None:  # the throttle starts
            track.first_ns = seen_ns
            track.resource, track.scope = shell(rl, sl)
            track.last = LogRecord()
            start = throttle_record(rec, semconv.NOISE_THROTTLE_START,
                                    describe(key, self.config.key_fields), 0, seen_ns, seen_ns)
            self._released.append(Released(track.resource, track.scope, start))
        track.last.CopyFrom(rec)

    def _evict_oldest(self, key: Key, rl: ResourceLogs, sl: ScopeLogs, now: float) -> None:
        """The key space is full: close the oldest key early; at most one detection per window
        says so (every eviction is counted in the next one's body)."""
        old_key, oldest = self._tracks.popitem(last=False)
        self._release(old_key, oldest)
        self._evicted += 1
        last = self._exhaustion_reported
        if last is None or now - last >= self.config.window_seconds:
            self._exhaustion_reported = now
            self._released.append(exhausted_record(
                rl, sl, describe(key, self.config.key_fields), self.config.max_keys,
                self._evicted))

    def _release(self, key: Key, track: _Track) -> None:
        if track.last is None:
            return
        assert track.resource is not None and track.scope is not None
        stop = throttle_record(track.last, semconv.NOISE_THROTTLE_STOP,
                               describe(key, self.config.key_fields), track.suppressed,
                               track.first_ns, track.last_ns)
        self._released.append(Released(track.resource, track.scope, stop))

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
        every window when ``final``), as one new batch."""
        self._close_expired(self._clock(), final)
        if not self._released:
            return []
        batch = ExportLogsServiceRequest()
        for item in self._released:
            rl = batch.resource_logs.add()
            rl.CopyFrom(item.resource)
            sl = rl.scope_logs.add()
            sl.CopyFrom(item.scope)
            sl.log_records.add().CopyFrom(item.record)
        self._released.clear()
        return [batch]

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
