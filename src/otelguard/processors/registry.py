"""The one explicit registry of processor types.

A processor unit is a type name, a frozen ``Config`` dataclass whose defaults are the default
config, the processor class, and a ``create(config) -> Stage`` factory. Each unit is registered
here with one line naming its module; the module is imported only when the type is used, so a
missing or broken package is an error for that type only (:class:`RegistryError`), never for the
whole service. The module must expose ``Config`` and ``create`` (other attribute names can be
given in the entry). ``rules_field`` names the Config field that ``--rules FILE`` fills.

Pipeline order (docs/architecture.md#processor-pipeline): k8s enrichment -> detection ->
profiles -> noise control -> incidents -> response; risk reads raw records only, so any
place after k8s enrichment works (registered last); before incidents, stories cite its findings.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from otelguard.processors.errors import RegistryError
from otelguard.processors.stage import Stage


@dataclass(frozen=True)
class ProcessorEntry:
    """Where a processor type lives; resolved lazily by :func:`unit`."""

    type_name: str
    module: str
    config_attr: str = "Config"
    factory_attr: str = "create"
    rules_field: Optional[str] = None
    description: str = ""


@dataclass(frozen=True)
class ProcessorUnit:
    """A resolved processor type: its Config dataclass and factory."""

    type_name: str
    config_type: type[Any]
    factory: Callable[[Any], Stage]
    rules_field: Optional[str] = None

    def default_config(self) -> Any:
        return self.config_type()


_ENTRIES: dict[str, ProcessorEntry] = {}
_resolved: dict[str, ProcessorUnit] = {}
_lock = threading.Lock()


def register(entry: ProcessorEntry) -> None:
    """Add an entry (tests may register extra types; a duplicate type name is a bug)."""
    if entry.type_name in _ENTRIES:
        raise RegistryError(f"processor type {entry.type_name!r} is already registered")
    _ENTRIES[entry.type_name] = entry


def unregister(type_name: str) -> None:
    """Remove an entry added by a test."""
    _ENTRIES.pop(type_name, None)
    _resolved.pop(type_name, None)


# One line per processor type, in pipeline order.
register(ProcessorEntry("k8s_attributes", "otelguard.processors.k8s",
                        description="Kubernetes metadata on Resources and network peers"))
register(ProcessorEntry("falco_rules", "otelguard.processors.detection.processor",
                        rules_field="rules", description="Falco-language rules -> detections"))
register(ProcessorEntry("profiles", "otelguard.processors.profiles",
                        description="per-workload behaviour profiles -> unexpected behaviour"))
register(ProcessorEntry("noise_control", "otelguard.processors.noise",
                        description="throttle repeats per distinct detection key"))
register(ProcessorEntry("incidents", "otelguard.processors.incidents",
                        description="detections grouped into incidents told as cited stories"))
register(ProcessorEntry("response", "otelguard.processors.response",
                        description="response policies -> requests a human approves, actions, "
                        "audit chain"))
register(ProcessorEntry("risk", "otelguard.processors.risk",
                        description="runtime risk context: packages in use, grants used, "
                        "sensitive reach (docs/risk.md)"))


def type_names() -> list[str]:
    return list(_ENTRIES)


def entry(type_name: str) -> ProcessorEntry:
    try:
        return _ENTRIES[type_name]
    except KeyError:
        known = ", ".join(_ENTRIES) or "none"
        raise RegistryError(f"unknown processor type {type_name!r} (known: {known})") from None


def unit(type_name: str) -> ProcessorUnit:
    """Import the type's module once and check the unit contract."""
    with _lock:
        cached = _resolved.get(type_name)
        if cached is not None:
            return cached
        e = entry(type_name)
        try:
            module = importlib.import_module(e.module)
        except Exception as exc:  # any import failure disables this type only
            raise RegistryError(
                f"processor type {type_name!r}: cannot import {e.module}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        config_type = getattr(module, e.config_attr, None)
        factory = getattr(module, e.factory_attr, None)
        if not (isinstance(config_type, type) and dataclasses.is_dataclass(config_type)):
            raise RegistryError(
                f"processor type {type_name!r}: {e.module}.{e.config_attr} is not a dataclass"
            )
        if not callable(factory):
            raise RegistryError(
                f"processor type {type_name!r}: {e.module}.{e.factory_attr} is not callable"
            )
        if e.rules_field is not None and e.rules_field not in {
            f.name for f in dataclasses.fields(config_type)
        }:
            raise RegistryError(
                f"processor type {type_name!r}: Config has no field {e.rules_field!r} for --rules"
            )
        resolved = ProcessorUnit(type_name, config_type, factory, e.rules_field)
        _resolved[type_name] = resolved
        return resolved


def config_type(type_name: str) -> type[Any]:
    return unit(type_name).config_type


def create(type_name: str, config: Any = None) -> Stage:
    """A new stage of ``type_name`` (default config when ``config`` is None)."""
    u = unit(type_name)
    cfg = u.default_config() if config is None else config
    if not isinstance(cfg, u.config_type):
        raise RegistryError(
            f"processor type {type_name!r} expects {u.config_type.__name__}, "
            f"got {type(cfg).__name__}"
        )
    try:
        stage = u.factory(cfg)
    except Exception as exc:
        raise RegistryError(
            f"processor type {type_name!r}: create() failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(stage, Stage):
        raise RegistryError(f"processor type {type_name!r}: create() did not return a Stage")
    return stage
