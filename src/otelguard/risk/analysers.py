"""The one list of risk analysers (docs/architecture.md#runtime-risk): one line each, the name
a ``risk`` stage's ``analysers`` config selects and the module holding ``create(config,
dropped)``. Modules are imported only when selected."""

from __future__ import annotations

import importlib
from typing import Any

from otelguard.risk.analyser import Analyser, Dropped

ANALYSERS: dict[str, str] = {
    "packages": "otelguard.risk.packages.usage",  # in-use packages, vulnerability labels
    "grants": "otelguard.risk.grants.analyser",  # granted vs used: capabilities, token, hostPath
    "reach": "otelguard.risk.reach.analyser",  # new edges from a lower tier into a sensitive one
}


def create(name: str, config: Any, dropped: Dropped) -> Analyser:
    """A new analyser ``name`` (a key of :data:`ANALYSERS`) built from the stage's Config."""
    module = importlib.import_module(ANALYSERS[name])
    analyser = module.create(config, dropped)
    if not isinstance(analyser, Analyser):
        raise TypeError(f"risk analyser {name!r}: create() did not return an Analyser")
    return analyser
