"""Per-output filters: ``min_priority`` and rule tags, as Falco and falcosidekick have them.

Written after an output spec: ``console?min_priority=warning``,
``jsonl:/var/log/og.jsonl?min_priority=error&tags=container,mitre_execution``,
``falcosidekick:http://sidekick:2801?min_priority=notice&exclude_tags=network``.

A filtered output carries alerts only: detections (``otelguard.security_rule.priority``) and
incidents (``otelguard.incident.severity``) at or above ``min_priority`` (Falco's order:
emergency > alert > critical > error > warning > notice > informational > debug; Falco's
abbreviations ``info``, ``warn`` ... accepted), whose rule has one of ``tags`` (when given) and
none of ``exclude_tags``. Raw events and spans have no priority and do not pass a filter.
Records a filter holds back are not drops (the operator asked for it): they are not counted in
``otelguard_dropped_total``. Cost: one attribute scan per record.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as sc
from otelguard.otlp.messages import attrs_dict
from otelguard.transport.contract import (
    ExportResult, LogsPayload, SpecError, TracesPayload, Transport, as_logs,
)

# Falco's priorities, most severe first (the index is the order; lower is more severe)
FALCO_PRIORITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
                    "INFORMATIONAL", "DEBUG")
_ABBREVIATIONS = {"INFO": "INFORMATIONAL", "WARN": "WARNING", "EMERG": "EMERGENCY",
                  "CRIT": "CRITICAL", "ERR": "ERROR"}
# what may follow ``?`` in an output spec
OPTIONS = ("min_priority", "tags", "exclude_tags", "insecure")


def priority_rank(text: str) -> Optional[int]:
    """The rank of a Falco priority word (any case, abbreviations allowed); None if unknown."""
    key = text.strip().upper()
    key = _ABBREVIATIONS.get(key, key)
    return FALCO_PRIORITIES.index(key) if key in FALCO_PRIORITIES else None


@dataclass(frozen=True)
class RecordFilter:
    min_priority: Optional[str] = None  # Falco priority name, upper case
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.min_priority or self.tags or self.exclude_tags)

    def passes(self, rec: LogRecord) -> bool:
        if rec.event_name not in (sc.EV_DETECTION, sc.EV_INCIDENT):
            return False
        attrs = attrs_dict(rec.attributes)
        if self.min_priority:
            word = attrs.get(sc.SECURITY_RULE_PRIORITY) or attrs.get(sc.INCIDENT_SEVERITY) \
                or rec.severity_text
            rank = priority_rank(str(word or ""))
            if rank is None or rank > FALCO_PRIORITIES.index(self.min_priority):
                return False
        if self.tags or self.exclude_tags:
            raw = attrs.get(sc.SECURITY_RULE_TAGS)
            tags = {str(t) for t in raw} if isinstance(raw, list) else set()
            if self.tags and not tags.intersection(self.tags):
                return False
            if tags.intersection(self.exclude_tags):
                return False
        return True

    def apply(self, req: ExportLogsServiceRequest) -> ExportLogsServiceRequest:
        """A new request holding the records that pass (Resources and scopes kept as they are,
        empty ones left out)."""
        out = ExportLogsServiceRequest()
        for rl in req.resource_logs:
            kept_rl = None
            for sl in rl.scope_logs:
                kept = [r for r in sl.log_records if self.passes(r)]
                if not kept:
                    continue
                if kept_rl is None:
                    kept_rl = out.resource_logs.add()
                    kept_rl.resource.CopyFrom(rl.resource)
                    kept_rl.schema_url = rl.schema_url
                ksl = kept_rl.scope_logs.add()
                ksl.scope.CopyFrom(sl.scope)
                ksl.schema_url = sl.schema_url
                ksl.log_records.extend(kept)
        return out


@dataclass(frozen=True)
class OutputOptions:
    """What follows ``?`` in an output spec."""

    filter: RecordFilter = RecordFilter()
    insecure: bool = False  # network outputs: plaintext to this endpoint, explicitly


def split_options(spec: str) -> tuple[str, OutputOptions]:
    """``(spec without the options, options)``; unknown options and bad values raise
    :class:`SpecError` naming the accepted ones. A URL that needs its own query string cannot
    be given (everything after the last ``?`` is read as options)."""
    base, sep, query = spec.rpartition("?")
    if not sep:
        return spec, OutputOptions()
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise SpecError(f"output {spec!r}: options after '?' must be KEY=VALUE joined by '&' "
                        f"(known: {', '.join(OPTIONS)})") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key not in OPTIONS:
            raise SpecError(f"output {spec!r}: unknown option {key!r} (known: "
                            f"{', '.join(OPTIONS)})")
        values[key] = value
    min_priority = None
    if "min_priority" in values:
        rank = priority_rank(values["min_priority"])
        if rank is None:
            raise SpecError(f"output {spec!r}: min_priority {values['min_priority']!r} is not a "
                            f"Falco priority ({', '.join(p.lower() for p in FALCO_PRIORITIES)})")
        min_priority = FALCO_PRIORITIES[rank]
    insecure = values.get("insecure", "false").lower()
    if insecure not in ("true", "false"):
        raise SpecError(f"output {spec!r}: insecure must be true or false")

    def _tags(key: str) -> tuple[str, ...]:
        return tuple(t for t in (x.strip() for x in values.get(key, "").split(",")) if t)

    return base, OutputOptions(RecordFilter(min_priority, _tags("tags"), _tags("exclude_tags")),
                               insecure == "true")


class FilteredTransport:
    """Sends only the records that pass ``record_filter`` (logs) to ``inner``; spans never pass.
    What is held back counts as delivered: it was not lost, it was not wanted."""

    def __init__(self, inner: Transport, record_filter: RecordFilter) -> None:
        self.inner = inner
        self.filter = record_filter
        self.name = inner.name

    def export_logs(self, req: LogsPayload) -> ExportResult:
        kept = self.filter.apply(as_logs(req))
        if not kept.resource_logs:
            return ExportResult.success()
        return self.inner.export_logs(kept)

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return ExportResult.success()

    def shutdown(self) -> None:
        self.inner.shutdown()
