"""Sensor settings: the ``sensor:`` section of the YAML config and the package's environment.

Environment variables: read here only, declared in :data:`ENVIRONMENT` (published in
docs/configuration.md).

YAML (every key optional; built by the one config loader, :mod:`otelguard.config`: unknown keys
are errors, every problem reported at once with its dotted path and file:line)::

    sensor:
      probes: [process, file, network, privilege, evasion]
      queue_size: 65536          # user-space event queue; full = counted drop (user_queue)
      poll_timeout_ms: 100
      ring_reader: auto          # native | python | bcc (ringbuf.py); auto: native if built
      native_lane: auto          # on | off (lane.py); auto: on when the extension is built
      node_name: node-1
      process_table_max: 32768
      long_lived_s: 30           # trace-root rule, see proctable.py
      cgroup_scope: []           # e.g. [/kubepods.slice]: observe only tasks under these
      read_rules: []             # Falco rules whose reads make the kernel read filter
      read_rules_packaged: false # the packaged rules first (as a falco_rules stage's default)
      program_cache: true        # load the compiled program from the cache when unchanged
      program_cache_dir: ""      # "": /var/cache/otelguard/bpf (root), else ~/.cache/otelguard/bpf
      budget:                    # BudgetConfig: per-cgroup record budget in the kernel
        records_per_s: 10000     # per cgroup, sustained; 0 turns the budget off
        burst: 100000
        reserve_per_s: 200       # per high-value class (exec, privilege, file) once empty
        reserve_burst: 1000
        max_cgroups: 10240
        report_top: 5            # offenders named in the log and the exit summary
      probe:                     # ProbeConfig
        ringbuf_pages: 2048      # power of two (8 MiB)
        read_path_prefixes: [/srv/secrets/]  # added to what the rules need (unset: only that)
        read_paths: [/etc/app/token]         # exact names, added likewise
        dedup_window_ms: 1000    # identical opens of a process counted, not re-sent (0: off)
        dedup_entries: 4096
        dns_ports: [53]
        argv_max: 20
        arg_len: 128
        env_names: [LD_PRELOAD, GLIBC_TUNABLES]  # proc.env: these names only ([]: no scan)
        env_max: 4
        env_len: 256
"""

from __future__ import annotations

import os
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from otelguard.config import Checks, EnvVar, load_section
from otelguard.ebpf.budget import BudgetConfig
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.lane import LaneMode
from otelguard.ebpf.ringbuf import ReaderKind

ProbeName = Literal["process", "file", "network", "privilege", "evasion"]
ALL_PROBES: tuple[ProbeName, ...] = typing.get_args(ProbeName)

ENVIRONMENT = (
    EnvVar("OTELGUARD_TRACEFS", "/sys/kernel/tracing, else /sys/kernel/debug/tracing (the first "
           "with an events/ directory)",
           "tracefs mount point where tracepoint availability is checked (agent, run, doctor); "
           "set it when tracefs is mounted elsewhere"),
    EnvVar("OTELGUARD_NODE_NAME", "the host name",
           "Kubernetes node name on every record (the default of sensor.node_name); the "
           "DaemonSet sets it from the downward API (spec.nodeName)"),
    EnvVar("OTELGUARD_KERNEL_HEADERS", "unset: only the host's /lib/modules/<release>/build",
           "a merged kernel header tree BCC compiles with when the host has none for the "
           "running kernel (the agent image sets it to its Debian fallback; ebpf/headers.py)"),
    EnvVar("BCC_KERNEL_SOURCE", "unset",
           "BCC's own header override; when set it wins over the host's and the image's headers "
           "(read to report it in doctor; set by the loader when it picks the image's tree)"),
)


def tracefs_root() -> Path:
    env = os.environ.get("OTELGUARD_TRACEFS")
    if env:
        return Path(env)
    for candidate in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if os.path.isdir(os.path.join(candidate, "events")):
            return Path(candidate)
    return Path("/sys/kernel/tracing")


def kernel_header_env() -> tuple[Optional[str], Optional[str]]:
    """(``BCC_KERNEL_SOURCE``, ``OTELGUARD_KERNEL_HEADERS``), each None when unset or empty."""
    return (os.environ.get("BCC_KERNEL_SOURCE") or None,
            os.environ.get("OTELGUARD_KERNEL_HEADERS") or None)


def default_cache_dir() -> str:
    """Where compiled programs are kept when ``sensor.program_cache_dir`` is empty."""
    if os.geteuid() == 0:
        return "/var/cache/otelguard/bpf"
    return os.path.expanduser("~/.cache/otelguard/bpf")


def default_node_name() -> str:
    return os.environ.get("OTELGUARD_NODE_NAME") or socket.gethostname()


@dataclass(frozen=True)
class SensorConfig:
    """The eBPF sensor: which probes load, kernel-side filters, queue and table bounds."""

    probes: tuple[ProbeName, ...] = ALL_PROBES  # probe areas to load
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    queue_size: int = 65536  # user-space event queue; full = counted drop (user_queue)
    poll_timeout_ms: int = 100  # how long one ring-buffer poll waits for records
    # ring-buffer consumer (ebpf/ringbuf.py): native (Rust extension, built by `make setup`),
    # python (mmap, no extension), bcc (BCC's per-record callback); auto: native when built,
    # else python
    ring_reader: ReaderKind = "auto"
    # file opens of processes already seen encoded to OTLP in native code (ebpf/lane.py,
    # docs/architecture.md#native-lane); auto: on when the native extension is built
    native_lane: LaneMode = "auto"
    # Kubernetes node name on every record; default: OTELGUARD_NODE_NAME, else the host name
    node_name: str = field(default_factory=default_node_name)
    process_table_max: int = 32768  # live processes tracked at once (ancestry, trace roots)
    long_lived_s: float = 30.0  # a child of a parent running longer than this starts a trace
    # cgroup v2 paths; when set, only tasks under them are observed (in-kernel), e.g.
    # ["/kubepods.slice", "/kubepods"] for containers only. Empty: the whole host.
    cgroup_scope: tuple[str, ...] = ()
    # records per second and burst per cgroup, checked in the kernel before every record
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    # Falco rules files or directories (the processor's: mount the same ConfigMap) whose
    # read-only opens the kernel must send: exactly the paths and prefixes their conditions
    # test, plus probe.read_path_prefixes/read_paths when set (unset, the built-in prefix list
    # applies only while no rules are known). Read at start. `otelguard run` uses its own
    # falco_rules stages' rules when this is empty.
    read_rules: tuple[str, ...] = ()
    # Load the packaged rules (Falco's stable set + otelguard's, what a falco_rules stage with
    # empty `rules` runs) before read_rules, so site rules that append to or override them load
    # as they do in the processor. The Helm chart sets it with read_rules = its rules ConfigMap.
    read_rules_packaged: bool = False
    # Keep what BCC compiled and load it again, without the compiler, while the rendered program,
    # the kernel release and BCC's version are unchanged (seconds instead of ~20 s, and no LLVM
    # in memory). False: compile at every start, the cache neither read nor written.
    program_cache: bool = True
    # Directory of the program cache; "" = /var/cache/otelguard/bpf as root, else
    # ~/.cache/otelguard/bpf. On Kubernetes, a hostPath keeps it across pod restarts.
    program_cache_dir: str = ""

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 1, "queue_size", "poll_timeout_ms", "process_table_max")
        for i, path in enumerate(self.cgroup_scope):
            if not path.startswith("/"):
                checks.add(f"cgroup_scope[{i}]", f"expected an absolute cgroup path, got {path!r}")
        if len(self.cgroup_scope) > 8:
            checks.add("cgroup_scope", "at most 8 entries")
        checks.done()


def load_sensor_config(config_file: Optional[str]) -> SensorConfig:
    """The ``sensor:`` section of an agent or ``otelguard run`` file, for ``otelguard ebpf
    render``; the commands that run the sensor load their whole file (agent.py, runner.py)."""
    if not config_file:
        return SensorConfig()
    return load_section(SensorConfig, config_file, "sensor")
