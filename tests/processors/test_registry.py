"""Conformance over the registry: every registered processor passes the shared lifecycle test."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv
from otelguard.processors import registry
from otelguard.processors.errors import RegistryError
from otelguard.otlp.messages import count_records, get_attr, iter_log_records
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.stage import Stage

from . import samples


def _k8s_offline() -> Stage:
    """k8s_attributes against an empty in-memory cluster (the real API server is e2e-tested)."""
    from otelguard.processors.k8s import Config, create
    from otelguard.processors.k8s.source import InMemorySource

    return create(Config(wait_for_sync_seconds=0, hold_seconds=0), InMemorySource())  # type: ignore[call-arg]


# Types whose default config needs the outside world get a conformance factory here; every
# other registered type is created by the registry with its default config.
OFFLINE: dict[str, Callable[[], Stage]] = {"k8s_attributes": _k8s_offline}


def _make(type_name: str) -> Stage:
    if type_name in OFFLINE:
        return OFFLINE[type_name]()
    return registry.create(type_name)


@pytest.mark.parametrize("type_name", registry.type_names())
def test_unit_contract(type_name: str) -> None:
    unit = registry.unit(type_name)
    assert dataclasses.is_dataclass(unit.config_type)
    assert unit.config_type.__dataclass_params__.frozen  # type: ignore[attr-defined]
    default = unit.default_config()  # defaults are the default config
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, dataclasses.fields(default)[0].name, None)


def _raw_uids(batch: ExportLogsServiceRequest) -> Counter[str]:
    """The ``log.record.uid`` of every raw event (non-detection record) in ``batch``."""
    return Counter(str(get_attr(rec.attributes, semconv.LOG_RECORD_UID))
                   for _, _, rec in iter_log_records(batch)
                   if rec.event_name != semconv.EV_DETECTION)


def _detections(batch: ExportLogsServiceRequest) -> int:
    """Detections carried by ``batch``, a collapsed summary counting for all its repeats."""
    total = 0
    for _, _, rec in iter_log_records(batch):
        if rec.event_name == semconv.EV_DETECTION:
            count = get_attr(rec.attributes, semconv.DETECTION_COUNT)
            total += count if isinstance(count, int) and not isinstance(count, bool) else 1
    return total


@pytest.mark.parametrize("type_name", registry.type_names())
def test_lifecycle_on_golden_batches(type_name: str) -> None:
    stage = _make(type_name)
    assert isinstance(stage, Stage) and stage.type_name == type_name
    pipeline = Pipeline([(type_name, stage)])
    pipeline.start()
    try:
        logs = samples.golden_logs()
        raw_in, detections_in = _raw_uids(logs), _detections(logs)
        assert sum(raw_in.values()) == 6 and detections_in == 5  # the golden batch's shape
        result = pipeline.process(logs)
        assert result.failed_stages == ()
        assert result.records_out == count_records(result.batch)
        # every raw event passes, each exactly once (no stage removes or duplicates them)
        assert _raw_uids(result.batch) == raw_in
        detections_out = _detections(result.batch)
        traces = samples.golden_traces()
        result = pipeline.process(traces)
        assert result.failed_stages == () and count_records(result.batch) == 3
        empty = pipeline.process(type(logs)())
        assert empty.failed_stages == ()
        detections_out += _detections(empty.batch)  # summaries ride on the next logs batch
    finally:
        flushed = pipeline.shutdown()
    # what a stage held back comes out at shutdown: no detection is lost on the way (the golden
    # batch is far below any rate limit), and no stage invents detections on it either
    for batch in flushed:
        assert isinstance(batch, ExportLogsServiceRequest) and not _raw_uids(batch)
        detections_out += _detections(batch)
    assert detections_out == detections_in


def test_unknown_and_broken_types_fail_alone() -> None:
    with pytest.raises(RegistryError, match="unknown processor type"):
        registry.unit("nope")
    registry.register(registry.ProcessorEntry("broken_for_test", "otelguard.processors.nope_x"))
    try:
        with pytest.raises(RegistryError, match="cannot import otelguard.processors.nope_x"):
            registry.create("broken_for_test")
        assert registry.create("noise_control").type_name == "noise_control"
    finally:
        registry.unregister("broken_for_test")


def test_wrong_config_type_is_refused() -> None:
    with pytest.raises(RegistryError, match="expects Config"):
        registry.create("noise_control", object())


def test_entries_registered_once_each() -> None:
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(registry.ProcessorEntry("noise_control", "x"))
    assert registry.type_names()[-3:] == ["incidents", "response", "risk"]  # pipeline order: last


