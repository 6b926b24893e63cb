"""``otelguard agent``: the node agent. Sensor -> BatchExporter -> OTLP/gRPC, spooled to disk.

Runs until SIGINT/SIGTERM (or ``--duration``), then stops cleanly: the exporter drains what the
sensor queued, ends open spans, flushes, and the process exits 0. The YAML ``--config`` holds
a ``sensor:`` section (ebpf/settings.py) and an ``exporter:`` section (exporter/config.py); the
file is read once and validated before anything loads, all problems reported at once with
file:line (:class:`AgentConfig`, published as ``docs/config/agent.schema.json``). ``/metrics``
serves otelguard's telemetry (events, drops by stage/reason, export latency); the same port
answers ``/healthz`` and ``/readyz`` (exporter/health.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from otelguard import telemetry
from otelguard.config import ConfigError, load_file
from otelguard.ebpf.settings import SensorConfig
from otelguard.exporter.batch import BatchExporter, run_until_stopped
from otelguard.exporter.builder import OtlpBuilder, signer_for
from otelguard.exporter.config import ExporterConfig
from otelguard.exporter.settings import node_identity, otlp_endpoint, otlp_headers
from otelguard.exporter.spans import SpanTracker
from otelguard.transport.contract import SpecError, TransportError
from otelguard.transport.security import client_tls_flags, warn_insecure
from otelguard.transport.delivery import Delivery
from otelguard.transport.spool import Spool

if TYPE_CHECKING:
    from otelguard.ebpf.doctor import Check

log = logging.getLogger("otelguard.agent")


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


@dataclass(frozen=True)
class AgentConfig:
    """The node agent's file: the eBPF sensor and the batching exporter."""

    sensor: SensorConfig = field(default_factory=SensorConfig)
    exporter: ExporterConfig = ExporterConfig()


def load_agent_config(config_file: Optional[str]) -> AgentConfig:
    """The agent's ``--config`` file, read once; no file means the defaults."""
    return load_file(AgentConfig, config_file) if config_file else AgentConfig()


def with_rules_read_filter(sensor: SensorConfig) -> SensorConfig:
    """``sensor`` with the kernel read filter the rules of ``sensor.read_rules`` need, plus the
    configured read paths and prefixes (read once at start). Rules that do not load leave ``sensor`` as it is, logged as errors:
    a rules edit the processor refuses too must not keep every node's sensor down."""
    from otelguard.processors.detection.readfilter import read_rules_paths, rules_read_filter

    try:
        rf = rules_read_filter(read_rules_paths(sensor.read_rules, sensor.read_rules_packaged),
                               sensor.probe.read_path_prefixes or (), sensor.probe.read_paths)
    except ConfigError as exc:
        for message in exc.messages:
            log.error("sensor.read_rules: %s", message)
        log.error("sensor.read_rules: the rules do not load; the kernel read filter keeps "
                  "sensor.probe.read_path_prefixes (default: the built-in list) and read_paths")
        return sensor
    for line in rf.lines():
        log.info("%s", line)
    return dataclasses.replace(sensor, probe=dataclasses.replace(
        sensor.probe, read_path_prefixes=rf.prefixes, read_paths=rf.paths))


def main(args: argparse.Namespace) -> int:
    telemetry.configure_logging("otelguard-agent", getattr(args, "log_level", "info"),
                                getattr(args, "log_format", "text"))
    from otelguard.ebpf.errors import EbpfError

    problems: list[str] = []
    cfg = None
    try:
        cfg = load_agent_config(args.config)
    except ConfigError as exc:
        problems += exc.messages
    endpoint = args.otlp_endpoint or otlp_endpoint()
    try:
        metrics_host, metrics_port = _host_port(args.metrics, "--metrics")
        if endpoint is None:
            raise ValueError("no endpoint: give --otlp-endpoint HOST:PORT (or set "
                             "OTEL_EXPORTER_OTLP_ENDPOINT)")
        _host_port(endpoint, "--otlp-endpoint" if args.otlp_endpoint
                   else "OTEL_EXPORTER_OTLP_ENDPOINT")
    except ValueError as exc:
        problems.append(str(exc))
    transport = None
    if cfg is not None and not problems:
        from otelguard.transport.otlp_grpc import OtlpGrpcTransport

        try:
            tls = client_tls_flags(cfg.exporter.tls, args, "otlp")  # --otlp-* over exporter.tls
            transport = OtlpGrpcTransport(str(endpoint),
                                          timeout_s=cfg.exporter.export_timeout_s,
                                          tls=tls, where="exporter", headers=otlp_headers())
        except (SpecError, ValueError) as exc:
            problems.append(str(exc))
        else:
            if tls.insecure:
                warn_insecure("exporter", tls)
    if cfg is not None and (cfg.sensor.read_rules or cfg.sensor.read_rules_packaged):
        cfg = dataclasses.replace(cfg, sensor=with_rules_read_filter(cfg.sensor))
    if problems or cfg is None or transport is None:
        print("otelguard agent: invalid configuration:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2

    try:
        spool = Spool(args.spool_dir, args.spool_max_bytes)
    except TransportError as exc:
        print(f"otelguard agent: {exc}", file=sys.stderr)
        return 2
    from otelguard.ebpf.doctor import preflight

    blocker = preflight()
    if blocker is not None:
        print(f"otelguard agent: {blocker.operator_line()}", file=sys.stderr)
        return 2
    telemetry.watch_spool(lambda: len(spool), lambda: spool.bytes_used)
    try:
        port = telemetry.serve(metrics_host, metrics_port)
    except OSError as exc:
        print(f"otelguard agent: {telemetry.metrics_unavailable(args.metrics, exc)}", file=sys.stderr)
        return 2
    log.info("metrics on http://%s:%d/metrics; spool %s (%d requests waiting)",
             metrics_host, port, args.spool_dir, len(spool))

    from otelguard.ebpf.sensor import Sensor
    from otelguard.exporter.health import AgentHealth

    sensor_cfg, exp_cfg = cfg.sensor, cfg.exporter
    sensor = Sensor(sensor_cfg)
    health = AgentHealth(sensor)
    telemetry.set_readiness(health.checks)
    try:
        status = sensor.start()
    except EbpfError as exc:
        print(f"otelguard agent: sensor cannot start: {exc}", file=sys.stderr)
        return 1
    log.info("sensor started: %s", status)

    node = node_identity()
    if sensor_cfg.node_name:
        node = dataclasses.replace(node, node_name=sensor_cfg.node_name)
    token_flag = getattr(args, "node_token_file", None)  # --node-token-file over the file's
    identity = (dataclasses.replace(exp_cfg.identity, node_token_file=token_flag)
                if token_flag else exp_cfg.identity)
    timeout = exp_cfg.export_timeout_s
    delivery = Delivery(transport, spool, deadline_s=timeout)
    exporter = BatchExporter(sensor.drain_items, delivery, exp_cfg,
                             OtlpBuilder(node, SpanTracker(max_open=exp_cfg.max_open_spans),
                                         signer=signer_for(identity, node), lane=sensor.lane))
    health.exporter = exporter
    executor = _node_executor(args, transport, node.node_name)
    run_until_stopped(sensor, exporter, args.duration)
    if executor is not None:
        executor.stop()
    stats = exporter.stats()
    print("otelguard agent: " + " ".join(f"{k}={v}" for k, v in stats.items()), file=sys.stderr)
    return 0


def _node_executor(args: argparse.Namespace, transport: Any, node: str) -> Any:
    """``--respond``: carry out the approved response requests for this node
    (response/executor.py); its audit records leave over their own Delivery."""
    if not getattr(args, "respond", False):
        return None
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    from otelguard.kube import CustomResources, api_client_from, own_namespace
    from otelguard.response.audit import AuditRecord, to_resource_logs
    from otelguard.response.executor import NodeExecutor
    from otelguard.response.kube_store import PLURAL, KubeStore

    delivery = Delivery(transport, None)  # one Delivery per sending thread

    def ship(records: list[AuditRecord]) -> bool:
        req = ExportLogsServiceRequest()
        req.resource_logs.append(to_resource_logs(records))
        return delivery.send_logs(req, len(records))

    store = KubeStore(CustomResources(api_client_from(), PLURAL),
                      args.respond_namespace or own_namespace("otelguard"),
                      Path(args.respond_state_dir))
    executor = NodeExecutor(store, node, ship)
    executor.start()
    log.info("response: executing approved node actions for node %s", node)
    return executor


def read_filter_check(sensor: SensorConfig) -> Check:
    """The file probe's kernel filters this config starts with (doctor's ``read filter``
    line): the read paths and prefixes (from ``sensor.read_rules`` when set), unbounded rules,
    and the dedup window (docs/architecture.md#kernel-facts)."""
    from otelguard.ebpf import doctor

    derived = with_rules_read_filter(sensor) if sensor.read_rules or \
        sensor.read_rules_packaged else sensor
    probe = derived.probe
    dedup = (f"dedup of identical opens per process: {probe.dedup_window_ms} ms window, "
             f"{probe.dedup_entries} entries" if probe.dedup_window_ms else "dedup off")
    what = (f"{len(probe.read_paths)} read path(s) {' '.join(probe.read_paths) or '-'}; "
            f"{len(probe.read_prefixes)} prefix(es) {' '.join(probe.read_prefixes) or '-'}; "
            f"{dedup}")
    if derived is sensor and probe.read_path_prefixes is None:
        return doctor.Check("read filter", doctor.WARN, "built-in read prefixes (no rules "
                            "known): " + what, "set sensor.read_rules (or read_rules_packaged) "
                            "so the kernel sends only the reads the rules test")
    return doctor.Check("read filter", doctor.OK, ("from the rules: " if derived is not sensor
                                                  else "configured: ") + what)


def processor_checks(url: str, timeout_s: float = 5.0) -> list[Check]:
    """The readiness checks a processor's ``/readyz`` lists (docs/architecture.md#live-reload),
    as doctor lines: a failing check FAIL, one that warns (a failed reload, changes waiting for
    a restart) WARN; an unreachable processor is a FAIL naming the address."""
    import json
    import urllib.error
    import urllib.request

    from otelguard.ebpf.doctor import FAIL, OK, WARN, Check

    target = url.rstrip("/") + "/readyz"
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:  # 503: not ready, the body still lists the checks
        raw = exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [Check("processor", FAIL, f"{target}: {getattr(exc, 'reason', exc)}",
                      "check --processor (the processor's --metrics address) and that it runs")]
    try:
        body = json.loads(raw)
        listed = [(str(c["name"]), bool(c["ok"]), str(c["detail"])) for c in body["checks"]]
        warnings = set(body.get("warnings", ()))
    except (ValueError, KeyError, TypeError) as exc:
        return [Check("processor", FAIL, f"{target}: not a readiness answer ({exc})",
                      "point --processor at the processor's --metrics address")]
    return [Check(f"processor {name}", OK if ok and name not in warnings else
                  WARN if ok else FAIL, detail,
                  "" if ok and name not in warnings else "see the processor's log")
            for name, ok, detail in listed]


def doctor_main(args: argparse.Namespace) -> int:
    """``otelguard doctor``: the kernel checks, plus the agent config's hop when ``--config`` is
    given (a plaintext hop is a loud WARN, a hop with neither TLS nor ``insecure`` a FAIL)."""
    from otelguard.ebpf import doctor

    extra: list[doctor.Check] = []
    sensor = None
    if not args.config:
        extra.append(read_filter_check(SensorConfig()))
    else:
        try:
            cfg = load_agent_config(args.config)
            tls = cfg.exporter.tls
            sensor = cfg.sensor
            if sensor.read_rules or sensor.read_rules_packaged:
                sensor = with_rules_read_filter(sensor)  # as the agent renders it
        except ConfigError as exc:
            extra.append(doctor.Check("agent config", doctor.FAIL, "; ".join(exc.messages),
                                      f"fix {args.config}"))
        else:
            extra.append(read_filter_check(cfg.sensor))
            if tls.insecure:
                extra.append(doctor.Check(
                    "exporter.tls", doctor.WARN, "INSECURE: plaintext to the processor, no "
                    "server authentication" + ("" if tls.bearer_token_file else ", no token"),
                    "set exporter.tls.ca_file (and bearer_token_file)"))
            elif not tls.ca_file:
                extra.append(doctor.Check("exporter.tls", doctor.FAIL, "no TLS configured",
                                          "set exporter.tls.ca_file or exporter.tls.insecure"))
            else:
                extra.append(doctor.Check("exporter.tls", doctor.OK, "TLS to the processor" + (
                    ", mTLS" if tls.cert_file else "") + (
                    ", bearer token" if tls.bearer_token_file else "")))
    if getattr(args, "processor", None):
        extra.extend(processor_checks(args.processor))
    return doctor.main(args, extra, sensor)
