"""The risk stage's metrics (docs/architecture.md#metrics). ``workload`` is a label here, unlike
every other otelguard metric: the issue's surface is a gauge per workload. It is bounded by
the stage's ``max_workloads`` and removed when a workload is forgotten."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from otelguard import semconv
from otelguard.telemetry import REGISTRY

findings = Gauge(semconv.METRIC_RISK_FINDINGS, "Risk findings per workload, by analyser, kind "
                 "(package, vulnerability, ...), state (executed, loaded, installed-only, ...) "
                 "and severity.", ["workload", "analyser", "kind", "state", "severity"],
                 registry=REGISTRY)
workloads = Gauge(semconv.METRIC_RISK_WORKLOADS, "Workloads the risk stage holds state for.",
                  registry=REGISTRY)
dropped = Counter(semconv.METRIC_RISK_DROPPED, "Observations or findings a risk analyser could "
                  "not keep, by analyser and reason (pending_full, packages_full, no_root, "
                  "workloads_full, ...).", ["analyser", "reason"], registry=REGISTRY)
