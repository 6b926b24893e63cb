"""The pipeline file: YAML into frozen dataclasses, unknown keys are errors, all issues with
path and line (the generic builder is tested in tests/config)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from otelguard.config import ConfigError, load_yaml
from otelguard.processors.config import ForwardSection, load_pipeline_config
from otelguard.processors.noise import Config as NoiseConfig

DATA = Path(__file__).parent / "testdata" / "config"


def test_good_file_loads_into_frozen_dataclasses() -> None:
    cfg = load_pipeline_config(DATA / "good.yaml")
    assert cfg.service.max_inflight_requests == 8 and cfg.service.listen_http == "127.0.0.1:0"
    assert cfg.forward == ForwardSection(max_attempts=2)
    assert cfg.exporters == ("otlp:127.0.0.1:4319",)
    assert [(p.type, p.name) for p in cfg.processors] == [
        ("noise_control", "noise_control"), ("noise_control", "noise_strict")]
    assert cfg.processors[0].config == NoiseConfig(window_seconds=30.0, key_fields=("file.path",))
    assert cfg.processors[1].config.burst == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.service.listen = "x"  # type: ignore[misc]


def test_every_error_reported_at_once_with_path_and_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(DATA / "bad.yaml")
    got = {(i.path, i.line) for i in info.value.issues}
    f = str(DATA / "bad.yaml")
    expected = {
        ("service.max_request_bytes", 3),
        ("service.colour", 4),
        ("forward.max_attempts", 6),  # __post_init__ (max_attempts >= 1), at the field
        ("exporters[1]", 7),
        ("processors[0].config.window_seconds", 11),
        ("processors[0].config.burst", 12),
        ("processors[0].config.key_fields[1]", 13),
        ("processors[1].config.hold_seconds", 16),
        ("processors[1].name", 14),  # duplicate stage name
        ("processors[2].type", 17),
        ("processors[3].extra", 20),
        ("processors[3].config", 21),
    }
    assert got == expected, sorted(got ^ expected)
    text = str(info.value)
    assert f"{f}:11: processors[0].config.window_seconds: expected a number, got str 'soon'" in text
    assert "unknown processor type 'no_such_processor'" in text
    assert "processors[1].config.hold_seconds: unknown key" in text
    assert f"{f}:6: forward.max_attempts: must be >= 1, got 0" in text


def test_documented_example_is_valid() -> None:
    import textwrap

    from otelguard.processors import config

    doc = config.__doc__ or ""
    example = textwrap.dedent(doc[doc.index("    service:"):].rstrip())
    cfg = config.build_pipeline_config(load_yaml(example))
    assert [p.type for p in cfg.processors] == ["k8s_attributes", "falco_rules", "noise_control"]
