"""Detections as Falco's JSON alerts: ``falco-json:PATH|-`` and ``falcosidekick:URL``.

So falcosidekick (Slack, PagerDuty, Elasticsearch ...) and Falco Talon consume otelguard
unchanged. One alert per detection record (``otelguard.security.detection``); other records
(events, incidents, spans) have no Falco form and are left out. The alert, as Falco writes it
with ``json_output: true`` (docs/falco.md has the field-by-field account):

- ``hostname``: the Resource's ``host.name``, else ``k8s.node.name``, else this host's name;
- ``output``: ``<evt.time>: <Priority> <rendered rule output>``, the event time as Falco's
  ``%evt.time`` prints it (local ``HH:MM:SS.nnnnnnnnn``);
- ``priority``: Falco's spelling (``Warning``, ``Informational`` ...);
- ``rule``, ``source`` (``syscall``), ``tags`` (sorted, as Falco keeps them in a set);
- ``time``: the event time in UTC, RFC 3339 with nanoseconds (``2026-12-02T13:24:41.123456789Z``);
- ``output_fields``: the rule's output fields by Falco name with their values
  (``otelguard.security_rule.output_fields``), numbers as numbers, missing values null, plus
  ``evt.time`` as integer nanoseconds (Falco prefixes every output with ``%evt.time``, so it is
  always there; falcosidekick refuses an alert whose ``output_fields`` is empty).

Falco writes no ``uuid`` (falcosidekick assigns one on receipt), so neither does this.

``falco-json`` appends one alert per line to PATH (``-``: stdout), through
:class:`~otelguard.transport.jsonlines.JsonLinesTransport`'s file handling. ``falcosidekick``
POSTs each alert alone as ``application/json`` to the URL, as Falco's ``http_output`` does. An
alert the receiver refuses for good (HTTP 4xx) is reported as an OTLP-style partial-success
rejection, so the caller counts exactly the refused alerts as dropped; a retryable failure
(connection refused, 429/5xx) fails the request for the caller to retry, and alerts already
accepted are remembered (their ``log.record.uid``, last 4096) so a retry does not send them twice.
Cost: ~30 µs per alert (JSON encoding); nothing per non-detection record beyond the scan.
"""

from __future__ import annotations

import collections
import json
import socket
import time
from typing import Any, Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as sc
from otelguard.otlp.messages import PyValue, attrs_dict, body_text
from otelguard.transport.contract import (
    EXPORT_TIMEOUT_S, ExportResult, LogsPayload, TracesPayload, as_logs,
)
from otelguard.transport.controls import json_safe
from otelguard.transport.otlp_http import HttpClient
from otelguard.transport.security import ClientTls

SOURCE = "syscall"
EVT_TIME = "evt.time"
SENT_MEMORY = 4096  # log.record.uid of alerts a falcosidekick accepted, kept against re-sends


def falco_priority(word: str) -> str:
    """``WARNING`` -> ``Warning``: Falco's spelling of its priorities in alerts."""
    return word.strip().capitalize() or "Warning"


def rfc3339_ns(ns: int) -> str:
    """UTC, nanoseconds, ``Z``: Falco's ``time``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + \
        f".{ns % 1_000_000_000:09d}Z"


def evt_time_text(ns: int, clock: Callable[[float], time.struct_time] = time.localtime) -> str:
    """Falco's ``%evt.time``: ``HH:MM:SS.nnnnnnnnn`` in local time."""
    return time.strftime("%H:%M:%S", clock(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}"


def falco_alert(resource: dict[str, PyValue], rec: LogRecord, default_host: str,
                clock: Callable[[float], time.struct_time] = time.localtime) -> dict[str, Any]:
    """The Falco JSON alert of one detection record (pure; keys in Falco's order)."""
    attrs = attrs_dict(rec.attributes)
    ns = rec.time_unix_nano or rec.observed_time_unix_nano
    priority = falco_priority(str(attrs.get(sc.SECURITY_RULE_PRIORITY) or rec.severity_text))
    raw_fields = attrs.get(sc.SECURITY_RULE_OUTPUT_FIELDS)
    fields: dict[str, PyValue] = dict(raw_fields) if isinstance(raw_fields, dict) else {}
    fields[EVT_TIME] = ns
    raw_tags = attrs.get(sc.SECURITY_RULE_TAGS)
    host = resource.get(sc.HOST_NAME) or resource.get(sc.K8S_NODE_NAME) or default_host
    return {
        "hostname": str(host),
        "output": f"{evt_time_text(ns, clock)}: {priority} {body_text(rec) or ''}",
        "priority": priority,
        "rule": str(attrs.get(sc.SECURITY_RULE_NAME) or ""),
        "source": SOURCE,
        "tags": sorted({str(t) for t in raw_tags}) if isinstance(raw_tags, list) else [],
        "time": rfc3339_ns(ns),
        "output_fields": {k: fields[k] for k in sorted(fields)},
    }


def falco_alerts(req: ExportLogsServiceRequest, default_host: str,
                 clock: Callable[[float], time.struct_time] = time.localtime,
                 ) -> list[tuple[str, dict[str, Any]]]:
    """``(log.record.uid, alert)`` of every detection record of a request, in order."""
    out: list[tuple[str, dict[str, Any]]] = []
    for rl in req.resource_logs:
        res: Optional[dict[str, PyValue]] = None
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                if rec.event_name != sc.EV_DETECTION:
                    continue
                if res is None:
                    res = attrs_dict(rl.resource.attributes)
                uid = next((kv.value.string_value for kv in rec.attributes
                            if kv.key == sc.LOG_RECORD_UID), "")
                out.append((uid, falco_alert(res, rec, default_host, clock)))
    return out


def alert_json(alert: dict[str, Any]) -> str:
    """One alert as one line of JSON (UTF-8 kept; line breakers and terminal controls
    escaped, transport/controls.py)."""
    return json_safe(json.dumps(alert, ensure_ascii=False, separators=(",", ":")))


def falco_lines(default_host: str) -> Callable[[ExportLogsServiceRequest], tuple[str, int]]:
    """The ``falco-json`` encoder for JsonLinesTransport: (lines, alerts)."""

    def encode(req: ExportLogsServiceRequest) -> tuple[str, int]:
        alerts = falco_alerts(req, default_host)
        return "".join(alert_json(a) + "\n" for _uid, a in alerts), len(alerts)

    return encode


def falco_json_transport(path: str) -> Any:
    from otelguard.transport.jsonlines import JsonLinesTransport

    return JsonLinesTransport(path, encode=falco_lines(socket.gethostname()), kind="falco-json",
                              traces=False)


class FalcosidekickTransport:
    """POSTs each detection as a Falco alert to a falcosidekick (or any Falco ``http_output``
    receiver); see the module doc for retries and counting."""

    def __init__(self, url: str, timeout_s: float = EXPORT_TIMEOUT_S, *, tls: ClientTls,
                 where: str = "exporter", hostname: Optional[str] = None) -> None:
        self._http = HttpClient(url, timeout_s, tls=tls, where=where, kind="falcosidekick")
        self.name = self._http.name
        self._path = self._http.base_path or "/"
        self._host = hostname or socket.gethostname()
        self._sent: collections.OrderedDict[str, None] = collections.OrderedDict()

    def export_logs(self, req: LogsPayload) -> ExportResult:
        rejected, errors = 0, []
        for uid, alert in falco_alerts(as_logs(req), self._host):
            if uid and uid in self._sent:
                continue  # accepted before a retryable failure of the same request
            answer = self._http.send(self._path, alert_json(alert).encode(), "application/json")
            if isinstance(answer, ExportResult):
                return answer
            if 200 <= answer.status < 300:
                self._remember(uid)
                continue
            failure = self._http.failure(self._path, answer)
            if failure.keep:
                return failure
            rejected += 1  # refused for good: counted by the caller as a rejection
            errors.append(failure.error)
        return ExportResult.success(rejected=rejected, error="; ".join(errors[:3]))

    def _remember(self, uid: str) -> None:
        if not uid:
            return
        self._sent[uid] = None
        if len(self._sent) > SENT_MEMORY:
            self._sent.popitem(last=False)

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return ExportResult.success()

    def shutdown(self) -> None:
        self._http.shutdown()
