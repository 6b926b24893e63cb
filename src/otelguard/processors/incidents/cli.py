"""``otelguard incidents --loki URL [--since 1h] [--id ID]``: incidents straight from a real
Loki (docs/incidents.md#reading-incidents-from-loki).

Asks ``/loki/api/v1/query_range`` for the ``otelguard_stream="incident"`` stream, keeps the
highest ``otelguard.incident.version`` of each incident, and lists them (worst first); with
``--id`` (a prefix is enough) prints that incident's story as a box and resolves its evidence:
each cited ``log.record.uid`` is looked up in the event and detection streams and shown as a
table (found or not, time, stream, what it is). Loki returns record attributes as structured
metadata with ``.`` written ``_``; string arrays come back as JSON text. Exit codes: 0, 1 (no
such incident), 2 (Loki unreachable or refused the query).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from otelguard import semconv as S
from otelguard.config import parse_duration
from otelguard.transport.console import render_incident
from otelguard.transport.controls import visible

_ORDER = {"CRITICAL": 0, "ERROR": 1, "WARNING": 2, "NOTICE": 3}
_SHOWN = (S.INCIDENT_ID, S.INCIDENT_VERSION, S.INCIDENT_STATUS, S.INCIDENT_SEVERITY,
          S.INCIDENT_TITLE, S.INCIDENT_FIRST_SEEN, S.INCIDENT_LAST_SEEN, S.INCIDENT_WORKLOAD,
          S.INCIDENT_TECHNIQUES, S.INCIDENT_EVIDENCE, S.INCIDENT_NARRATOR,
          S.INCIDENT_LINK_TRACE, S.INCIDENT_LINK_LOGS, S.INCIDENT_EVENTS, S.INCIDENT_DETECTIONS)


_TRACE_ID = re.compile(r"[0-9a-f]{32}")  # evidence lists step uids, then trace ids


class LokiError(Exception):
    pass


def loki_key(key: str) -> str:
    return key.replace(".", "_")


def query_range(base: str, logql: str, since_s: float, limit: int = 5000,
                timeout: float = 30.0) -> list[tuple[dict[str, str], str, int]]:
    """(labels incl. structured metadata, line, time ns) of every entry, newest first."""
    now = time.time_ns()
    q = urllib.parse.urlencode({"query": logql, "start": str(now - int(since_s * 1e9)),
                                "end": str(now + int(60e9)), "limit": str(limit),
                                "direction": "backward"})
    url = f"{base.rstrip('/')}/loki/api/v1/query_range?{q}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise LokiError(f"{url}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise LokiError(f"{base}: {exc}") from None
    if body.get("status") != "success":
        raise LokiError(f"{base}: query {logql!r} failed: {body}")
    return [(dict(s["stream"]), v[1], int(v[0])) for s in body["data"]["result"]
            for v in s["values"]]


def _value(text: str) -> Any:
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def incidents(base: str, since_s: float, wanted: Optional[str] = None) -> list[tuple[dict[str, Any], str]]:
    """The latest version of each incident: (attributes by semconv key, story)."""
    latest: dict[str, tuple[int, dict[str, Any], str]] = {}
    for labels, line, _ in query_range(base, '{otelguard_stream="incident"}', since_s):
        attrs = {k: _value(labels[loki_key(k)]) for k in _SHOWN if loki_key(k) in labels}
        iid = str(attrs.get(S.INCIDENT_ID, ""))
        if not iid or (wanted and not iid.startswith(wanted)):
            continue
        try:
            version = int(attrs.get(S.INCIDENT_VERSION, 0))
        except ValueError:
            version = 0
        if iid not in latest or latest[iid][0] < version:
            latest[iid] = (version, attrs, line)
    return sorted(((a, line) for _, a, line in latest.values()),
                  key=lambda x: (_ORDER.get(str(x[0].get(S.INCIDENT_SEVERITY)), 9),
                                 str(x[0].get(S.INCIDENT_LAST_SEEN))))


def evidence_rows(base: str, uids: list[str], since_s: float) -> list[list[str]]:
    """One row per cited uid: whether Loki has it, and what it is."""
    rows = []
    for i, uid in enumerate(uids, 1):
        q = f'{{otelguard_stream=~"event|detection"}} | log_record_uid="{uid}"'
        found = query_range(base, q, since_s, limit=1)
        if not found:
            rows.append([f"E{i}", uid, "MISSING", "", "", ""])
            continue
        labels, line, ts = found[0]
        what = labels.get(loki_key(S.SECURITY_RULE_NAME)) or labels.get("event_name", "")
        rows.append([f"E{i}", uid, "found", time.strftime("%H:%M:%S", time.gmtime(ts / 1e9)),
                     labels.get("otelguard_stream", ""), f"{what}: {line}"[:70]])
    return rows


def table(rows: list[list[str]], head: list[str]) -> str:
    cells = [head] + [[visible(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def main(args: argparse.Namespace) -> int:
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        print(f"otelguard incidents: --since: {exc}", file=sys.stderr)
        return 2
    try:
        found = incidents(args.loki, since, args.id)
        if args.id is None:
            rows = [[str(a.get(S.INCIDENT_ID, ""))[:8], str(a.get(S.INCIDENT_SEVERITY, "")),
                     str(a.get(S.INCIDENT_STATUS, "")), f"v{a.get(S.INCIDENT_VERSION, '?')}",
                     str(a.get(S.INCIDENT_LAST_SEEN, ""))[:19],
                     ",".join(a.get(S.INCIDENT_TECHNIQUES) or []),
                     str(a.get(S.INCIDENT_TITLE, ""))[:80]] for a, _ in found]
            print(table(rows, ["ID", "SEVERITY", "STATUS", "VER", "LAST SEEN (UTC)",
                               "TECHNIQUES", "TITLE"]))
            print(f"{len(found)} incident(s) in the last {args.since}")
            return 0
        if not found:
            print(f"otelguard incidents: no incident {args.id!r} in the last {args.since}",
                  file=sys.stderr)
            return 1
        for attrs, story in found:
            print(render_incident(attrs, story, colour=sys.stdout.isatty()))
            uids = [str(u) for u in attrs.get(S.INCIDENT_EVIDENCE) or []
                    if not _TRACE_ID.fullmatch(str(u))]
            print("Evidence in Loki:")
            print(table(evidence_rows(args.loki, uids, since),
                        ["ID", "LOG.RECORD.UID", "IN LOKI", "TIME", "STREAM", "RECORD"]))
            for key in (S.INCIDENT_LINK_TRACE, S.INCIDENT_LINK_LOGS):
                if attrs.get(key):
                    print(f"{key}: {visible(str(attrs[key]))}")
        return 0
    except LokiError as exc:
        print(f"otelguard incidents: {exc}", file=sys.stderr)
        return 2

