"""Conformance over the registry: every registered processor passes the shared lifecycle test."""

from __future__ import annotations

import dataclasses
from typing import Callable

import pytest

from otelguard.processors import registry
from otelguard.processors.errors import RegistryError
from otelguard.otlp.messages import count_records
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


@pytest.mark.parametrize("type_name", registry.type_names())
def test_lifecycle_on_golden_batches(type_name: str) -> None:
    stage = _make(type_name)
    assert isinstance(stage, Stage) and stage.type_name == type_name
    pipeline = Pipeline([(type_name, stage)])
    pipeline.start()
    try:
        logs = samples.golden_logs()
        n = count_records(logs)
        result = pipeline.process(logs)
        assert result.failed_stages == ()
        assert 0 < result.records_out
        # a stage only removes records it is meant to (here: nothing but detections)
        assert result.records_out >= n - 5
        traces = samples.golden_traces()
        result = pipeline.process(traces)
        assert result.failed_stages == () and count_records(result.batch) == 3
        empty = pipeline.process(type(logs)())
        assert empty.failed_stages == ()
    finally:
        flushed = pipeline.shutdown()
    assert all(count_records(b) >= 0 for b in flushed)


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
    assert registry.type_names()[-1] == "noise_control"


