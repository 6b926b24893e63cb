"""otelguard's own metrics, shared by the agent and the processors (Prometheus naming).

One registry per process. Stages never create label values from pods, pids, IPs or paths.
``dropped`` is the one place every drop is counted, by stage and reason, so nothing is lost
silently: the exit summary of ``otelguard run`` and ``/metrics`` both read it.
"""

from __future__ import annotations

import threading
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

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
pipeline_latency = Histogram(
    semconv.METRIC_PIPELINE_LATENCY, "Time a batch spends in a pipeline stage.", ["stage"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)

_server_lock = threading.Lock()
_server_port: Optional[int] = None


def serve(host: str, port: int) -> int:
    """Serve ``/metrics`` on host:port (port 0 picks a free one); returns the bound port."""
    global _server_port
    with _server_lock:
        if _server_port is not None:
            return _server_port
        server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
        _server_port = int(server.server_address[1])
        return _server_port


def counter_values(counter: Counter) -> dict[tuple[str, ...], float]:
    """Current value per label tuple, for summaries and tests."""
    out: dict[tuple[str, ...], float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[tuple(sample.labels.values())] = sample.value
    return out
