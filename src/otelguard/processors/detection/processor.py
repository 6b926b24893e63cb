"""The ``falco_rules`` stage: Falco-language detection on OTLP log batches.

Where it sits: docs/architecture.md#processor-pipeline; what it emits:
docs/architecture.md#detection-records.

Runs after k8s enrichment (rules read ``k8s.*`` and ``container.image.*`` from the Resource) and
before noise control (which throttles repeated detections). Rules load and compile in
:func:`create`, so a broken rules file stops startup with every problem located; ``process`` is
synchronous, does no I/O and appends detection records to the batch it was given. Span batches
pass through untouched. Cost: see :mod:`otelguard.processors.detection.engine`.

Live reload (docs/architecture.md#live-reload): :meth:`FalcoRulesProcessor.prepare` loads and
compiles a new config's rules off to the side (raising :class:`RulesError` with file:line, the
running engine untouched) and returns the commit that swaps the engine in; the pipeline commits
between batches. The per-process state (:class:`DetectionState`) carries over when its limits
did not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from otelguard.processors.detection.config import Config, StateConfig
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RuleEngine
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.ruleset import Priority, RuleSelection
from otelguard.processors.detection.state import DetectionState
from otelguard.processors.errors import ConfigError
from otelguard.processors.policy.tree import KINDS, load_tree
from otelguard.processors.stage import Batch

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

TYPE_NAME = "falco_rules"
__all__ = ["Config", "StateConfig", "FalcoRulesProcessor", "create", "TYPE_NAME"]


class FalcoRulesProcessor:
    type_name = TYPE_NAME
    appends_only = True  # detections go after the last Resource group; records are only read
    logs_only = True

    def __init__(self, config: Config) -> None:
        self.config = config
        self.engine = _engine(config, None)

    def watched_files(self) -> tuple[str, ...]:
        """The rules files and directories this stage reads (the reloader polls them)."""
        if self.config.policy_dir:
            # every kind: each is part of the revision stamped on detections
            return tuple(str(Path(self.config.policy_dir) / k) for k in KINDS)
        return rule_paths(self.config)

    def rules_info(self) -> tuple[str, int]:
        """(revision: the loaded files' content hash, or the policy tree's; rules in effect),
        for metrics and logs."""
        return (self.engine.policy_revision or self.engine.ruleset.revision,
                len(self.engine.rules))

    def prepare(self, config: Config) -> Callable[[], None]:
        """Load ``config``'s rules now (raises RulesError, nothing changed); the returned commit
        makes them the ones :meth:`process` uses (called between batches)."""
        keep = self.engine.state if config.state == self.config.state else None
        engine = _engine(config, keep)

        def commit() -> None:
            self.config = config
            self.engine = engine
        return commit

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        if isinstance(batch, ExportLogsServiceRequest):
            self.engine.evaluate_and_append(batch)
        return batch

    def shutdown(self) -> None:
        pass


def rule_paths(config: Config) -> tuple[str, ...]:
    """``rules`` (the packaged default when empty), then ``local_rules``."""
    return (config.rules or tuple(str(p) for p in DEFAULT_RULE_FILES)) + config.local_rules


def _engine(config: Config, state: Optional[DetectionState]) -> RuleEngine:
    revision = ""
    if config.policy_dir:
        # the tree must validate as a whole (processors/policy/tree.py); raises with file:line
        tree = load_tree(config.policy_dir, append_output=config.append_output)
        if tree.issues:
            raise ConfigError(tree.issues)
        ruleset, revision = tree.ruleset, tree.revision
    else:
        ruleset = load_rules(rule_paths(config), append_output=config.append_output)
    return RuleEngine(
        ruleset,
        state=state if state is not None else DetectionState(config.state),
        min_priority=Priority.parse(config.min_priority),
        selection=RuleSelection(config.disabled_rules, config.disabled_tags,
                                config.enabled_rules, config.enabled_tags),
        policy_revision=revision,
    ).warm()  # every evt.type's matcher generated here, not on a batch


def create(config: Config) -> FalcoRulesProcessor:
    return FalcoRulesProcessor(config)
