"""The ``falco_rules`` stage's config: frozen dataclasses whose defaults are the default config.

Loaded with the processors' generic loader (unknown keys are errors, every problem reported with
its dotted path and file:line)::

    processors:
      - type: falco_rules
        config:
          rules: [/etc/otelguard/falco_rules.yaml, /etc/otelguard/local_rules.yaml]
          disabled_rules: ["Terminal shell in container"]
          min_priority: notice
          state: {socket_window_seconds: 300, max_processes: 20000}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from otelguard.processors.detection.loader import Priority
from otelguard.processors.detection.state import StateLimits


@dataclass(frozen=True)
class StateConfig:
    """Bounds of the stage's per-process / per-container memory (see detection.state)."""

    socket_window_seconds: float = 600.0
    written_window_seconds: float = 600.0
    max_processes: int = 65536
    max_containers: int = 4096
    max_paths_per_container: int = 1024
    max_sockets: int = 65536

    def __post_init__(self) -> None:
        for name in ("socket_window_seconds", "written_window_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_processes", "max_containers", "max_paths_per_container",
                     "max_sockets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def limits(self) -> StateLimits:
        return StateLimits(self.socket_window_seconds, self.written_window_seconds,
                           self.max_processes, self.max_containers, self.max_paths_per_container,
                           self.max_sockets)


@dataclass(frozen=True)
class Config:
    """``rules`` empty = the packaged default: Falco's stable rules + otelguard's own."""

    rules: tuple[str, ...] = ()
    disabled_rules: tuple[str, ...] = ()
    min_priority: str = "debug"
    state: StateConfig = field(default_factory=StateConfig)

    def __post_init__(self) -> None:
        try:
            Priority.parse(self.min_priority)
        except KeyError:
            raise ValueError(
                f"unknown priority {self.min_priority!r} (one of "
                + ", ".join(p.name.lower() for p in Priority) + ")") from None
