"""The profiles stage's metrics (docs/architecture.md#metrics). Labels are fixed words: state,
list (allowed, quarantined), reason, kind, op; never workloads, paths or addresses."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from otelguard import semconv
from otelguard.telemetry import REGISTRY

profiles = Gauge(semconv.METRIC_PROFILES, "Workload profiles held, by state (tampered: approved "
                 "but not matching its hash, not enforced).", ["state"], registry=REGISTRY)
entries = Gauge(semconv.METRIC_PROFILE_ENTRIES, "Entries over all profiles, allowed or "
                "quarantined (listed for review).", ["list"], registry=REGISTRY)
overflow = Counter(semconv.METRIC_PROFILE_OVERFLOW, "Observations not kept by learning: "
                   "entries (a kind's bound), bucket_growth (new entries per bucket), profiles "
                   "(max_profiles reached, the workload is not profiled).", ["reason"],
                   registry=REGISTRY)
anomalies = Counter(semconv.METRIC_PROFILE_ANOMALIES, "Deviations from approved profiles, by "
                    "kind.", ["kind"], registry=REGISTRY)
excepted = Counter(semconv.METRIC_PROFILE_EXCEPTED, "Deviations from approved profiles that an "
                   "unexpired ProfileException of the policy tree covered (not reported), by "
                   "kind.", ["kind"], registry=REGISTRY)
file_errors = Counter(semconv.METRIC_PROFILE_FILE_ERRORS, "Profile files (or WorkloadProfile "
                      "objects) that could not be read (load) or written (save).", ["op"],
                      registry=REGISTRY)
