"""otelguard's own metrics, shared by the agent and the processors (Prometheus naming), and the
health endpoints served beside them.

One registry per process. Stages never create label values from pods, pids, IPs or paths.
``dropped`` is the one place every drop is counted, by stage and reason, so nothing is lost
silently: the exit summary of ``otelguard run`` and ``/metrics`` both read it.

The process's own log lines go through :func:`configure_logging` (``--log-level``,
``--log-format text|json``), so the same fields come out of every role.

The metrics port also answers ``/healthz`` (the process serves HTTP: a liveness probe that costs
nothing) and ``/readyz`` (the checks the process registered with :func:`set_readiness`; 503 with
a JSON body naming each failing check). docs/architecture.md#health says what each role checks.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import socket
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable, Optional, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from otelguard import semconv

REGISTRY = CollectorRegistry(auto_describe=True)

events = Counter(
    semconv.METRIC_EVENTS, "Security events captured, by event name.", ["event_name"],
    registry=REGISTRY,
)
detections = Counter(
    semconv.METRIC_DETECTIONS, "Detections emitted, by rule and context.",
    ["rule", "priority", "tactic", "k8s_namespace_name", "workload"], registry=REGISTRY,
)
dropped = Counter(
    semconv.METRIC_DROPPED,
    "Records or events dropped, by stage (kernel_ring, user_queue, export, spool, enrichment, "
    "receive, forward, pipeline) and reason.",
    ["stage", "reason"], registry=REGISTRY,
)
export_failures = Counter(
    semconv.METRIC_EXPORT_FAILURES,
    "Sends to the next hop that failed after their retries, by stage (export, output) and reason; "
    "what they carried was spooled or, if the reason is final, dropped (see otelguard_dropped).",
    ["stage", "reason"], registry=REGISTRY,
)
program_cache = Counter(
    semconv.METRIC_PROGRAM_CACHE,
    "BPF program loads by result: hit (loaded from the program cache, no compiler), miss "
    "(compiled and cached), fallback (a cached image was unusable and was recompiled), off (cache "
    "disabled), write_failed (compiled but the image could not be stored).",
    ["result"], registry=REGISTRY,
)
pipeline_latency = Histogram(
    semconv.METRIC_PIPELINE_LATENCY, "Time a batch spends in a pipeline stage.", ["stage"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)



def watch_spool(requests: Callable[[], int], size: Callable[[], int]) -> None:
    """The agent's disk spool as gauges read at scrape time: requests the next hop has not taken
    yet are not lost, but an operator must see them pile up (call once per process)."""
    Gauge(semconv.METRIC_SPOOL_REQUESTS, "OTLP requests waiting in the agent's disk spool for "
          "the next hop to take them.", registry=REGISTRY).set_function(lambda: float(requests()))
    Gauge(semconv.METRIC_SPOOL_BYTES, "Bytes of the OTLP requests waiting in the agent's disk "
          "spool (bounded by --spool-max-bytes).", registry=REGISTRY).set_function(
              lambda: float(size()))


@dataclass(frozen=True)
class Check:
    """One readiness condition: ``detail`` says why it fails (or what it saw when it passes).
    ``warn``: passing, but worth an operator's look (a failed reload while the old rules run)."""

    name: str
    ok: bool
    detail: str = ""
    warn: bool = False


Readiness = Callable[[], Sequence[Check]]

HEALTHZ_BODY = b'{"status": "alive"}'


def readiness_response(checks: Iterable[Check]) -> tuple[int, bytes]:
    """``/readyz``: 200 when every check passes, else 503; the JSON body lists every check and
    names the failing ones under ``failing`` and passing ones that warn under ``warnings``."""
    listed = list(checks)
    failing = [c.name for c in listed if not c.ok]
    warnings = [c.name for c in listed if c.ok and c.warn]
    status = "not ready" if failing else "ready"
    if warnings:
        status += " (warnings: " + ", ".join(warnings) + ")"
    body = {
        "status": status,
        "failing": failing,
        "warnings": warnings,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in listed],
    }
    return (503 if failing else 200), json.dumps(body, sort_keys=True).encode()


_server_lock = threading.Lock()
_server_port: Optional[int] = None
_readiness: Optional[Readiness] = None


def set_readiness(checks: Optional[Readiness]) -> None:
    """What ``/readyz`` on the metrics port answers; until set, it is 503 ("starting")."""
    global _readiness
    _readiness = checks


def _current_readiness() -> tuple[int, bytes]:
    checks = _readiness
    if checks is None:
        return readiness_response([Check("started", False, "the process is starting")])
    try:
        return readiness_response(checks())
    except Exception as exc:  # a broken check must answer 503, never kill the server thread
        return readiness_response([Check("checks", False, f"{type(exc).__name__}: {exc}")])


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes come every few seconds; access logs of them are noise."""


def _app(metrics: Callable[..., Any]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            status, body = (200, HEALTHZ_BODY) if path == "/healthz" else _current_readiness()
            start_response("200 OK" if status == 200 else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        return metrics(environ, start_response)

    return app


def serve(host: str, port: int) -> int:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on host:port (port 0 picks a free one)
    from a daemon thread; returns the bound port."""
    global _server_port
    with _server_lock:
        if _server_port is not None:
            return _server_port

        # The address family the name resolves to first (as prometheus_client's own server).
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

        class Server(_Server):
            address_family = family

        httpd = make_server(str(sockaddr[0]), port, _app(make_wsgi_app(REGISTRY)), Server,
                            handler_class=_QuietHandler)
        threading.Thread(target=httpd.serve_forever, name="otelguard-metrics",
                         daemon=True).start()
        _server_port = int(httpd.server_address[1])
        return _server_port


def metrics_unavailable(address: str, exc: OSError) -> str:
    """The one line for a /metrics address that cannot be bound (the usual cause: a second
    otelguard on the same host)."""
    fix = ("another process (a second otelguard?) has it: pass --metrics HOST:PORT with a free "
           "port, or stop the other one" if exc.errno == errno.EADDRINUSE else
           "pass --metrics HOST:PORT with an address of this host")
    return f"cannot serve /metrics on {address}: {exc.strerror or exc}; fix: {fix}"


def counter_values(counter: Counter) -> dict[tuple[str, ...], float]:
    """Current value per label tuple, for summaries and tests."""
    out: dict[tuple[str, ...], float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[tuple(sample.labels.values())] = sample.value
    return out


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line with the fields operators filter on: ``time`` (RFC 3339, UTC,
    microseconds), ``level``, ``logger``, ``message``, ``service`` (``otelguard-run``,
    ``otelguard-agent``, ``otelguard-processor``), ``pid``, ``exception`` when there is one, and
    whatever a call passed as ``extra={...}`` (JSON-able values kept, others as text)."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
            "pid": record.process,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in self._STANDARD and key not in doc:
                doc[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else str(value)
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(service: str, level: str = "info", fmt: str = "text") -> None:
    """The process's log handler on stderr: ``fmt`` text (the classic line) or json
    (:class:`JsonLogFormatter`) at ``level``. Replaces handlers set before (basicConfig)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter(service) if fmt == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
