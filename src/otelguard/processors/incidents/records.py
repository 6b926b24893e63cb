"""The incident record: one OTel LogRecord per incident version.

``event_name`` ``otelguard.incident``, under a copy of the first detection's Resource marked
``otelguard.stream=incident`` (its own Loki stream and Collector route), scope
``otelguard.processors``; severity after chaining; the body is the story; ``trace_id`` is the
first step's. Attributes: docs/architecture.md#incident-records. ``log.record.uid`` derives from
the incident id and version, so a version re-emitted after a restart is recognisably the same;
:func:`fingerprint` makes sure it is also word for word the same (one uid, one content).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, SeverityNumber

import otelguard
from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs
from otelguard.processors.incidents.config import LinksConfig
from otelguard.processors.incidents.incident import Incident, record_uid
from otelguard.processors.incidents.templates import Story, iso


def links(inc: Incident, config: LinksConfig) -> dict[str, str]:
    uids = "|".join(u for s in inc.steps for u in (s.uid, s.trigger_uid) if u)
    trace = next((s.trace_id for s in inc.ordered_steps() if s.trace_id), "")
    out = {}
    for key, template in ((S.INCIDENT_LINK_LOGS, config.logs),
                          (S.INCIDENT_LINK_TRACE, config.trace if trace else "")):
        if template:
            out[key] = template.replace("{id}", inc.id).replace("{trace_id}", trace) \
                .replace("{uids}", uids)
    return out


def incident_record(inc: Incident, story: Story, config: LinksConfig) -> ResourceLogs:
    number, word, raised = inc.severity()
    rl = ResourceLogs(schema_url=S.SEMCONV_SCHEMA_URL)
    res = {k: v for k, v in inc.resource.items() if k != S.STREAM}
    res[S.STREAM] = S.STREAM_INCIDENT
    set_attrs(rl.resource.attributes, res)
    sl = rl.scope_logs.add()
    sl.scope.name = S.SCOPE_PROCESSORS
    sl.scope.version = otelguard.__version__
    rec = sl.log_records.add()
    rec.time_unix_nano = inc.last_ns or time.time_ns()
    rec.observed_time_unix_nano = time.time_ns()
    rec.severity_number = SeverityNumber.ValueType(number)
    rec.severity_text = word
    rec.event_name = S.EV_INCIDENT
    rec.body.string_value = story.text
    first = next((s for s in inc.ordered_steps() if s.trace_id), None)
    if first is not None:
        rec.trace_id = bytes.fromhex(first.trace_id)
    narration = inc.narration
    attrs: dict[str, Any] = {
        S.INCIDENT_ID: inc.id, S.INCIDENT_VERSION: inc.version, S.INCIDENT_STATUS: inc.status,
        S.INCIDENT_SEVERITY: word, S.INCIDENT_SEVERITY_REASON: raised or None,
        S.INCIDENT_TITLE: story.title, S.INCIDENT_FIRST_SEEN: iso(inc.first_ns),
        S.INCIDENT_LAST_SEEN: iso(inc.last_ns), S.INCIDENT_WORKLOAD: inc.workload,
        S.INCIDENT_NODE: inc.place.node or inc.place.host or None,
        S.INCIDENT_TECHNIQUES: inc.techniques() or None,
        S.INCIDENT_TACTICS: inc.tactics() or None, S.INCIDENT_EVIDENCE: inc.evidence(),
        S.INCIDENT_EVENTS: inc.events, S.INCIDENT_DETECTIONS: inc.detections,
        S.INCIDENT_STEPS: len(inc.steps),
        S.INCIDENT_NARRATOR: narration.result if narration else "template",
        S.INCIDENT_NARRATOR_DETAIL: (narration.detail or None) if narration else None,
        S.LOG_RECORD_UID: record_uid(inc.id, inc.version),
    }
    attrs.update(links(inc, config))
    set_attrs(rec.attributes, attrs)
    return rl


def fingerprint(rl: ResourceLogs) -> str:
    """A digest of what an incident record says (everything but its observed time): a version
    is re-emitted under its uid only while the incident still tells it the same."""
    rec = rl.scope_logs[0].log_records[0]
    observed = rec.observed_time_unix_nano
    rec.observed_time_unix_nano = 0
    digest = hashlib.blake2b(rl.SerializeToString(deterministic=True), digest_size=16).hexdigest()
    rec.observed_time_unix_nano = observed
    return digest
