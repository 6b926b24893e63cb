"""The pipeline used when no config names one, and ``--rules FILE...`` applied to any pipeline.

Shared by ``otelguard processor`` (processors/cli.py) and ``otelguard run`` (runner.py), so both
commands start the same stages from the same flags.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional, Sequence

from otelguard.config import parse_duration
from otelguard.processors import errors, registry
from otelguard.processors.config import ProcessorSpec
from otelguard.processors.errors import ConfigError, ProcessorsError

log = logging.getLogger(__name__)


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


def apply_policy(specs: Sequence[ProcessorSpec], policy: Optional[str],
                 rules: Optional[Sequence[str]] = None) -> tuple[ProcessorSpec, ...]:
    """``--policy DIR`` (docs/policy.md#running-a-tree): every falco_rules stage runs that
    tree's rules and rule exceptions (``policy_dir``, its rules files cleared), every profiles
    stage enforces its profiles/ and profile exceptions, every response stage takes its
    responses/ as the policies. A tree with a profiles/ directory adds a profiles stage before
    noise_control when there is none; one with response policies needs a response stage in the
    pipeline to run (it is not added: what it may do is the operator's choice of stage config;
    without one a warning says they are not run)."""
    if policy is None:
        return tuple(specs)
    if rules:
        raise ConfigError([errors.ConfigIssue("--policy", "not with --rules: the tree's rules/ "
                                              "are the rules")])
    out = []
    for spec in specs:
        if spec.type == "falco_rules":
            spec = dataclasses.replace(spec, config=dataclasses.replace(
                spec.config, policy_dir=policy, rules=(), local_rules=()))
        elif spec.type == "profiles":
            spec = dataclasses.replace(spec, config=dataclasses.replace(
                spec.config, policy_dir=policy))
        elif spec.type == "response":
            spec = dataclasses.replace(spec, config=dataclasses.replace(
                spec.config, policy_dir=policy, policies=()))
        out.append(spec)
    if not any(s.type == "falco_rules" for s in out):
        raise ConfigError([errors.ConfigIssue("--policy", "no falco_rules stage in the "
                                              "pipeline")])
    root = Path(policy)
    if (root / "profiles").is_dir() and not any(s.type == "profiles" for s in out):
        config = dataclasses.replace(registry.unit("profiles").default_config(),
                                     policy_dir=policy)
        at = next((i for i, s in enumerate(out) if s.type == "noise_control"), len(out))
        out.insert(at, ProcessorSpec("profiles", "profiles", config))
    responses = root / "responses"
    if responses.is_dir() and any(f.suffix in (".yaml", ".yml") for f in responses.iterdir()) \
            and not any(s.type == "response" for s in out):
        log.warning("--policy: %s holds response policies, validated with the tree but not run: "
                    "the pipeline has no response stage (add one to processors:, "
                    "docs/response.md)", responses)
    return tuple(out)


def apply_profiles(specs: Sequence[ProcessorSpec], directory: Optional[str],
                   learn_for: Optional[str]) -> tuple[ProcessorSpec, ...]:
    """``--profiles DIR [--learn-for DURATION]``: the pipeline's profiles stage gets that
    directory (and window), or one is added before noise_control (else last)."""
    if directory is None:
        if learn_for is not None:
            raise ConfigError([errors.ConfigIssue("--learn-for", "needs --profiles DIR")])
        return tuple(specs)
    changes: dict[str, object] = {"directory": directory}
    if learn_for is not None:
        try:
            changes["learn_seconds"] = parse_duration(learn_for)
        except ValueError as exc:
            raise ConfigError([errors.ConfigIssue("--learn-for", str(exc))]) from None
    unit = registry.unit("profiles")
    out = list(specs)
    for i, spec in enumerate(out):
        if spec.type == "profiles":
            out[i] = dataclasses.replace(spec, config=_profiles_config(spec.config, changes))
            return tuple(out)
    stage = ProcessorSpec("profiles", "profiles",
                          _profiles_config(unit.default_config(), changes))
    at = next((i for i, s in enumerate(out) if s.type == "noise_control"), len(out))
    out.insert(at, stage)
    return tuple(out)


def _profiles_config(config: object, changes: dict[str, object]) -> object:
    fields = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]  # a registry Config is a dataclass
    kept = {k: v for k, v in changes.items() if k in fields}
    learn = kept.get("learn_seconds")
    if isinstance(learn, float):  # a short window gets proportionally short buckets
        kept["bucket_seconds"] = min(getattr(config, "bucket_seconds"), learn / 8)
    return dataclasses.replace(config, **kept)  # type: ignore[type-var]  # as above


def apply_incidents(specs: Sequence[ProcessorSpec], enabled: bool) -> tuple[ProcessorSpec, ...]:
    """``otelguard run``: an incidents stage last (after noise_control, so every detection it
    cites left the pipeline; before a response stage, which responds to incidents too) unless
    the pipeline has one or ``--no-incidents`` was given."""
    if not enabled or any(spec.type == "incidents" for spec in specs):
        return tuple(specs)
    at = next((i for i, spec in enumerate(specs) if spec.type == "response"), len(specs))
    incidents = ProcessorSpec("incidents", "incidents", registry.unit("incidents").default_config())
    return (*specs[:at], incidents, *specs[at:])
