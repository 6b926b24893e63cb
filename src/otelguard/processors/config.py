"""The service's pipeline file (``otelguard processor --config``) into frozen dataclasses.

Built by the one config loader (:mod:`otelguard.config`): unknown keys are errors and every
problem is reported at once with its dotted path and file:line. Each ``processors[i].config`` is
built with the ``Config`` type its registry entry names, so a broken processor package is an
error for that entry only. Published as ``docs/config/pipeline.schema.json``.

A pipeline file (every section optional; ``name`` defaults to ``type`` and labels the metrics)::

    service:
      listen: 0.0.0.0:4317
      listen_http: 0.0.0.0:4318
      tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key, client_ca_file: /tls/ca.crt,
            bearer_token_file: /auth/tokens}
    forward:
      max_attempts: 4
      tls: {ca_file: /gw-tls/ca.crt, bearer_token_file: /gw-auth/token}
    exporters: [otlp:otel-gateway:4317]
    reload: {watch_interval_seconds: 5}
    processors:
      - type: k8s_attributes
        config: {mode: gateway}
      - type: falco_rules
        config: {rules: [/etc/otelguard/rules.yaml]}
      - type: noise_control
        config: {window_seconds: 60, burst: 3, max_keys: 10000}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Union

from otelguard.config import (
    Checks,
    Custom,
    Issues,
    build,
    describe,
    from_mapping,
    join,
    line_of,
    load_file,
)
from otelguard.processors import registry
from otelguard.processors.errors import RegistryError
from otelguard.transport.security import ClientTls, ServerTls


@dataclass(frozen=True)
class IdentitySection:
    """``service.identity``: which node sent each Resource, from its node-token MAC
    (transport/identity.py; docs/architecture.md#security)."""

    # ``NODE TOKEN`` per line, or a directory with one file per node (a Secret mounted whole);
    # re-read when it changes. null: no MAC is checked and every Resource is unverified.
    node_token_file: Optional[str] = None
    # Refuse Resources without a valid MAC: dropped from the request and counted
    # (receive/unverified_sender, partial_success); a request with none valid is
    # UNAUTHENTICATED / 401. Off by default: senders without node tokens (older agents, SDKs,
    # otelguard run) keep working, their Resources marked otelguard.sender.verified=false.
    require: bool = False
    # A stamp whose minute is further than this from now is not valid (replay window; covers
    # spool replay and Collector queues of about this long).
    max_age_seconds: float = 3600.0

    def __post_init__(self) -> None:
        checks = Checks()
        if self.max_age_seconds < 60:
            checks.add("max_age_seconds", f"must be >= 60, got {self.max_age_seconds}")
        if self.require and not self.node_token_file:
            checks.add("require", "require: true needs node_token_file")
        checks.done()


@dataclass(frozen=True)
class ServiceSection:
    """Where the service listens and how much it holds in memory at once."""

    listen: str = "127.0.0.1:4317"  # OTLP/gRPC, HOST:PORT
    listen_http: Optional[str] = None  # OTLP/HTTP (protobuf and JSON), HOST:PORT; null: off
    # Both listeners: certificate, key, client CA (mTLS), bearer token file; or insecure: true.
    tls: ServerTls = ServerTls()
    # The sending node of each Resource, from its node-token MAC (agents' exporter.identity).
    identity: IdentitySection = IdentitySection()
    metrics: Optional[str] = "127.0.0.1:9466"  # Prometheus /metrics, HOST:PORT; null: off
    # Larger requests, also once inflated, are refused (413 / RESOURCE_EXHAUSTED). gRPC
    # messages are held whole before a handler runs: this is grpc's receive limit too.
    max_request_bytes: int = 16 * 1024 * 1024
    # More in flight: "retry later" (429 / RESOURCE_EXHAUSTED with RetryInfo). grpc itself
    # refuses calls past twice this before reading them, which bounds what it buffers.
    max_inflight_requests: int = 64
    # The same bound on the bytes in flight: bodies as received plus what they inflate to, and
    # an HTTP body's Content-Length (max_request_bytes if unknown) reserved before it is read.
    max_inflight_bytes: int = 128 * 1024 * 1024
    # An HTTP body or gRPC message not read in full by then: 408 / DEADLINE_EXCEEDED.
    body_read_timeout_seconds: float = 10.0
    # OTLP/JSON: AnyValue nesting (kvlistValue/arrayValue) deeper than this is refused (400).
    # protobuf (upb) refuses messages nested past 100 levels, i.e. 32 kvlist levels; the
    # default keeps JSON to what a protobuf request can carry too.
    max_json_depth: int = 32
    # OpenTelemetry attribute limits, applied on receipt (receiver/limits.py; null: no limit).
    # Per log record, span, span event and link: attributes past the count are dropped (the
    # first ones kept) and added to the record's dropped_attributes_count.
    attribute_count_limit: Optional[int] = 128
    # The same rule for each resource and instrumentation scope.
    resource_attribute_count_limit: Optional[int] = 128
    # String values are cut to this many characters, bytes values to this many bytes.
    attribute_value_length_limit: Optional[int] = None
    flush_interval_seconds: float = 1.0  # how often held records (throttle records) leave
    # Where stages keep held state across restarts (the journals of noise_control and
    # k8s_attributes, <state_dir>/<stage name>.journal); null: held state lives in memory only
    # and a crash loses it uncounted (docs/architecture.md#failure-handling).
    state_dir: Optional[str] = None
    # A journal past this size is rewritten from the live state it stands for.
    journal_compact_bytes: int = 8 * 1024 * 1024
    # Snapshot each batch before each stage so a failing stage cannot leave it half-changed
    # (costs about one parse per stage per batch; see bench/processor_throughput.py).
    restore_on_failure: bool = True

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "max_request_bytes", "max_inflight_requests", "max_inflight_bytes",
                     "flush_interval_seconds", "body_read_timeout_seconds", "max_json_depth",
                     "journal_compact_bytes")
        for name in ("attribute_count_limit", "resource_attribute_count_limit",
                     "attribute_value_length_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                checks.add(name, f"must be >= 0 or null, got {value}")
        checks.done()


@dataclass(frozen=True)
class ForwardSection:
    """Retries to the next hop, and how long it is considered down after retries ran out."""

    timeout_seconds: float = 5.0  # all tries of one batch to one exporter end within this
    max_attempts: int = 4  # tries of one batch to one exporter, the first included
    initial_backoff_seconds: float = 0.1  # doubled after each retryable failure
    max_backoff_seconds: float = 2.0  # the backoff stops doubling here
    down_seconds: float = 5.0  # a hop out of retries fails fast (503) this long
    # Every otlp/otlphttp/falcosidekick exporter: CA, client certificate (mTLS), server name, bearer token
    # file; or insecure: true.
    tls: ClientTls = ClientTls()

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 1, "max_attempts")
        checks.above(self, 0, "timeout_seconds", "initial_backoff_seconds", "max_backoff_seconds")
        checks.at_least(self, 0, "down_seconds")
        checks.done()


@dataclass(frozen=True)
class ReloadConfig:
    """``reload:``: how rules and config changes are picked up without a restart."""

    # Check the config file and every rules file or directory for changes this often (seconds);
    # 0: only on SIGHUP. ConfigMap updates reach the pod's volume ~1 min after the API change.
    watch_interval_seconds: float = 5.0

    def __post_init__(self) -> None:
        checks = Checks()
        if self.watch_interval_seconds < 0:
            checks.add("watch_interval_seconds",
                       f"must be >= 0 (0: SIGHUP only), got {self.watch_interval_seconds}")
        checks.done()


@dataclass(frozen=True)
class ProcessorSpec:
    """One pipeline entry: registry type, metric label ``name`` and the built Config object."""

    type: str
    name: str
    config: Any


_ENTRY_KEYS = ("type", "name", "config")


def _build_processors(raw: Any, path: str, issues: Issues,
                      line: Optional[int]) -> Optional[tuple[ProcessorSpec, ...]]:
    """``processors:``: each entry's ``config`` is built with its registry type's Config."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        issues.add(path, f"expected a list, got {describe(raw)}", line)
        return None
    specs: list[ProcessorSpec] = []
    names: set[str] = set()
    for i, entry in enumerate(raw):
        entry_path = f"{path}[{i}]"
        entry_line = line_of(raw, i) or line
        if not isinstance(entry, dict):
            issues.add(entry_path, f"expected a mapping with type and config, got "
                       f"{describe(entry)}", entry_line)
            continue
        for key in entry:
            if key not in _ENTRY_KEYS:
                issues.add(join(entry_path, str(key)),
                           f"unknown key (known: {', '.join(_ENTRY_KEYS)})", line_of(entry, key))
        type_name = entry.get("type")
        if not isinstance(type_name, str):
            issues.add(join(entry_path, "type"), f"expected a processor type, one of: "
                       f"{', '.join(registry.type_names())}",
                       line_of(entry, "type") or entry_line)
            continue
        name = entry.get("name", type_name)
        if not isinstance(name, str) or not name:
            issues.add(join(entry_path, "name"), "expected a non-empty string",
                       line_of(entry, "name"))
            continue
        if name in names:
            issues.add(join(entry_path, "name"),
                       f"duplicate stage name {name!r}; set a distinct name",
                       line_of(entry, "name") or entry_line)
        names.add(name)
        try:
            config_type = registry.config_type(type_name)
        except RegistryError as exc:
            issues.add(join(entry_path, "type"), str(exc), line_of(entry, "type"))
            continue
        cfg = build(config_type, entry.get("config"), join(entry_path, "config"), issues,
                    line_of(entry, "config") or entry_line)
        specs.append(ProcessorSpec(type_name, name, cfg))
    return tuple(specs)


def _processors_schema(schema_of: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """An array of ``{type, name, config}``; ``config`` follows the Config of ``type``."""
    variants: list[dict[str, Any]] = []
    for type_name in registry.type_names():
        try:
            config_schema = schema_of(registry.config_type(type_name))
        except RegistryError:  # a package that does not import: its config is not checked
            config_schema = {}
        variants.append({"if": {"properties": {"type": {"const": type_name}},
                                "required": ["type"]},
                         "then": {"properties": {"config": config_schema}}})
    item = {
        "type": "object",
        "properties": {
            "type": {"enum": registry.type_names(),
                     "description": "The registered stage type; config follows its Config."},
            "name": {"type": "string", "minLength": 1,
                     "description": "Stage name in metrics and logs; defaults to type."},
            "config": {"description": "The stage's settings (below, per type); absent: its "
                                      "defaults."},
        },
        "required": ["type"],
        "additionalProperties": False,
        "allOf": variants,
    }
    return {"type": ["array", "null"], "items": item}


# The ``processors:`` list, in the pipeline file and in ``otelguard run``'s file.
ProcessorList = Annotated[tuple[ProcessorSpec, ...], Custom(_build_processors, _processors_schema)]


@dataclass(frozen=True)
class PipelineConfig:
    """A processor service: what it listens on, where it forwards, the stages in order."""

    service: ServiceSection = ServiceSection()
    forward: ForwardSection = ForwardSection()
    # otlp:HOST:PORT | otlphttp:URL | jsonl:PATH | falco-json:PATH|- | falcosidekick:URL, each
    # optionally ?min_priority=P&tags=A,B&exclude_tags=C (docs/falco.md)
    exporters: tuple[str, ...] = ()
    processors: ProcessorList = ()  # the stages, in order
    # Rules and this file re-read without a restart (docs/architecture.md#live-reload).
    reload: ReloadConfig = ReloadConfig()


def build_pipeline_config(data: Any, source: Optional[str] = None) -> PipelineConfig:
    """Validate a whole pipeline document; raises ConfigError listing every problem."""
    return from_mapping(PipelineConfig, data, source=source)


def load_pipeline_config(path: Union[str, Path]) -> PipelineConfig:
    """Read and validate a pipeline YAML file (file:line in every reported issue)."""
    return load_file(PipelineConfig, path)
