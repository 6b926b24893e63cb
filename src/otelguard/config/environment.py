"""The declaration of an environment variable a package reads (STYLE.md rule 10).

Each package reads the environment in one settings module, and that module declares what it
reads as ``ENVIRONMENT: tuple[EnvVar, ...]``. The configuration reference
(``docs/configuration.md``, ``otelguard config reference``) is generated from these
declarations, and ``tests/config/test_reference.py`` fails when code reads a variable that no
settings module declares, so the description lives beside the code that reads the variable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    """One variable: its name, what happens when it is unset, and what it does."""

    name: str
    unset: str  # the behaviour or value when the variable is unset or empty
    description: str
