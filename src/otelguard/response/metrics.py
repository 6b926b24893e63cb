"""The response unit's metrics (docs/architecture.md#metrics). Labels are policy names (a
bounded, configured set) and fixed words."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from otelguard import semconv
from otelguard.telemetry import REGISTRY

transitions = Counter(semconv.METRIC_RESPONSE_TRANSITIONS, "Response request transitions made "
                      "by this process, by policy and the state moved to (Proposed, Approved, "
                      "Rejected, Expired, Executing, Done, Failed, Reverted).", ["policy", "to"],
                      registry=REGISTRY)
suppressed = Counter(semconv.METRIC_RESPONSE_SUPPRESSED, "Matches that made no request, by "
                     "policy and reason: protected_namespace, duplicate (an open or done request "
                     "for the same target), rate_limit (max_per_hour), plan_failed, "
                     "unknown_action, queue_full.", ["policy", "reason"], registry=REGISTRY)
audit_seq = Gauge(semconv.METRIC_RESPONSE_AUDIT_SEQ, "The audit chain's last seq this process "
                  "shipped: a chain read back that ends before it was cut.", ["chain"],
                  registry=REGISTRY)
pending = Gauge(semconv.METRIC_RESPONSE_PENDING, "Requests proposed and waiting for a decision.",
                registry=REGISTRY)
