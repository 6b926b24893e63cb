"""ConsoleTransport: one readable line per LogRecord, detections highlighted.

For people watching ``otelguard run``: time, event name, container/pod (short), process, and
the few attributes that say what happened (path, peer, DNS name, error). Detections
(``otelguard.security.detection``) lead with their priority and rule name, coloured when the
stream is a terminal. Incidents (``otelguard.incident``, docs/incidents.md) print as a box
around their story, each version (opened, changed, closed), the border coloured by severity. Spans are not printed (their records already were). Works on OTLP only,
so the processor service can use it too. Cost: ~10-20 µs per line; not for bulk output.

Every value taken from a record (process name, paths, bodies, rule names, even the Resource)
goes through :func:`~otelguard.transport.controls.visible`: a process named or run with a
newline or an ANSI sequence prints as one line with the characters escaped, never as a forged
line or a repainted terminal. The only escape sequences written are the detection colours and
the status line's erase (transport/terminal.py).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Optional

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as sc
from otelguard.otlp.messages import PyValue, attrs_dict, body_text
from otelguard.transport.contract import ExportResult, LogsPayload, TracesPayload, as_logs
from otelguard.transport.controls import visible
from otelguard.transport.terminal import Terminal, is_live

# what to show after the process, in order, when present
_DETAIL_KEYS = (
    sc.FILE_PATH, sc.FILE_TARGET_PATH, sc.FILE_OPEN_FLAGS, sc.DNS_QUESTION_NAME,
    sc.NETWORK_PEER_ADDRESS, sc.NETWORK_PEER_PORT, sc.NETWORK_LOCAL_PORT, sc.PTRACE_REQUEST,
    sc.CAPABILITY, sc.MEMFD_NAME, sc.MODULE_NAME, sc.MOUNT_TARGET, sc.ERROR_TYPE,
)
_COLOURS = {"EMERGENCY": "1;41", "ALERT": "1;41", "CRITICAL": "1;31", "ERROR": "31",
            "WARNING": "33", "NOTICE": "36", "INFORMATIONAL": "32", "DEBUG": "2"}
_EVENT_PREFIX = "otelguard."
_ALERTS = frozenset({sc.EV_DETECTION, sc.EV_INCIDENT})


def _short(value: PyValue, n: int) -> str:
    return visible(str(value)[:n]) if value not in (None, "") else "-"


def _text(value: PyValue) -> str:
    return visible(", ".join(map(str, value)) if isinstance(value, list) else str(value))


def render_record(resource: dict[str, PyValue], rec: LogRecord, colour: bool = False) -> str:
    """The console line of one record (pure: tests call it directly)."""
    attrs = attrs_dict(rec.attributes)
    ts = rec.time_unix_nano or rec.observed_time_unix_nano
    clock = time.strftime("%H:%M:%S", time.localtime(ts / 1e9)) + f".{ts // 1_000_000 % 1000:03d}"
    where = _where(resource)
    pid = attrs.get(sc.PROCESS_PID)
    proc = _short(attrs.get(sc.PROCESS_EXECUTABLE_NAME), 24) + (
        f"[{_text(pid)}]" if pid not in (None, "") else "")
    if rec.event_name == sc.EV_INCIDENT:
        return render_incident(attrs, body_text(rec) or "", colour)
    if rec.event_name == sc.EV_DETECTION:
        priority = str(attrs.get(sc.SECURITY_RULE_PRIORITY) or rec.severity_text or "WARNING").upper()
        rule = _short(attrs.get(sc.SECURITY_RULE_NAME), 80)
        tactic = attrs.get(sc.THREAT_TACTIC_NAME)
        head = f"!! {visible(priority)} {rule}"
        if colour:
            head = f"\x1b[{_COLOURS.get(priority, '1;33')}m{head}\x1b[0m"
        tail = f" [{_text(tactic)}]" if isinstance(tactic, list) and tactic else ""
        return f"{clock} {head} {where} {proc}: {_text(body_text(rec) or '')}{tail}"
    name = _text(rec.event_name.removeprefix(_EVENT_PREFIX)) if rec.event_name else "-"
    details = " ".join(f"{k.rsplit('.', 1)[-1] if k != sc.FILE_PATH else 'path'}={_text(attrs[k])}"
                       for k in _DETAIL_KEYS if attrs.get(k) not in (None, ""))
    return f"{clock} {name:<24} {where} {proc} {details}".rstrip()


BOX_WIDTH = 100


def render_incident(attrs: dict[str, PyValue], story: str, colour: bool = False) -> str:
    """An incident version as a box around its story (pure; ``otelguard incidents`` uses it
    too). Lines longer than the box wrap; every line goes through ``visible``."""
    severity = visible(str(attrs.get(sc.INCIDENT_SEVERITY) or "WARNING"))
    head = (f" INCIDENT {severity} v{_text(attrs.get(sc.INCIDENT_VERSION) or 0)} "
            f"{_text(attrs.get(sc.INCIDENT_STATUS) or 'open')} "
            f"({_text(attrs.get(sc.INCIDENT_NARRATOR) or 'template')}) ")
    inner = BOX_WIDTH - 4
    rows: list[str] = []
    for raw in story.splitlines() or [""]:
        line = visible(raw)
        hang = " " * min(inner // 2, len(line) - len(line.lstrip(" ")) + 2)  # continuation
        while len(line) > inner:
            cut = line.rfind(" ", len(hang) + 1, inner)
            cut = cut if cut > len(hang) else inner
            rows.append(line[:cut])
            line = hang + line[cut:].lstrip(" ")
        rows.append(line)
    top = "┌─" + head + "─" * max(0, BOX_WIDTH - 3 - len(head)) + "┐"
    bottom = "└" + "─" * (BOX_WIDTH - 2) + "┘"
    edge = "│"
    if colour:
        code = _COLOURS.get(severity.upper(), "1;33")
        top, bottom, edge = (f"\x1b[{code}m{x}\x1b[0m" for x in (top, bottom, edge))
    body = [f"{edge} {r:<{inner}} {edge}" for r in rows]
    return "\n".join([top, *body, bottom])


def _where(resource: dict[str, PyValue]) -> str:
    pod_name = resource.get(sc.K8S_POD_NAME)
    ns = resource.get(sc.K8S_NAMESPACE_NAME)
    cid = resource.get(sc.CONTAINER_ID)
    if pod_name:
        return visible(f"{ns!s}/{pod_name!s}" if ns else str(pod_name))
    if cid:
        pod = resource.get(sc.K8S_POD_UID)
        return visible(f"ctr={str(cid)[:12]}" + (f" pod={str(pod)[:8]}" if pod else ""))
    return "host"


class ConsoleTransport:
    name = "console"

    def __init__(self, stream: Optional[IO[str]] = None, colour: Optional[bool] = None,
                 detections_only: bool = False) -> None:
        self._stream = stream or sys.stdout
        self._colour = self._stream.isatty() if colour is None else colour
        # only detections and incidents (``otelguard run`` without --events)
        self.detections_only = detections_only
        # shared with ``otelguard run``'s status line (otelguard/status.py)
        self.terminal = Terminal(self._stream, is_live(self._stream))

    def export_logs(self, req: LogsPayload) -> ExportResult:
        lines = []
        for rl in as_logs(req).resource_logs:
            res = attrs_dict(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    if self.detections_only and rec.event_name not in _ALERTS:
                        continue
                    lines.append(render_record(res, rec, self._colour))
        if lines:
            try:
                self.terminal.write("\n".join(lines) + "\n")
            except (OSError, ValueError) as exc:
                return ExportResult.failure(f"console: {exc}", "io_error", False)
        return ExportResult.success()

    def export_traces(self, req: TracesPayload) -> ExportResult:
        return ExportResult.success()

    def shutdown(self) -> None:
        self.terminal.clear()
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass
