"""Config: YAML into frozen dataclasses, unknown keys are errors, all issues with path and line."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Literal, Optional

import pytest

from otelguard.processors.config import (
    ForwardSection,
    from_mapping,
    load_pipeline_config,
    load_yaml,
)
from otelguard.processors.errors import ConfigError
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
        ("forward", 6),  # __post_init__ (max_attempts >= 1), at the mapping
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


def test_yaml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml("a: 1\nb: [1, 2\nc: 3\n", "x.yaml")
    assert info.value.issues[0].file == "x.yaml" and info.value.issues[0].line is not None


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@dataclasses.dataclass(frozen=True)
class Inner:
    port: int
    hosts: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Outer:
    inner: Inner
    mode: Mode = Mode.SAFE
    level: Literal["low", "high"] = "low"
    ratio: Optional[float] = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    pair: tuple[int, str] = (0, "")
    flag: bool = False

    def __post_init__(self) -> None:
        if self.ratio is not None and not 0 <= self.ratio <= 1:
            raise ValueError("ratio must be within [0, 1]")


def test_generic_loader_types() -> None:
    out = from_mapping(Outer, {"inner": {"port": 1, "hosts": ["a"]}, "mode": "FAST",
                               "level": "high", "ratio": 1, "labels": {"a": "b"},
                               "pair": [3, "x"], "flag": True})
    assert out == Outer(Inner(1, ("a",)), Mode.FAST, "high", 1.0, {"a": "b"}, (3, "x"), True)
    assert from_mapping(Outer, {"inner": {"port": 2}}).mode is Mode.SAFE


def test_generic_loader_collects_everything() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(Outer, {"inner": {"hosts": "a"}, "mode": "slow", "level": 3,
                             "labels": {"a": 1}, "pair": [1], "flag": 1, "nope": 0},
                     path="processors[0].config", source="p.yaml")
    paths = sorted(i.path for i in info.value.issues)
    assert paths == sorted(f"processors[0].config.{p}" for p in (
        "inner.port", "inner.hosts", "mode", "level", "labels.a", "pair", "flag", "nope"))
    assert all(i.file == "p.yaml" for i in info.value.issues)
    # bool is not an int, int is not a bool
    with pytest.raises(ConfigError, match="expected an integer, got bool"):
        from_mapping(Inner, {"port": True})
    with pytest.raises(ConfigError, match=r"ratio must be within"):
        from_mapping(Outer, {"inner": {"port": 1}, "ratio": 2.0})


def test_documented_example_is_valid() -> None:
    import textwrap

    from otelguard.processors import config

    doc = config.__doc__ or ""
    example = textwrap.dedent(doc[doc.index("    service:"):].rstrip())
    cfg = config.build_pipeline_config(load_yaml(example))
    assert [p.type for p in cfg.processors] == ["k8s_attributes", "falco_rules", "noise_control"]
