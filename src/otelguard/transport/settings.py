"""Environment variables read by the outputs; the only place in transport/ that reads the
environment. Declared in :data:`ENVIRONMENT` (published in docs/configuration.md)."""

from __future__ import annotations

import os

from otelguard.config import EnvVar

ENVIRONMENT = (
    EnvVar("TERM", "unset: the status line is refreshed in place when the console is a "
           "terminal",
           "dumb: the console's status line (otelguard run) is written as plain lines even on "
           "a terminal, with no erase sequence"),
)


def dumb_terminal() -> bool:
    return os.environ.get("TERM", "") == "dumb"
