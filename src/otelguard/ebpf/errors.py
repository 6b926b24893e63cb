"""The ebpf package's exception tree. Foreign errors (BCC, OSError from /proc) are wrapped at
the boundary where they happen, so callers catch one family."""

from __future__ import annotations


class EbpfError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EbpfError):
    """The ``sensor:`` config section is invalid; ``problems`` are all of them, dotted paths."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid sensor config:\n  " + "\n  ".join(self.problems))


class LoadError(EbpfError):
    """A BPF program did not compile, load or attach; ``detail`` is the compiler/verifier text."""

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(message if not detail else f"{message}\n{detail}")


class SensorError(EbpfError):
    """The sensor cannot run at all (no probe could load, or BCC is missing)."""
