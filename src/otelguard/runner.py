"""``otelguard run``: the single-host default, agent and processors in one process.

Sensor -> BatchExporter -> :class:`PipelineSink` (the processor pipeline applied in place to the
OTLP protobufs, no network hop) -> every ``--output`` through its own Delivery (retry with
backoff; a dead endpoint's records are counted as dropped, never silently lost). Detections are
printed by the console output (raw events only with ``--events``) under a status line
(events/s, drops, detections, incidents: otelguard/status.py), refreshed in place on a
terminal, plain lines otherwise; ``/metrics`` serves otelguard's telemetry, and
the same port ``/healthz`` and ``/readyz`` (exporter/health.py). SIGHUP, or a change of
``--config`` or of a rules file, reloads the rules and the ``processors:`` section live
(processors/reload.py). Ctrl-C (or ``--duration``) stops cleanly and prints a summary: events
by type, detections by rule, incidents (their last version), drops by stage and reason,
probes that did not load. Incidents print on the console as boxed stories
(transport/console.py, docs/incidents.md) each time one opens or changes.

The ``--config`` YAML has four sections, each defined by the package that owns it:
``sensor:`` (ebpf/settings.py), ``exporter:`` (exporter/config.py), ``processors:`` (the
processor pipeline, processors/config.py) and ``reload:`` (processors/config.py). The file is
read into :class:`RunConfig` at start and at each reload, every problem reported at once with
file:line (published as ``docs/config/run.schema.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from otelguard import telemetry
from otelguard.config import ConfigError, load_file
from otelguard.ebpf.settings import SensorConfig
from otelguard.exporter.config import ExporterConfig
from otelguard.processors.config import ProcessorList, ProcessorSpec, ReloadConfig
from otelguard.transport.contract import LogsPayload, TracesPayload, as_logs, as_traces
from otelguard.transport.delivery import Delivery, DeliveryStats

log = logging.getLogger("otelguard.run")

DEFAULT_OUTPUTS = ("console", "jsonl:otelguard-out.jsonl")
# read when --config is not given and the file exists (a packaged single-host install)
DEFAULT_CONFIG = "/etc/otelguard/otelguard.yaml"


@dataclass(frozen=True)
class RunConfig:
    """``otelguard run``: the sensor, the exporter and the processor stages, in one process.

    ``processors`` absent means the default pipeline (detection with the default rules, then
    noise control).
    """

    sensor: SensorConfig = field(default_factory=SensorConfig)
    exporter: ExporterConfig = ExporterConfig()
    processors: Optional[ProcessorList] = None  # the stages; absent: falco_rules, noise_control
    # Rules and the processors section re-read without a restart (processors/reload.py).
    reload: ReloadConfig = ReloadConfig()


def load_run_config(path: Optional[str]) -> RunConfig:
    """The ``--config`` file, read once; no file means the defaults."""
    return load_file(RunConfig, path) if path else RunConfig()


HELD_FLUSH_INTERVAL_S = 1.0  # as the processor service's flush_interval_seconds default


class PipelineSink:
    """Where the exporter's batches go in-process: the pipeline, then every output.

    Has the sending surface of :class:`~otelguard.transport.delivery.Delivery` that
    BatchExporter uses. Cost per batch: one upb parse of the logs bytes (~1 µs per record), the
    stages, and one send per output.
    """

    def __init__(self, pipeline: Any, outputs: Sequence[Delivery],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.outputs = list(outputs)
        self.stats = DeliveryStats()
        self._clock = clock
        self._last_flush = clock()

    @property
    def backlog(self) -> int:
        return sum(o.backlog for o in self.outputs)

    def send_logs(self, payload: LogsPayload, records: int) -> bool:
        result = self.pipeline.process(as_logs(payload))
        ok = self._fan_out("logs", result.batch, result.records_out)
        self._flush_due()
        return ok

    def send_traces(self, payload: TracesPayload, records: int) -> bool:
        result = self.pipeline.process(as_traces(payload))
        ok = self._fan_out("traces", result.batch, result.records_out)
        self._flush_due()
        return ok

    def _flush_due(self) -> None:
        """The held-records timer: the export thread calls a send or ``replay()`` at least every
        ``flush_interval_s`` (0.5 s), so records stages hold leave within ~1 s, on that thread."""
        now = self._clock()
        if now - self._last_flush >= HELD_FLUSH_INTERVAL_S:
            self._last_flush = now
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Release what stages hold (noise control's throttle records) to the outputs."""
        from otelguard.otlp.messages import count_records

        released = self.pipeline.shutdown() if final else self.pipeline.flush()
        for batch in released:
            kind = "traces" if hasattr(batch, "resource_spans") else "logs"
            self._fan_out(kind, batch, count_records(batch))

    def _fan_out(self, kind: str, batch: Any, records: int) -> bool:
        ok = True
        for out in self.outputs:
            ok = out.send(kind, batch, records) and ok
        if ok:
            self.stats.sent_records += records
        return ok

    def replay(self) -> int:
        self._flush_due()
        return sum(o.replay() for o in self.outputs)

    def shutdown(self) -> None:
        self.flush(final=True)
        for out in self.outputs:
            out.shutdown()


def _split_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--metrics: expected HOST:PORT, got {value!r}")
    return host, int(port)


def run_specs(specs: Optional[Sequence[ProcessorSpec]], rules: Optional[Sequence[str]],
              profiles: Optional[str] = None, learn_for: Optional[str] = None,
              incidents: bool = True, policy: Optional[str] = None,
              ) -> tuple[ProcessorSpec, ...]:
    """The stages of ``otelguard run``: the config's ``processors:`` or the default (detection
    with the default rules, then noise control), ``--rules`` (or ``--policy DIR``) applied;
    ``--profiles DIR`` adds the profiles stage before noise control; the incidents stage is
    added last when the pipeline has none (``--no-incidents``: not added)."""
    from otelguard.processors.default_pipeline import (
        apply_incidents, apply_policy, apply_profiles, apply_rules, default_specs,
    )

    base = default_specs(rules) if specs is None else specs
    ruled = apply_policy(apply_rules(base, rules), policy, rules)
    return apply_incidents(apply_profiles(ruled, profiles, learn_for), incidents)


def build_pipeline(specs: Optional[Sequence[ProcessorSpec]], rules: Optional[Sequence[str]],
                   profiles: Optional[str] = None, learn_for: Optional[str] = None,
                   incidents: bool = True, policy: Optional[str] = None) -> Any:
    """The processor pipeline of ``otelguard run`` (:func:`run_specs`)."""
    from otelguard.processors.pipeline import Pipeline

    return Pipeline.from_specs(run_specs(specs, rules, profiles, learn_for, incidents, policy))


def build_reloader(pipeline: Any, cfg: RunConfig, args: argparse.Namespace) -> Any:
    """Live reload of the rules and the ``processors:``/``reload:`` sections of ``--config``
    (processors/reload.py); the sensor and exporter sections need a restart."""
    from otelguard.processors.reload import ConfigReloader

    profiles, learn_for = getattr(args, "profiles", None), getattr(args, "learn_for", None)
    incidents = not getattr(args, "no_incidents", False)
    policy = getattr(args, "policy", None)
    return ConfigReloader(pipeline, cfg, lambda: load_run_config(args.config),
                          specs_of=lambda c: run_specs(c.processors, args.rules, profiles,
                                                       learn_for, incidents, policy),
                          reload_of=lambda c: c.reload, config_file=args.config)


def incident_lines(pipeline: Any) -> list[str]:
    """The summary's incidents: the last version each incident stage wrote, worst first."""
    latest: dict[str, tuple[str, int, str, str, str]] = {}
    for _, stage in pipeline.stages():
        for item in getattr(stage, "emitted", []):
            latest[item[0]] = item
    if not latest and not any(s.type_name == "incidents" for _, s in pipeline.stages()):
        return []
    order = {"CRITICAL": 0, "ERROR": 1, "WARNING": 2, "NOTICE": 3}
    lines = [f"  incidents: {len(latest)}"]
    for iid, version, status, severity, title in sorted(
            latest.values(), key=lambda i: (order.get(i[3], 9), i[0])):
        lines.append(f"    {severity:<9} {status:<6} v{version:<3} {iid[:8]} {title[:90]}")
    return lines


def with_rules_read_filter(sensor: SensorConfig, pipeline: Any) -> SensorConfig:
    """``sensor`` with the kernel read filter its rules need (``sensor.read_rules``, else the
    rules the pipeline's falco_rules stages run, plus the sensitive reads a profiles stage
    learns), and the configured read paths and prefixes; with no rules at all, the built-in
    prefixes as an agent without rules has them; fixed at start: a rule reloaded live
    that needs a new path waits for a restart (docs/architecture.md#kernel-facts)."""
    from otelguard.processors.detection.readfilter import (
        read_filter, read_rules_paths, rules_read_filter,
    )

    configured = sensor.probe.read_path_prefixes or ()
    paths = sensor.probe.read_paths
    learned: tuple[str, ...] = ()
    if any(stage.type_name == "profiles" for _n, stage in pipeline.stages()):
        from otelguard.processors.profiles.observe import SENSITIVE_READS

        learned = SENSITIVE_READS
        configured = tuple(configured) + SENSITIVE_READS
    if sensor.read_rules or sensor.read_rules_packaged:
        rf = rules_read_filter(read_rules_paths(sensor.read_rules, sensor.read_rules_packaged),
                               configured, paths)
    else:
        stages = [stage for _n, stage in pipeline.stages() if stage.type_name == "falco_rules"]
        if not stages:  # no rules known: the built-in read prefixes, as an agent without rules
            log.info("kernel read filter: no falco_rules stage and no sensor.read_rules: the "
                     "built-in read prefixes (sensor.probe.read_path_prefixes when set)")
            return dataclasses.replace(sensor, probe=dataclasses.replace(
                sensor.probe, read_path_prefixes=tuple(dict.fromkeys(
                    sensor.probe.read_prefixes + learned))))
        rf = read_filter([r for stage in stages for r in stage.engine.rules], configured, paths)
    for line in rf.lines():
        log.info("%s", line)
    for line in rf.lines()[2:]:
        if "UNBOUNDED" in line:
            log.warning("%s", line)
    return dataclasses.replace(sensor, probe=dataclasses.replace(
        sensor.probe, read_path_prefixes=rf.prefixes, read_paths=rf.paths))


def with_risk_read_prefixes(sensor: SensorConfig, pipeline: Any) -> SensorConfig:
    """``sensor`` with the read prefixes the pipeline's risk stages need added (their
    ``packages.read_path_prefixes``: shared objects, Python, Node, JARs; docs/risk.md
    #what-the-sensor-must-send). Only a configured risk stage widens the kernel filter, and
    each added prefix is logged; prefixes already covered by a configured one are not added."""
    have = list(sensor.probe.read_prefixes)
    added = []
    for _n, stage in pipeline.stages():
        if stage.type_name != "risk":
            continue
        for prefix in stage.read_path_prefixes():
            if not any(prefix.startswith(h) for h in have):
                have.append(prefix)
                added.append(prefix)
    if not added:
        return sensor
    log.warning("risk: the kernel read filter also sends read-only opens under %s",
             ", ".join(added))
    return dataclasses.replace(sensor, probe=dataclasses.replace(
        sensor.probe, read_path_prefixes=tuple(have)))


def summary(sensor_stats: dict[str, Any], missing: Sequence[str],
            incidents: Sequence[str] = ()) -> str:
    """The exit summary: events by type, detections by rule, incidents, drops by stage and
    reason."""
    lines = ["otelguard run summary"]
    events = telemetry.counter_values(telemetry.events)
    lines.append(f"  events: {int(sum(events.values()))}")
    for (name,), n in sorted(events.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {name:<40} {int(n)}")
    dets = telemetry.counter_values(telemetry.detections)
    lines.append(f"  detections: {int(sum(dets.values()))}")
    per_rule: dict[tuple[str, str], float] = {}
    for labels, n in dets.items():
        key = (labels[0], labels[1])
        per_rule[key] = per_rule.get(key, 0) + n
    for (rule, prio), n in sorted(per_rule.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {prio:<9} {rule:<60} {int(n)}")
    lines += incidents
    drops = telemetry.counter_values(telemetry.dropped)
    lines.append(f"  dropped: {int(sum(drops.values()))}")
    for (stage, reason), n in sorted(drops.items()):
        lines.append(f"    {stage}/{reason:<30} {int(n)}")
    repeats, unreported = sensor_stats.get("file_repeats") or (0, 0)
    if repeats:  # not drops: identical opens counted in the kernel (their count is reported)
        lines.append(f"  identical opens counted in the kernel, not re-sent: {repeats}"
                     + (f" ({unreported} of them overwritten before reported)"
                        if unreported else ""))
    offenders = sensor_stats.get("budget_offenders") or []
    if offenders:  # the cgroups the kernel budget cut most (ebpf/budget.py)
        lines.append("  over budget, by container (top):")
        for o in offenders:
            lines.append(f"    {o['workload']:<64} {o['dropped']} (high-value {o['high_value']})")
    if missing:
        lines.append("  not loaded: " + "; ".join(missing))
    return "\n".join(lines)


def status_line(mode: str, interval: Optional[float], consoles: Sequence[Any]) -> Any:
    """The status line (otelguard/status.py) on the first console output's stream (stderr
    when there is none, so a ``falco-json:-`` stream on stdout stays pure JSON); ``mode``
    auto is live on a terminal, plain lines elsewhere."""
    from otelguard.status import LIVE_INTERVAL_S, PLAIN_INTERVAL_S, StatusLine
    from otelguard.transport.terminal import Terminal, is_live

    if mode == "off":
        return None
    terminal = consoles[0].terminal if consoles else Terminal(sys.stderr, is_live(sys.stderr))
    if mode != "auto":
        terminal.live = mode == "live"
    return StatusLine(terminal, interval or (LIVE_INTERVAL_S if terminal.live
                                             else PLAIN_INTERVAL_S))


def default_config(path: Optional[str]) -> Optional[str]:
    """``--config``, else :data:`DEFAULT_CONFIG` when that file exists, else None."""
    if path is None and os.path.exists(DEFAULT_CONFIG):
        return DEFAULT_CONFIG
    return path


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    telemetry.configure_logging("otelguard-run", getattr(args, "log_level", "warning"),
                                getattr(args, "log_format", "text"))
    args.config = default_config(args.config)
    from otelguard.ebpf.errors import EbpfError
    from otelguard.processors.errors import ProcessorsError
    from otelguard.transport.contract import TransportError
    from otelguard.transport.console import ConsoleTransport
    from otelguard.transport.spec import parse_spec

    problems: list[str] = []
    cfg = None
    pipeline = None
    try:
        cfg = load_run_config(args.config)
    except ConfigError as exc:
        problems += exc.messages
    if cfg is not None:
        try:
            pipeline = build_pipeline(cfg.processors, args.rules,
                                      getattr(args, "profiles", None),
                                      getattr(args, "learn_for", None),
                                      not getattr(args, "no_incidents", False),
                                      getattr(args, "policy", None))
        except ConfigError as exc:
            problems += exc.messages
        except ProcessorsError as exc:
            problems.append(str(exc))
    outputs: list[Delivery] = []
    consoles: list[Any] = []
    timeout = (cfg or RunConfig()).exporter.export_timeout_s
    tls = (cfg or RunConfig()).exporter.tls  # the network outputs' TLS
    for spec in args.output or DEFAULT_OUTPUTS:
        try:
            transport = parse_spec(spec, timeout, tls, "exporter")
            console = getattr(transport, "inner", transport)
            if isinstance(console, ConsoleTransport):  # raw events only with --events
                console.detections_only = not getattr(args, "events", False)
                consoles.append(console)
            outputs.append(Delivery(transport, None, stage="output", deadline_s=timeout))
        except TransportError as exc:
            problems.append(str(exc))
        else:
            if spec.startswith(("otlp:", "otlphttp:", "falcosidekick:")) and (
                    tls.insecure or "insecure=true" in spec):
                from otelguard.transport.security import warn_insecure

                warn_insecure("exporter", dataclasses.replace(tls, insecure=True))
    try:
        metrics_host, metrics_port = _split_hostport(args.metrics)
    except ValueError as exc:
        problems.append(str(exc))
    interval = getattr(args, "status_interval", None)
    if interval is not None and interval <= 0:
        problems.append(f"--status-interval: must be above 0, got {interval}")
    if problems or cfg is None or pipeline is None:
        print("otelguard run: invalid configuration:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    from otelguard.ebpf.doctor import preflight

    blocker = preflight()  # not root, no BCC: one line and exit 2, before anything loads
    if blocker is not None:
        print(f"otelguard run: {blocker.operator_line()}", file=sys.stderr)
        return 2

    from otelguard.ebpf.sensor import Sensor
    from otelguard.exporter.batch import BatchExporter, run_until_stopped
    from otelguard.exporter.builder import OtlpBuilder, signer_for
    from otelguard.exporter.health import AgentHealth
    from otelguard.exporter.settings import node_identity
    from otelguard.exporter.spans import SpanTracker

    try:
        sensor_cfg = with_risk_read_prefixes(with_rules_read_filter(cfg.sensor, pipeline),
                                             pipeline)
    except ConfigError as exc:
        print("otelguard run: invalid configuration:\n  " + "\n  ".join(exc.messages),
              file=sys.stderr)
        return 2
    exp_cfg = cfg.exporter
    try:
        bound = telemetry.serve(metrics_host, metrics_port)
    except OSError as exc:
        print(f"otelguard run: {telemetry.metrics_unavailable(args.metrics, exc)}", file=sys.stderr)
        return 2
    sensor = Sensor(sensor_cfg)
    health = AgentHealth(sensor)
    reloader = build_reloader(pipeline, cfg, args)
    telemetry.set_readiness(lambda: [*health.checks(), reloader.check()])
    signal.signal(signal.SIGHUP, lambda _sig, _frame: reloader.request())
    try:
        status = sensor.start()
    except EbpfError as exc:
        print(f"otelguard run: the sensor cannot start: {exc}\n  (run `otelguard doctor`)",
              file=sys.stderr)
        return 1
    missing = [f"{name}: {why}" for name, why in sorted({**status.skipped, **status.failed}.items())]
    missing += [f"{name}: tracepoints missing: {', '.join(tps)}"
                for name, tps in sorted(status.missing_tracepoints.items()) if tps]
    print(f"otelguard run: watching ({len(status.loaded)} probes attached: "
          f"{', '.join(status.loaded)}; ring reader {status.ring_reader}), started in "
          f"{time.monotonic() - started:.1f} s "
          f"(program {'from the cache' if status.program_origin == 'cache' else 'compiled'})"
          + (f"; NOT loaded: {'; '.join(missing)}" if missing else "")
          + f"; stages: {', '.join(pipeline.stage_names) or 'none'}"
          + f"; metrics on http://{metrics_host}:{bound}/metrics"
          + f"; reload: SIGHUP, watching {len(reloader.watched())} path(s)",
          file=sys.stderr, flush=True)
    pipeline.start()
    sink = PipelineSink(pipeline, outputs)
    node = node_identity()
    if sensor_cfg.node_name:
        node = dataclasses.replace(node, node_name=sensor_cfg.node_name)
    exporter = BatchExporter(sensor.drain_items, sink, exp_cfg,
                             OtlpBuilder(node, SpanTracker(max_open=exp_cfg.max_open_spans),
                                         signer=signer_for(exp_cfg.identity, node),
                                         lane=sensor.lane))
    health.exporter = exporter
    reloader.start()
    live_status = status_line(getattr(args, "status", "auto"), interval, consoles)
    if live_status is not None:
        live_status.start()
    run_until_stopped(sensor, exporter, args.duration)
    try:
        reloader.stop()
        if live_status is not None:
            live_status.stop()
        sensor_stats = sensor.stats()
        print(summary(sensor_stats, missing, incident_lines(pipeline)), file=sys.stderr,
              flush=True)
    except KeyboardInterrupt:  # a second Ctrl-C: everything was delivered, only the summary
        print("\notelguard run: interrupted again: summary skipped", file=sys.stderr)
        return 130
    return 0
