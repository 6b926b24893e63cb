"""``otelguard processor``: build the pipeline, the forwarder and the receivers from the config
file and flags, run until SIGINT/SIGTERM, then drain and flush.

Config errors exit 2 listing every issue. The receiver itself (status mapping, limits) is
:mod:`otelguard.processors.receiver`; the default pipeline and ``--rules`` come from
:mod:`otelguard.processors.default_pipeline`, shared with ``otelguard run``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal as signal_module
import sys
from typing import Any, Optional, Sequence

from otelguard import telemetry
from otelguard.processors import errors
from otelguard.processors import settings as settings_module
from otelguard.processors.config import PipelineConfig, load_pipeline_config
from otelguard.processors.default_pipeline import apply_policy, apply_rules, default_specs
from otelguard.processors.errors import ConfigError, ProcessorsError
from otelguard.processors.forward import ExportTarget, Forwarder
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver import ProcessorService
from otelguard.processors.receiver.protocol import require_upb, split_hostport
from otelguard.processors.reload import ConfigReloader
from otelguard.processors.settings import Settings
from otelguard.transport.security import (
    ClientTls, client_tls_flags, overridden, warn_insecure,
)

log = logging.getLogger(__name__)


def build_exporters(specs: Sequence[str], tls: ClientTls = ClientTls(),
                    ) -> list[tuple[str, ExportTarget]]:
    """Export specs (``otlp:HOST:PORT``, ``otlphttp:URL``, ``jsonl:PATH``, ``falco-json:PATH``,
    ``falcosidekick:URL``, with ``?options``: transport/spec.py) into transports; the network
    ones use ``forward.tls``."""
    from otelguard.transport.spec import parse_spec

    out: list[tuple[str, ExportTarget]] = []
    issues: list[errors.ConfigIssue] = []
    for i, spec in enumerate(specs):
        try:
            target = parse_spec(spec, tls=tls, where="forward")
        except Exception as exc:
            issues.append(errors.ConfigIssue(f"exporters[{i}]", f"{spec!r}: {exc}"))
            continue
        out.append((f"{spec.partition(':')[0]}#{i}", target))
    if issues:
        raise ConfigError(issues)
    return out


def build_service(cfg: PipelineConfig, settings: Optional[Settings] = None,
                  exporters: Optional[Sequence[tuple[str, ExportTarget]]] = None,
                  ) -> ProcessorService:
    """The service for a validated config (exporters built from ``cfg.exporters`` if not given)."""
    st = settings or settings_module.read()
    pipeline = Pipeline.from_specs(cfg.processors, cfg.service.restore_on_failure)
    hops = list(exporters) if exporters is not None else build_exporters(cfg.exporters,
                                                                         cfg.forward.tls)
    return ProcessorService(pipeline, Forwarder(hops, cfg.forward), cfg.service, st)


def resolve_config(args: argparse.Namespace) -> PipelineConfig:
    """The config file (or the default pipeline) with the command line's flags over it; the
    same at start-up and at every reload (processors/reload.py)."""
    cfg = load_pipeline_config(args.config) if args.config else PipelineConfig(
        processors=default_specs(args.rules))
    overrides: dict[str, Any] = {}
    if not args.config or args.listen != settings_module.DEFAULT_LISTEN:
        overrides["listen"] = args.listen
    if args.listen_http:
        overrides["listen_http"] = args.listen_http
    if not args.config or args.metrics != settings_module.DEFAULT_METRICS:
        overrides["metrics"] = args.metrics
    overrides["tls"] = overridden(  # the listener flags over service.tls
        cfg.service.tls, cert_file=args.tls_cert, key_file=args.tls_key,
        client_ca_file=args.tls_client_ca, bearer_token_file=args.token_file,
        insecure=args.insecure)
    return dataclasses.replace(
        cfg,
        service=dataclasses.replace(cfg.service, **overrides),
        forward=dataclasses.replace(
            cfg.forward, tls=client_tls_flags(cfg.forward.tls, args, "export")),
        exporters=tuple(cfg.exporters) + tuple(args.export or ()),
        processors=apply_policy(apply_rules(cfg.processors, args.rules),
                                getattr(args, "policy", None), args.rules),
    )


def main(args: argparse.Namespace) -> int:
    """``otelguard processor``: run until SIGINT/SIGTERM; config errors exit 2 with every issue.
    SIGHUP (and a change of the config or rules files) reloads them (processors/reload.py)."""
    telemetry.configure_logging("otelguard-processor", getattr(args, "log_level", "info"),
                                getattr(args, "log_format", "text"))
    try:
        st = settings_module.read()
        require_upb(st)
        cfg = resolve_config(args)
        if not cfg.exporters:
            raise ConfigError([errors.ConfigIssue(
                "exporters", "no exporter: give --export SPEC or exporters: in the config")])
        service = build_service(cfg, st)
        if cfg.forward.tls.insecure:
            warn_insecure("forward", cfg.forward.tls)
    except (ConfigError, ProcessorsError, ValueError) as exc:
        print(f"otelguard processor: {exc}")
        return 2
    reloader = ConfigReloader(service.pipeline, cfg, lambda: resolve_config(args),
                              specs_of=lambda c: c.processors, reload_of=lambda c: c.reload,
                              config_file=args.config)
    service.health.extra_checks.append(reloader.check)
    if cfg.service.metrics:
        host, port = split_hostport(cfg.service.metrics)
        try:
            bound = telemetry.serve(host, port)
        except OSError as exc:
            print(f"otelguard processor: "
                  f"{telemetry.metrics_unavailable(cfg.service.metrics, exc)}", file=sys.stderr)
            return 2
        # /readyz beside /metrics (the only HTTP port when there is no OTLP/HTTP listener)
        telemetry.set_readiness(service.health.checks)
        log.info("metrics on http://%s:%d/metrics", host, bound)
    return asyncio.run(_serve(service, reloader))


async def _serve(service: ProcessorService, reloader: ConfigReloader) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal_module.SIGINT, signal_module.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal_module.SIGHUP, reloader.request)
    try:
        await service.start()
    except ProcessorsError as exc:
        print(f"otelguard processor: {exc}")
        return 2
    except (OSError, RuntimeError) as exc:  # a listener's port taken (grpc raises RuntimeError)
        ports = f"--listen {service.cfg.listen}" + (
            f", --listen-http {service.cfg.listen_http}" if service.cfg.listen_http else "")
        print(f"otelguard processor: cannot listen ({ports}): {exc}; fix: another process (a "
              "second processor?) has the port: pass free HOST:PORTs or stop it",
              file=sys.stderr)
        await service.stop()
        return 2
    reloader.start()
    log.info("OTLP/gRPC on %s (port %d)%s; stages: %s; exporters: %s; reload: SIGHUP%s",
             service.cfg.listen, service.grpc_port,
             f", OTLP/HTTP on port {service.http_port}" if service.http_port else "",
             ", ".join(service.pipeline.stage_names) or "none",
             ", ".join(service.forwarder.exporter_names),
             f", watching {len(reloader.watched())} path(s)" if reloader.watched() else "")
    await stop.wait()
    log.info("stopping: draining requests and flushing held records")
    reloader.stop()
    await service.stop()
    return 0
