"""The processor service's own metrics, in the shared registry (served by telemetry.serve).

Labels are low-cardinality by construction: ``signal`` (logs|traces), ``protocol`` (grpc|http),
``outcome`` (ok or a refusal reason), ``stage`` (the configured stage name), ``exporter`` (the
configured export spec's kind and index, never a URL). Drops themselves go to
``telemetry.dropped{stage,reason}``; these counters say where records went and how requests ended.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from otelguard import semconv
from otelguard.telemetry import REGISTRY

requests = Counter(
    semconv.METRIC_PROC_REQUESTS, "Export requests answered, by signal, protocol and outcome.",
    ["signal", "protocol", "outcome"], registry=REGISTRY,
)
records_received = Counter(
    semconv.METRIC_PROC_RECEIVED, "Records in parsed export requests, by signal and protocol.",
    ["signal", "protocol"], registry=REGISTRY,
)
records_forwarded = Counter(
    semconv.METRIC_PROC_FORWARDED, "Records accepted by the next hop, by signal and exporter.",
    ["signal", "exporter"], registry=REGISTRY,
)
forward_retries = Counter(
    semconv.METRIC_PROC_FORWARD_RETRIES, "Retried export attempts to the next hop.",
    ["exporter"], registry=REGISTRY,
)
forward_failures = Counter(
    semconv.METRIC_PROC_FORWARD_FAILURES,
    "Export calls that failed for good (after retries, or not retryable), by reason.",
    ["exporter", "reason"], registry=REGISTRY,
)
stage_records_in = Counter(
    semconv.METRIC_PROC_STAGE_IN, "Records entering a pipeline stage.", ["stage"],
    registry=REGISTRY,
)
stage_records_out = Counter(
    semconv.METRIC_PROC_STAGE_OUT, "Records leaving a pipeline stage.", ["stage"],
    registry=REGISTRY,
)
stage_failures = Counter(
    semconv.METRIC_PROC_STAGE_FAILURES,
    "Batches on which a stage raised; the batch went on unchanged.", ["stage"],
    registry=REGISTRY,
)
inflight_requests = Gauge(
    semconv.METRIC_PROC_INFLIGHT_REQUESTS, "Export requests being processed or forwarded now.",
    registry=REGISTRY,
)
inflight_bytes = Gauge(
    semconv.METRIC_PROC_INFLIGHT_BYTES, "Bytes of export requests held in memory now.",
    registry=REGISTRY,
)
request_latency = Histogram(
    semconv.METRIC_PROC_REQUEST_LATENCY,
    "Time from a request's arrival to its answer (pipeline and forwarding).", ["signal"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
    registry=REGISTRY,
)
config_reloads = Counter(
    semconv.METRIC_CONFIG_RELOADS,
    "Reloads of rules or config, by component (rules|config) and result (success|failure).",
    ["component", "result"], registry=REGISTRY,
)
config_last_reload_success = Gauge(
    semconv.METRIC_CONFIG_LAST_RELOAD_SUCCESS,
    "Unix time of the last successful load (the start-up load included), by component.",
    ["component"], registry=REGISTRY,
)
rules_loaded = Gauge(
    semconv.METRIC_RULES_LOADED,
    "Rules in effect per rules stage; revision is the loaded files' content hash.",
    ["stage", "revision"], registry=REGISTRY,
)
exceptions_expired = Gauge(
    semconv.METRIC_POLICY_EXCEPTIONS_EXPIRED,
    "Exceptions of the loaded policy tree past their expiry date (not applied; docs/policy.md).",
    registry=REGISTRY,
)
