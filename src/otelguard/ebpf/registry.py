"""The explicit probe registry: which capture areas exist and which of them import.

Each area is a module ``otelguard.ebpf.<area>`` whose ``create()`` makes a new probe, so every
sensor owns its probes' state (the network probe's connection tracker). An area whose module
is absent, fails to import, or whose probe breaks the contract (``ebpf/probe.py``) is skipped with the reason, so one broken
area never stops the others. Type id ranges must not overlap (one ring buffer carries all).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Iterable, Optional

from otelguard.ebpf.probe import Probe

AREAS = ("process", "file", "network", "privilege", "evasion")
_REQUIRED = ("name", "source_file", "type_ids", "tracepoints", "render", "decode")


@dataclass
class Registry:
    probes: list[Probe] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # area -> reason


def discover(areas: Optional[Iterable[str]] = None) -> Registry:
    """Import each area (all by default) and create its probe, in registry order."""
    out = Registry()
    taken: dict[int, str] = {}
    wanted = tuple(areas) if areas is not None else AREAS
    for area in AREAS:
        if area not in wanted:
            continue
        module_name = f"otelguard.ebpf.{area}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            out.skipped[area] = ("not implemented (no module)" if exc.name == module_name
                                 else f"import failed: {exc}")
            continue
        except Exception as exc:  # a broken area must not stop the others
            out.skipped[area] = f"import failed: {type(exc).__name__}: {exc}"
            continue
        create = getattr(module, "create", None)
        if not callable(create):
            out.skipped[area] = f"{module_name} has no create()"
            continue
        try:
            probe = create()
        except Exception as exc:  # a broken area must not stop the others
            out.skipped[area] = f"create() failed: {type(exc).__name__}: {exc}"
            continue
        missing = [a for a in _REQUIRED if not hasattr(probe, a)]
        if missing:
            out.skipped[area] = f"{module_name}: probe missing {', '.join(missing)}"
            continue
        assert probe is not None
        clash = sorted({taken[t] for t in probe.type_ids if t in taken})
        if clash:
            out.skipped[area] = f"type ids overlap with {', '.join(clash)}"
            continue
        for t in probe.type_ids:
            taken[t] = area
        out.probes.append(probe)
    for area in wanted:
        if area not in AREAS:
            out.skipped[area] = "unknown area"
    return out
