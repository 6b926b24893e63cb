"""The ``grants`` section of the ``risk`` stage's config (docs/risk.md#configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from otelguard.config import Checks

# the sensor's default read prefixes (ebpf ProbeConfig.read_path_prefixes, the same list: a
# test keeps them equal): read-only opens elsewhere never reach the processor
SENSOR_READ_PREFIXES = (
    "/etc/", "/root/", "/boot/", "/proc/sys/", "/sys/fs/cgroup", "/dev/", "/var/run/secrets",
    "/run/secrets", "/home/", "/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/var/log/",
)


@dataclass(frozen=True)
class GrantsConfig:
    """Granted-vs-used analysis (docs/risk.md#granted-vs-used)."""

    # Observation needed before a grant can be called unused (per workload, from its first
    # record); a shorter window reports grants that a rare code path (a monthly job, failover)
    # would have used.
    learning_seconds: float = 86400.0
    # The sensor's read prefixes (its kernel filter): a read-only open elsewhere is never seen,
    # so a hostPath mounted outside them is judged on writes only. Keep equal to
    # sensor.probe.read_path_prefixes.
    read_prefixes: tuple[str, ...] = SENSOR_READ_PREFIXES

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 0, "learning_seconds")
        for i, prefix in enumerate(self.read_prefixes):
            if not prefix.startswith("/"):
                checks.add(f"read_prefixes[{i}]", f"must be an absolute path, got {prefix!r}")
        checks.done()
