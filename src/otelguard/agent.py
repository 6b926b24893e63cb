"""``otelguard agent``: the node agent. Sensor -> BatchExporter -> OTLP/gRPC, spooled to disk.

Runs until SIGINT/SIGTERM (or ``--duration``), then stops cleanly: the exporter drains what the
sensor queued, ends open spans, flushes, and the process exits 0. The YAML ``--config`` holds
a ``sensor:`` section (ebpf/settings.py) and an ``exporter:`` section (exporter/config.py);
both are validated before anything loads, all problems reported at once. ``/metrics`` serves
otelguard's telemetry (events, drops by stage/reason, export latency).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Optional

import yaml

from otelguard import telemetry
from otelguard.exporter.batch import BatchExporter, run_until_stopped
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.config import ExporterConfig, ExporterConfigError
from otelguard.exporter.settings import node_identity
from otelguard.exporter.spans import SpanTracker
from otelguard.transport.contract import TransportError
from otelguard.transport.delivery import Delivery
from otelguard.transport.spool import Spool

log = logging.getLogger("otelguard.agent")


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


def exporter_config(config_file: Optional[str]) -> ExporterConfig:
    if not config_file:
        return ExporterConfig()
    try:
        with open(config_file) as fh:
            doc: Any = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ExporterConfigError([f"{config_file}: {exc}"]) from exc
    if not isinstance(doc, dict):
        return ExporterConfig()
    try:
        return ExporterConfig.from_mapping(doc.get("exporter"))
    except ExporterConfigError as exc:
        raise ExporterConfigError([f"{config_file}: {p}" for p in exc.problems]) from exc


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from otelguard.ebpf.errors import EbpfError
    from otelguard.ebpf.settings import load_sensor_config

    problems: list[str] = []
    sensor_cfg = None
    exp_cfg = ExporterConfig()
    try:
        sensor_cfg = load_sensor_config(args.config)
    except EbpfError as exc:
        problems += getattr(exc, "problems", [str(exc)])
    try:
        exp_cfg = exporter_config(args.config)
    except ExporterConfigError as exc:
        problems += exc.problems
    try:
        metrics_host, metrics_port = _host_port(args.metrics, "--metrics")
        _host_port(args.otlp_endpoint, "--otlp-endpoint")
    except ValueError as exc:
        problems.append(str(exc))
    if problems or sensor_cfg is None:
        print("otelguard agent: invalid configuration:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2

    from otelguard.transport.otlp_grpc import OtlpGrpcTransport

    try:
        spool = Spool(args.spool_dir, args.spool_max_bytes)
    except TransportError as exc:
        print(f"otelguard agent: {exc}", file=sys.stderr)
        return 2
    port = telemetry.serve(metrics_host, metrics_port)
    log.info("metrics on http://%s:%d/metrics; spool %s (%d requests waiting)",
             metrics_host, port, args.spool_dir, len(spool))

    from otelguard.ebpf.sensor import Sensor

    sensor = Sensor(sensor_cfg)
    try:
        status = sensor.start()
    except EbpfError as exc:
        print(f"otelguard agent: sensor cannot start: {exc}", file=sys.stderr)
        return 1
    log.info("sensor started: %s", status)

    node = node_identity()
    if sensor_cfg.node_name:
        node = type(node)(sensor_cfg.node_name, node.host_name, node.host_id)
    delivery = Delivery(OtlpGrpcTransport(args.otlp_endpoint), spool)
    exporter = BatchExporter(sensor.drain, delivery, exp_cfg,
                             OtlpBuilder(node, SpanTracker(max_open=exp_cfg.max_open_spans)))
    run_until_stopped(sensor, exporter, args.duration)
    stats = exporter.stats()
    print("otelguard agent: " + " ".join(f"{k}={v}" for k, v in stats.items()), file=sys.stderr)
    return 0
