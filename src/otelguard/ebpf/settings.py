"""Sensor settings: the ``sensor:`` section of the YAML config and the package's environment.

Environment variables (read here only):

* ``OTELGUARD_TRACEFS``: tracefs mount (default ``/sys/kernel/tracing``, then
  ``/sys/kernel/debug/tracing``); where tracepoint availability is checked.
* ``OTELGUARD_NODE_NAME``: the Kubernetes node name (set from the downward API in the
  DaemonSet); default: the host name.

YAML (every key optional; unknown keys are errors reported with their dotted path)::

    sensor:
      probes: [process, file, network, privilege, evasion]
      queue_size: 65536          # user-space event queue; full = counted drop (user_queue)
      poll_timeout_ms: 100
      node_name: node-1
      process_table_max: 32768
      long_lived_s: 30           # trace-root rule, see proctable.py
      cgroup_scope: []           # e.g. [/kubepods.slice]: observe only tasks under these
      probe:                     # ProbeConfig
        ringbuf_pages: 2048      # power of two (8 MiB)
        read_path_prefixes: [/etc/, /root/]
        dns_ports: [53]
        argv_max: 20
        arg_len: 128
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from otelguard.ebpf.errors import ConfigError
from otelguard.ebpf.probe import ProbeConfig

ALL_PROBES = ("process", "file", "network", "privilege", "evasion")


def tracefs_root() -> Path:
    env = os.environ.get("OTELGUARD_TRACEFS")
    if env:
        return Path(env)
    for candidate in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(candidate, "events")):
            return Path(candidate)
    return Path("/sys/kernel/tracing")


def default_node_name() -> str:
    return os.environ.get("OTELGUARD_NODE_NAME") or socket.gethostname()


@dataclass(frozen=True)
class SensorConfig:
    """Defaults are the default configuration."""

    probes: tuple[str, ...] = ALL_PROBES
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    queue_size: int = 65536
    poll_timeout_ms: int = 100
    node_name: str = field(default_factory=default_node_name)
    process_table_max: int = 32768
    long_lived_s: float = 30.0
    # cgroup v2 paths; when set, only tasks under them are observed (in-kernel), e.g.
    # ["/kubepods.slice", "/kubepods"] for containers only. Empty: the whole host.
    cgroup_scope: tuple[str, ...] = ()


def _check_type(value: Any, want: type, path: str, problems: list[str]) -> bool:
    ok = isinstance(value, want) and not (want in (int, float) and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        problems.append(f"{path}: expected {want.__name__}, got {type(value).__name__}")
    return ok


def _probe_config(data: Any, path: str, problems: list[str]) -> ProbeConfig:
    if not isinstance(data, Mapping):
        problems.append(f"{path}: expected a mapping")
        return ProbeConfig()
    known = {f.name: f for f in fields(ProbeConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        p = f"{path}.{key}"
        if key not in known or key in ("self_tgid", "scoped"):
            problems.append(f"{p}: unknown key")
            continue
        if key in ("read_path_prefixes", "dns_ports"):
            item = str if key == "read_path_prefixes" else int
            if not isinstance(value, list):
                problems.append(f"{p}: expected a list")
                continue
            good = [_check_type(v, item, f"{p}[{i}]", problems) for i, v in enumerate(value)]
            if all(good):
                kwargs[key] = tuple(value)
        elif _check_type(value, int, p, problems):
            kwargs[key] = value
    cfg = ProbeConfig(**kwargs)
    pages = cfg.ringbuf_pages
    if pages < 1 or pages & (pages - 1):
        problems.append(f"{path}.ringbuf_pages: must be a power of two >= 1, got {pages}")
    if not 1 <= cfg.argv_max <= 64:
        problems.append(f"{path}.argv_max: must be 1..64, got {cfg.argv_max}")
    if not 16 <= cfg.arg_len <= 1024:
        problems.append(f"{path}.arg_len: must be 16..1024, got {cfg.arg_len}")
    for i, prefix in enumerate(cfg.read_path_prefixes):
        if not prefix.startswith("/") or not prefix.isascii() or len(prefix) > 64:
            problems.append(f"{path}.read_path_prefixes[{i}]: must be an absolute ASCII path "
                            f"of at most 64 bytes, got {prefix!r}")
    if len(cfg.read_path_prefixes) > 32:
        problems.append(f"{path}.read_path_prefixes: at most 32 entries")
    return cfg


def sensor_config_from_mapping(data: Any, path: str = "sensor") -> SensorConfig:
    """A SensorConfig from the parsed ``sensor:`` section; all problems raised at once."""
    problems: list[str] = []
    if data is None:
        return SensorConfig()
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: expected a mapping"])
    cfg = SensorConfig()
    known = {f.name for f in fields(SensorConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        p = f"{path}.{key}"
        if key not in known:
            problems.append(f"{p}: unknown key")
        elif key == "probe":
            kwargs[key] = _probe_config(value, p, problems)
        elif key == "probes":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{p}: expected a list of probe names")
                continue
            for i, name in enumerate(value):
                if name not in ALL_PROBES:
                    problems.append(f"{p}[{i}]: unknown probe {name!r} (one of {ALL_PROBES})")
            kwargs[key] = tuple(value)
        elif key == "cgroup_scope":
            if not isinstance(value, list) or not all(
                    isinstance(v, str) and v.startswith("/") for v in value):
                problems.append(f"{p}: expected a list of absolute cgroup paths")
                continue
            if len(value) > 8:
                problems.append(f"{p}: at most 8 entries")
            kwargs[key] = tuple(value)
        elif key == "node_name":
            if _check_type(value, str, p, problems):
                kwargs[key] = value
        elif key == "long_lived_s":
            if _check_type(value, float, p, problems):
                kwargs[key] = float(value)
        elif _check_type(value, int, p, problems):
            if value < 1:
                problems.append(f"{p}: must be >= 1")
            kwargs[key] = value
    if problems:
        raise ConfigError(problems)
    return replace(cfg, **kwargs)


def load_sensor_config(config_file: Optional[str]) -> SensorConfig:
    """The ``sensor:`` section of a YAML file (other sections are other packages' business)."""
    if not config_file:
        return SensorConfig()
    try:
        with open(config_file) as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{config_file}: {exc}"]) from exc
    if doc is None:
        return SensorConfig()
    if not isinstance(doc, Mapping):
        raise ConfigError([f"{config_file}: top level must be a mapping"])
    try:
        return sensor_config_from_mapping(doc.get("sensor"))
    except ConfigError as exc:
        raise ConfigError([f"{config_file}: {p}" for p in exc.problems]) from exc
