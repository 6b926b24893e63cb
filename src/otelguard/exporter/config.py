"""The ``exporter:`` section of the agent config (YAML), as a frozen dataclass.

Defaults are the default config. Unknown keys and bad values are collected and reported at
once with their dotted path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping


class ExporterConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ExporterConfig:
    max_batch: int = 512  # records per request; also the drain size
    flush_interval_s: float = 0.5  # a partial batch waits at most this long (200-1000 ms)
    drain_timeout_s: float = 0.1  # how long one drain() may block waiting for events
    max_open_spans: int = 65536  # LRU bound on open process/connection spans

    @staticmethod
    def from_mapping(data: Mapping[str, Any] | None, path: str = "exporter") -> "ExporterConfig":
        data = data or {}
        problems: list[str] = []
        if not isinstance(data, Mapping):
            raise ExporterConfigError([f"{path}: expected a mapping, got {type(data).__name__}"])
        known = {f.name: f for f in fields(ExporterConfig)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                problems.append(f"{path}.{key}: unknown key (known: {', '.join(sorted(known))})")
                continue
            want = int if f.type in ("int", int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    want is int and not isinstance(value, int)):
                problems.append(f"{path}.{key}: expected {want.__name__}, got {value!r}")
                continue
            if value <= 0:
                problems.append(f"{path}.{key}: must be > 0, got {value!r}")
                continue
            values[key] = want(value)
        cfg = ExporterConfig(**values) if not problems else ExporterConfig()
        if not problems and not 0.05 <= cfg.flush_interval_s <= 10:
            problems.append(f"{path}.flush_interval_s: must be within 0.05-10 s, got {cfg.flush_interval_s}")
        if not problems and cfg.max_batch > 8192:
            problems.append(f"{path}.max_batch: at most 8192 (one request must stay under the "
                            f"receiver's 16 MiB limit), got {cfg.max_batch}")
        if not problems and cfg.max_open_spans < 2:
            problems.append(f"{path}.max_open_spans: must be >= 2")
        if problems:
            raise ExporterConfigError(problems)
        return cfg
