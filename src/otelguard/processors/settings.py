"""Environment variables read by the processor service; the only place in processors/ that reads
the environment (STYLE.md rule 9). Each is read when the service starts.

* ``OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF`` (default unset): when ``1``, start even if protobuf is
  not the upb backend. Without upb, parsing is ~100x slower (reference §8.3), so by default the
  service refuses to start rather than run at a fraction of its capacity.
* ``OTELGUARD_PROCESSOR_FORWARD_THREADS`` (default: ``service.max_inflight_requests``): worker
  threads that run the blocking transport calls.
* ``OTELGUARD_PROCESSOR_GRACE_SECONDS`` (default 5): how long shutdown waits for requests in
  flight before closing the listeners.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from otelguard.processors.errors import ConfigError, ConfigIssue

# The command-line defaults (cli.py); a flag overrides the config file only when it differs.
DEFAULT_LISTEN = "127.0.0.1:4317"
DEFAULT_METRICS = "127.0.0.1:9466"


@dataclass(frozen=True)
class Settings:
    allow_pure_python_protobuf: bool = False
    forward_threads: Optional[int] = None
    grace_seconds: float = 5.0


def read(environ: Optional[Mapping[str, str]] = None) -> Settings:
    env = os.environ if environ is None else environ
    issues: list[ConfigIssue] = []
    allow = env.get("OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF", "") == "1"
    threads: Optional[int] = None
    raw_threads = env.get("OTELGUARD_PROCESSOR_FORWARD_THREADS")
    if raw_threads:
        try:
            threads = int(raw_threads)
            if threads < 1:
                raise ValueError
        except ValueError:
            issues.append(ConfigIssue("OTELGUARD_PROCESSOR_FORWARD_THREADS",
                                      f"expected a positive integer, got {raw_threads!r}"))
    grace = 5.0
    raw_grace = env.get("OTELGUARD_PROCESSOR_GRACE_SECONDS")
    if raw_grace:
        try:
            grace = float(raw_grace)
            if grace < 0:
                raise ValueError
        except ValueError:
            issues.append(ConfigIssue("OTELGUARD_PROCESSOR_GRACE_SECONDS",
                                      f"expected a number >= 0, got {raw_grace!r}"))
    if issues:
        raise ConfigError(issues)
    return Settings(allow, threads, grace)
