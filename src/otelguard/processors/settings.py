"""Environment variables read by the processor service; the only place in processors/ that reads
the environment (one settings module per package). Each is read when the service starts and is
declared in :data:`ENVIRONMENT` (published in docs/configuration.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, TypeVar

from otelguard.config import EnvVar
from otelguard.processors.errors import ConfigError, ConfigIssue

ENVIRONMENT = (
    EnvVar("OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF", "refuse to start without protobuf's upb "
           "backend",
           "1: start even if protobuf is not the upb backend; parsing is then ~100x slower, so "
           "by default the service refuses to start rather than run at a fraction of its "
           "capacity"),
    EnvVar("OTELGUARD_PROCESSOR_FORWARD_THREADS", "service.max_inflight_requests",
           "worker threads that run the blocking transport calls (a positive integer)"),
    EnvVar("OTELGUARD_PROCESSOR_GRACE_SECONDS", "5",
           "how long shutdown waits for requests in flight before closing the listeners "
           "(seconds, >= 0)"),
)

# The command-line defaults (cli.py); a flag overrides the config file only when it differs.
DEFAULT_LISTEN = "127.0.0.1:4317"
DEFAULT_METRICS = "127.0.0.1:9466"

T = TypeVar("T", int, float)


@dataclass(frozen=True)
class Settings:
    allow_pure_python_protobuf: bool = False
    forward_threads: Optional[int] = None
    grace_seconds: float = 5.0


def _number(env: Mapping[str, str], name: str, convert: Callable[[str], T], minimum: T,
            expected: str, issues: list[ConfigIssue]) -> Optional[T]:
    """The variable as a number >= ``minimum``; None when unset, an issue when malformed."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = convert(raw)
        if value >= minimum:
            return value
    except ValueError:
        pass
    issues.append(ConfigIssue(name, f"expected {expected}, got {raw!r}"))
    return None


def read(environ: Optional[Mapping[str, str]] = None) -> Settings:
    env = os.environ if environ is None else environ
    issues: list[ConfigIssue] = []
    allow = env.get("OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF", "") == "1"
    threads = _number(env, "OTELGUARD_PROCESSOR_FORWARD_THREADS", int, 1,
                      "a positive integer", issues)
    grace = _number(env, "OTELGUARD_PROCESSOR_GRACE_SECONDS", float, 0.0, "a number >= 0", issues)
    if issues:
        raise ConfigError(issues)
    return Settings(allow, threads, 5.0 if grace is None else grace)
