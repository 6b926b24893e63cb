"""``noise_control``: collapse repeated detections and rate limit them per rule and workload.

Runs after detection (docs/architecture.md#processor-pipeline). Only LogRecords whose
``event_name`` is ``otelguard.security.detection`` are touched; raw events and spans pass
untouched (one string compare per record, ~0.1 µs).

* **Collapse.** Detections with the same key (rule name + workload, or container/host when no
  workload is known + the configured ``key_fields``) within ``window_seconds`` of the first one:
  the first passes at once with ``otelguard.detection.count`` = 1 (alerts are not delayed); the
  repeats are held back as one summary, released when the window closes, carrying the copy of the
  last repeat with ``count`` = number of repeats and ``first_seen``/``last_seen`` (ISO 8601). The
  counts of all emitted records always add up to the detections received (minus rate-limit drops).
* **Rate limit.** A token bucket per (rule, workload): ``rate_per_second`` refill, ``burst``
  capacity. A first-of-window detection without a token is dropped and counted in
  ``otelguard_dropped_total{stage="noise_control",reason="rate_limited"}``; it opens no window, so
  a flood of distinct keys costs no memory. Summaries are not rate limited (at most one per key
  per window).
* **Memory.** At most ``max_keys`` open windows and ``max_buckets`` buckets; the oldest window is
  closed early (its summary released) and the least recently used bucket forgotten when full.

Summaries are appended to the next logs batch that passes through, and released by
:meth:`NoiseControl.drain` (the pipeline's flush timer and shutdown).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Hashable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from otelguard import semconv, telemetry
from otelguard.config import Checks
from otelguard.otlp.messages import PyValue, attrs_dict, get_attr, set_attrs
from otelguard.processors.stage import Batch

TYPE_NAME = "noise_control"

# Workload identity, most specific controller first (resource attributes set by k8s enrichment).
_WORKLOAD_KEYS = (
    semconv.K8S_DEPLOYMENT_NAME, semconv.K8S_STATEFULSET_NAME, semconv.K8S_DAEMONSET_NAME,
    semconv.K8S_CRONJOB_NAME, semconv.K8S_JOB_NAME, semconv.K8S_REPLICASET_NAME,
    semconv.K8S_POD_NAME,
)


@dataclass(frozen=True)
class Config:
    """Defaults: one summary per key per minute; 1 new detection/s per rule+workload, burst 20."""

    window_seconds: float = 60.0  # repeats within this of the first are held as one summary
    # Record attributes that, with the rule and workload, make detections "the same".
    key_fields: tuple[str, ...] = (
        semconv.PROCESS_EXECUTABLE_PATH, semconv.PROCESS_COMMAND_LINE, semconv.FILE_PATH,
        semconv.NETWORK_PEER_ADDRESS, semconv.NETWORK_PEER_PORT, semconv.DNS_QUESTION_NAME,
    )
    rate_per_second: float = 1.0  # token refill per rule+workload
    burst: int = 20  # token bucket capacity
    max_keys: int = 10_000  # open windows; the oldest is closed early when full
    max_buckets: int = 10_000  # rate-limit buckets; the least recently used is forgotten

    def __post_init__(self) -> None:
        checks = Checks()
        for name in ("window_seconds", "rate_per_second"):
            if getattr(self, name) <= 0:
                checks.add(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("burst", "max_keys", "max_buckets"):
            if getattr(self, name) < 1:
                checks.add(name, f"must be >= 1, got {getattr(self, name)}")
        checks.done()


_Key = tuple[str, str, tuple[Hashable, ...]]


class _Window:
    __slots__ = ("opened", "repeats", "first_seen_ns", "last_seen_ns", "last", "resource", "scope")

    def __init__(self, opened: float) -> None:
        self.opened = opened
        self.repeats = 0
        self.first_seen_ns = 0
        self.last_seen_ns = 0
        self.last: Optional[LogRecord] = None
        self.resource: Optional[ResourceLogs] = None
        self.scope: Optional[ScopeLogs] = None


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _hashable(value: PyValue) -> Hashable:
    """``value`` as a hashable key part: lists and maps become (sorted) tuples."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((k, _hashable(v)) for k, v in value.items()), key=_first))
    return value


def _first(pair: tuple[str, Hashable]) -> str:
    return pair[0]


def workload_of(resource_attrs: dict[str, PyValue]) -> str:
    """Workload identity: namespace/controller name, else the container, else the host."""
    namespace = resource_attrs.get(semconv.K8S_NAMESPACE_NAME) or ""
    for key in _WORKLOAD_KEYS:
        value = resource_attrs.get(key)
        if value:
            return f"{namespace!s}/{value!s}"
    for key in (semconv.CONTAINER_ID, semconv.HOST_NAME):
        value = resource_attrs.get(key)
        if value:
            return f"{key}={value!s}"
    return ""


class NoiseControl:
    """The stage; ``clock`` (monotonic seconds) is injectable for tests."""

    type_name = TYPE_NAME

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._windows: OrderedDict[_Key, _Window] = OrderedDict()
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._released: list[_Window] = []
        self._rate_limited = telemetry.dropped.labels(TYPE_NAME, "rate_limited")
        # Cumulative drops (pipeline.ReportsDrops): rate-limited records only; collapsed repeats
        # are not lost, their summary carries them.
        self.dropped_records = 0

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        self._windows.clear()
        self._buckets.clear()

    def process(self, batch: Batch) -> Batch:
        if not isinstance(batch, ExportLogsServiceRequest):
            return batch
        now = self._clock()
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
        self._close_expired(now)
        self._append_released(batch)
        return batch

    def _admit(
        self, rec: LogRecord, rl: ResourceLogs, sl: ScopeLogs, workload: str, now: float
    ) -> bool:
        """True to keep ``rec`` in the batch; False when collapsed or rate limited."""
        rule = get_attr(rec.attributes, semconv.SECURITY_RULE_NAME)
        rule_name = rule if isinstance(rule, str) else ""
        attrs = attrs_dict(rec.attributes)
        key: _Key = (
            rule_name, workload, tuple(_hashable(attrs.get(f)) for f in self.config.key_fields)
        )
        seen_ns = rec.time_unix_nano or rec.observed_time_unix_nano or time.time_ns()
        window = self._windows.get(key)
        if window is not None and now - window.opened < self.config.window_seconds:
            window.repeats += 1
            if window.repeats == 1:
                window.first_seen_ns = seen_ns
            window.last_seen_ns = seen_ns
            if window.last is None:
                window.last, window.resource, window.scope = LogRecord(), ResourceLogs(), ScopeLogs()
                window.resource.resource.CopyFrom(rl.resource)
                window.resource.schema_url = rl.schema_url
                window.scope.scope.CopyFrom(sl.scope)
                window.scope.schema_url = sl.schema_url
            window.last.CopyFrom(rec)
            return False
        if window is not None:  # expired: its summary goes out, the key starts over
            del self._windows[key]
            self._release(window)
        if not self._take_token((rule_name, workload), now):
            self._rate_limited.inc()
            self.dropped_records += 1
            return False
        set_attrs(rec.attributes, {
            semconv.DETECTION_COUNT: 1,
            semconv.DETECTION_FIRST_SEEN: _iso(seen_ns),
            semconv.DETECTION_LAST_SEEN: _iso(seen_ns),
        })
        while len(self._windows) >= self.config.max_keys:
            _, oldest = self._windows.popitem(last=False)
            self._release(oldest)
        self._windows[key] = _Window(now)
        return True

    def _take_token(self, key: tuple[str, str], now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            while len(self._buckets) >= self.config.max_buckets:
                self._buckets.popitem(last=False)
            bucket = _Bucket(float(self.config.burst), now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.config.burst),
                                bucket.tokens + elapsed * self.config.rate_per_second)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _release(self, window: _Window) -> None:
        if window.repeats > 0:
            self._released.append(window)

    def _close_expired(self, now: float, final: bool = False) -> None:
        # Windows are ordered by opening time, so stop at the first one still open.
        while self._windows:
            key, window = next(iter(self._windows.items()))
            if not final and now - window.opened < self.config.window_seconds:
                break
            del self._windows[key]
            self._release(window)

    def _append_released(self, batch: ExportLogsServiceRequest) -> None:
        for window in self._released:
            assert window.last is not None and window.resource is not None
            assert window.scope is not None
            rl = batch.resource_logs.add()
            rl.CopyFrom(window.resource)
            sl = rl.scope_logs.add()
            sl.CopyFrom(window.scope)
            rec = sl.log_records.add()
            rec.CopyFrom(window.last)
            set_attrs(rec.attributes, {
                semconv.DETECTION_COUNT: window.repeats,
                semconv.DETECTION_FIRST_SEEN: _iso(window.first_seen_ns),
                semconv.DETECTION_LAST_SEEN: _iso(window.last_seen_ns),
            }, overwrite=True)
        self._released.clear()

    def drain(self, final: bool) -> list[Batch]:
        """Summaries of windows closed by now (all open windows when ``final``)."""
        self._close_expired(self._clock(), final)
        if not self._released:
            return []
        batch = ExportLogsServiceRequest()
        self._append_released(batch)
        return [batch]

    @property
    def open_windows(self) -> int:
        return len(self._windows)


def create(config: Config) -> NoiseControl:
    return NoiseControl(config)
