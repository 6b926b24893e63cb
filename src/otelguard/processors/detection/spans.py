"""Detections as spans: one zero-length span per detection, a child of the trigger's process span.

Why: detections are log records (Loki), but a trace in Jaeger should say that it holds one, and
Jaeger can only search what it stores: span attributes. The trigger's process span cannot carry
the detection itself, because it has usually left for Jaeger before (a process span is exported
when the process exits) or travels in another request (the agent sends logs and spans separately).
So the processor service adds a span of its own to the same trace: name ``detection <rule>``,
``parent_span_id`` = the trigger's span, start = end = the trigger's time, the detection record's
attributes (``security_rule.*``, evidence, ``log.record.uid`` of the detection) and its Resource.
Searching Jaeger by ``security_rule.name`` then finds the process-tree trace.

Where: :meth:`ProcessorService.handle` calls :func:`detection_spans` on the logs batch the
pipeline produced and forwards the result as a traces request to the same next hops. Cost: one
resource-attribute lookup per ResourceLogs of the batch; detections only beyond that. Detection
records without a valid trace id (16 bytes) and span id (8 bytes) get no span. Throttle records
noise_control releases on the flush timer get none either: the detections that passed made theirs.
"""

from __future__ import annotations

import hashlib
from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otelguard import semconv as S
from otelguard.otlp.messages import get_attr


def span_name(rule: object) -> str:
    return f"detection {rule}" if isinstance(rule, str) and rule else "detection"


def detection_spans(batch: ExportLogsServiceRequest) -> Optional[ExportTraceServiceRequest]:
    """A traces request with one span per detection in ``batch``; None when there is none."""
    out: Optional[ExportTraceServiceRequest] = None
    for rl in batch.resource_logs:
        if get_attr(rl.resource.attributes, S.STREAM) != S.STREAM_DETECTION:
            continue
        for sl in rl.scope_logs:
            spans = [rec for rec in sl.log_records if rec.event_name == S.EV_DETECTION
                     and len(rec.trace_id) == 16 and len(rec.span_id) == 8]
            if not spans:
                continue
            if out is None:
                out = ExportTraceServiceRequest()
            rs = out.resource_spans.add()
            rs.resource.CopyFrom(rl.resource)
            rs.schema_url = rl.schema_url
            ss = rs.scope_spans.add()
            ss.scope.CopyFrom(sl.scope)
            for rec in spans:
                uid = get_attr(rec.attributes, S.LOG_RECORD_UID)
                seed = (uid if isinstance(uid, str) and uid else rec.SerializeToString(deterministic=True))
                span = ss.spans.add()
                span.trace_id = rec.trace_id
                span.parent_span_id = rec.span_id
                # deterministic: a retried request yields the same span, not a second one
                span.span_id = hashlib.blake2b(seed.encode() if isinstance(seed, str) else seed,
                                               digest_size=8).digest()
                span.name = span_name(get_attr(rec.attributes, S.SECURITY_RULE_NAME))
                span.kind = Span.SPAN_KIND_INTERNAL
                span.start_time_unix_nano = rec.time_unix_nano or rec.observed_time_unix_nano
                span.end_time_unix_nano = span.start_time_unix_nano
                span.attributes.extend(rec.attributes)
    return out
