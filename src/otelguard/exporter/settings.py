"""Environment settings of the exporter and the node identity it stamps on every Resource.

Read once per process (the node does not change under a running agent); the variables are
declared in :data:`ENVIRONMENT` (published in docs/configuration.md).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Mapping, Optional

from otelguard.config import EnvVar

MACHINE_ID_PATH = "/etc/machine-id"

ENVIRONMENT = (
    EnvVar("OTELGUARD_NODE_NAME", "the host name",
           "k8s.node.name of the node identity stamped on every Resource"),
    EnvVar("OTELGUARD_HOST_ID", "the content of /etc/machine-id (empty if absent)",
           "host.id on every Resource"),
    EnvVar("OTEL_EXPORTER_OTLP_ENDPOINT", "`otelguard agent` needs --otlp-endpoint",
           "the agent's OTLP/gRPC endpoint when --otlp-endpoint is not given, as OTel SDKs "
           "read it (`http(s)://HOST:PORT` or `HOST:PORT`; port 4317 if absent). The scheme "
           "does not choose TLS: that stays --otlp-ca/--otlp-insecure or exporter.tls"),
    EnvVar("OTEL_EXPORTER_OTLP_HEADERS", "no extra headers",
           "`key1=value1,key2=value2` (values percent-decoded), sent as gRPC metadata with "
           "every agent export, as OTel SDKs send them (e.g. a tenant header of the gateway)"),
    EnvVar("OTEL_RESOURCE_ATTRIBUTES", "nothing added",
           "`key1=value1,key2=value2` (values percent-decoded) added to every Resource the "
           "agent and `otelguard run` send (e.g. `k8s.cluster.name=prod-eu`); an attribute "
           "the sensor sets wins, and keys that describe a workload (service.*, k8s.pod.*, "
           "container.* ...) are ignored with a warning: they differ per record"),
)

log = logging.getLogger(__name__)
DEFAULT_OTLP_GRPC_PORT = 4317
# Resource keys that differ per workload: one value for every record would be wrong (and would
# keep the k8s enrichment, which never overwrites, from setting the right one).
WORKLOAD_KEY_PREFIXES = ("service.", "k8s.pod.", "k8s.namespace.", "k8s.deployment.",
                         "k8s.statefulset.", "k8s.daemonset.", "k8s.job.", "k8s.cronjob.",
                         "k8s.replicaset.", "k8s.container.", "container.", "process.",
                         "otelguard.")


def key_value_list(text: str) -> tuple[tuple[str, str], ...]:
    """The W3C-baggage-like ``k=v,k2=v2`` list of the OTel environment variables (values
    percent-decoded, blanks around items ignored, items without ``=`` skipped)."""
    out: list[tuple[str, str]] = []
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            out.append((key.strip(), urllib.parse.unquote(value.strip())))
    return tuple(out)


def otlp_endpoint(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` as the agent's ``HOST:PORT`` (None when unset)."""
    env = os.environ if env is None else env
    raw = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not raw:
        return None
    parsed = urllib.parse.urlsplit(raw if "://" in raw else f"//{raw}")
    if not parsed.hostname:
        return raw  # reported by the agent's HOST:PORT check
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{parsed.port or DEFAULT_OTLP_GRPC_PORT}"


def otlp_headers(env: Optional[Mapping[str, str]] = None) -> tuple[tuple[str, str], ...]:
    """``OTEL_EXPORTER_OTLP_HEADERS`` as gRPC metadata (keys lower case, as gRPC requires)."""
    env = os.environ if env is None else env
    return tuple((k.lower(), v) for k, v in
                 key_value_list(env.get("OTEL_EXPORTER_OTLP_HEADERS", "")))


def resource_attributes(env: Optional[Mapping[str, str]] = None) -> tuple[tuple[str, str], ...]:
    """``OTEL_RESOURCE_ATTRIBUTES`` without the per-workload keys (each ignored is logged)."""
    env = os.environ if env is None else env
    kept = []
    for key, value in key_value_list(env.get("OTEL_RESOURCE_ATTRIBUTES", "")):
        if key.startswith(WORKLOAD_KEY_PREFIXES):
            log.warning("OTEL_RESOURCE_ATTRIBUTES: %s ignored: it describes a workload, and "
                        "one value for every record would be wrong", key)
            continue
        kept.append((key, value))
    return tuple(kept)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_name: str
    host_name: str
    host_id: str
    # OTEL_RESOURCE_ATTRIBUTES: added to every Resource after the sensor's own attributes
    extra: tuple[tuple[str, str], ...] = ()


def node_identity(env: Optional[Mapping[str, str]] = None,
                  machine_id_path: str = MACHINE_ID_PATH) -> NodeIdentity:
    env = os.environ if env is None else env
    host_name = socket.gethostname()
    host_id = env.get("OTELGUARD_HOST_ID", "")
    if not host_id:
        try:
            with open(machine_id_path, encoding="ascii") as fh:
                host_id = fh.read().strip()
        except OSError:
            host_id = ""
    return NodeIdentity(
        node_name=env.get("OTELGUARD_NODE_NAME", "") or host_name,
        host_name=host_name,
        host_id=host_id,
        extra=resource_attributes(env),
    )
