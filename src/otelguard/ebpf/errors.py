"""The ebpf package's exception tree. Foreign errors (BCC, OSError from /proc) are wrapped at
the boundary where they happen, so callers catch one family. An invalid ``sensor:`` section is
the one config error of every config kind, :class:`otelguard.config.ConfigError`."""

from __future__ import annotations


class EbpfError(Exception):
    """Base of every error this package raises on purpose."""


class LoadError(EbpfError):
    """A BPF program did not compile, load or attach; ``detail`` is the compiler/verifier text."""

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(message if not detail else f"{message}\n{detail}")


class SensorError(EbpfError):
    """The sensor cannot run at all (no probe could load, or BCC is missing)."""


class ConsumerConflict(EbpfError):
    """A second consumer drained a sensor while another one was draining it: the queue hands
    each record to one consumer only, so both would lose records silently."""
