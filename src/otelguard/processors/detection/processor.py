"""The ``falco_rules`` stage: Falco-language detection on OTLP log batches.

Where it sits: docs/architecture.md#processor-pipeline; what it emits:
docs/architecture.md#detection-records.

Runs after k8s enrichment (rules read ``k8s.*`` and ``container.image.*`` from the Resource) and
before noise control (which throttles repeated detections). Rules load and compile in
:func:`create`, so a broken rules file stops startup with every problem located; ``process`` is
synchronous, does no I/O and appends detection records to the batch it was given. Span batches
pass through untouched. Cost: see :mod:`otelguard.processors.detection.engine`.
"""

from __future__ import annotations

from otelguard.processors.detection.config import Config, StateConfig
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES, RuleEngine
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.ruleset import Priority
from otelguard.processors.detection.state import DetectionState
from otelguard.processors.stage import Batch

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

TYPE_NAME = "falco_rules"
__all__ = ["Config", "StateConfig", "FalcoRulesProcessor", "create", "TYPE_NAME"]


class FalcoRulesProcessor:
    type_name = TYPE_NAME

    def __init__(self, config: Config) -> None:
        self.config = config
        files = config.rules or tuple(str(p) for p in DEFAULT_RULE_FILES)
        ruleset = load_rules(files)
        self.engine = RuleEngine(
            ruleset, state=DetectionState(config.state),
            min_priority=Priority.parse(config.min_priority),
            disabled_rules=config.disabled_rules,
        )

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        if isinstance(batch, ExportLogsServiceRequest):
            self.engine.evaluate_and_append(batch)
        return batch

    def shutdown(self) -> None:
        pass


def create(config: Config) -> FalcoRulesProcessor:
    return FalcoRulesProcessor(config)
