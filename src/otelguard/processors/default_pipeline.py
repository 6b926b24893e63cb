"""The pipeline used when no config names one, and ``--rules FILE...`` applied to any pipeline.

Shared by ``otelguard processor`` (processors/cli.py) and ``otelguard run`` (runner.py), so both
commands start the same stages from the same flags.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from otelguard.processors import errors, registry
from otelguard.processors.config import ProcessorSpec
from otelguard.processors.errors import ConfigError, ProcessorsError


def default_specs(rules: Optional[Sequence[str]]) -> tuple[ProcessorSpec, ...]:
    """Without --config: detection (when its package loads) then noise_control."""
    specs: list[ProcessorSpec] = []
    for type_name in registry.type_names():
        e = registry.entry(type_name)
        if e.rules_field is None:
            continue
        try:
            u = registry.unit(type_name)
        except ProcessorsError:
            if rules:
                raise
            continue
        specs.append(ProcessorSpec(type_name, type_name, u.default_config()))
    specs.append(ProcessorSpec("noise_control", "noise_control",
                               registry.unit("noise_control").default_config()))
    return tuple(specs)


def apply_rules(specs: Sequence[ProcessorSpec],
                rules: Optional[Sequence[str]]) -> tuple[ProcessorSpec, ...]:
    """--rules FILE...: set the rules field of every stage that takes rules."""
    if not rules:
        return tuple(specs)
    out = []
    takers = 0
    for spec in specs:
        field = registry.unit(spec.type).rules_field
        if field is not None:
            takers += 1
            spec = dataclasses.replace(
                spec, config=dataclasses.replace(spec.config, **{field: tuple(rules)}))
        out.append(spec)
    if not takers:
        raise ConfigError([errors.ConfigIssue(
            "--rules", "no stage in the pipeline takes rules files")])
    return tuple(out)
