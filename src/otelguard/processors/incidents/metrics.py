"""The incidents stage's metrics (docs/architecture.md#metrics). Labels are fixed words."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from otelguard import semconv
from otelguard.telemetry import REGISTRY

records = Counter(semconv.METRIC_INCIDENT_RECORDS, "Incident records written, by reason: "
                  "opened (version 1), changed (a later version), closed (the last version), "
                  "reemitted (a journaled version sent again after a restart).", ["reason"],
                  registry=REGISTRY)
open_incidents = Gauge(semconv.METRIC_INCIDENTS_OPEN, "Incidents open now.", registry=REGISTRY)
narrations = Counter(semconv.METRIC_INCIDENT_NARRATIONS, "Narrator answers, by result: llm "
                     "(used), rejected (the validator found an ungrounded claim), timeout, "
                     "error (HTTP or connection), malformed (not the JSON asked for), busy "
                     "(queue full: told by template only).", ["result"], registry=REGISTRY)
risk_facts_dropped = Counter(semconv.METRIC_INCIDENT_RISK_FACTS_DROPPED, "Risk finding records "
                             "the incidents stage forgot to stay bounded, by reason: "
                             "workloads_full, facts_full (docs/incidents.md#risk-facts).",
                             ["reason"], registry=REGISTRY)
