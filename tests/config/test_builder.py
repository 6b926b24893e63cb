"""The one builder: plain data into frozen dataclasses, every problem with dotted path and line."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Literal, Optional

import pytest

from otelguard.config import (
    INTERNAL,
    Checks,
    ConfigError,
    Custom,
    Issues,
    from_mapping,
    load_file,
    load_section,
    load_yaml,
    schema_of,
)


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


@dataclasses.dataclass(frozen=True)
class Limits:
    low: int = 1
    high: int = 10
    names: tuple[str, ...] = ()
    pid: int = dataclasses.field(default=0, metadata=INTERNAL)

    def __post_init__(self) -> None:
        checks = Checks()
        if self.low < 0:
            checks.add("low", f"must be >= 0, got {self.low}")
        if self.high < self.low:
            checks.add("high", f"must be >= low ({self.low}), got {self.high}")
        for i, name in enumerate(self.names):
            if not name:
                checks.add(f"names[{i}]", "must not be empty")
        checks.done()


@dataclasses.dataclass(frozen=True)
class Document:
    limits: Limits = Limits()
    title: str = ""


def test_field_checks_are_reported_each_at_its_field_and_line() -> None:
    doc = load_yaml("limits:\n  low: -1\n  high: -2\n  names:\n    - a\n    - ''\n", "d.yaml")
    with pytest.raises(ConfigError) as info:
        from_mapping(Document, doc, source="d.yaml")
    assert [(i.path, i.line) for i in info.value.issues] == [
        ("limits.low", 2), ("limits.high", 3), ("limits.names[1]", 6)]
    assert info.value.messages[1] == "d.yaml:3: limits.high: must be >= low (-1), got -2"


def test_field_checks_still_run_when_other_fields_are_refused() -> None:
    doc = load_yaml("limits:\n  low: -1\n  high: many\n  bogus: 1\ntitle: 3\n", "d.yaml")
    with pytest.raises(ConfigError) as info:
        from_mapping(Document, doc, source="d.yaml")
    assert sorted((i.path, i.line) for i in info.value.issues) == [
        ("limits.bogus", 4), ("limits.high", 3), ("limits.low", 2), ("title", 5)]
    # the refused ``high`` took its default for the checks: no second message about it
    assert [i.message for i in info.value.issues if i.path == "limits.high"] == [
        "expected an integer, got str 'many'"]


def test_internal_fields_are_not_keys_of_the_file() -> None:
    with pytest.raises(ConfigError, match=r"limits.pid: unknown key \(known: high, low, names\)"):
        from_mapping(Document, {"limits": {"pid": 4}})
    assert dataclasses.replace(Limits(), pid=4).pid == 4


def _build_csv(value: object, path: str, issues: Issues, line: Optional[int]) -> object:
    if not isinstance(value, str):
        issues.add(path, "expected comma-separated names", line)
        return None
    return tuple(value.split(","))


@dataclasses.dataclass(frozen=True)
class WithCsv:
    names: Annotated[tuple[str, ...], Custom(_build_csv, lambda schema_of: {"type": "string"})] = ()


def test_custom_hint_builds_and_describes_its_value() -> None:
    assert from_mapping(WithCsv, {"names": "a,b"}).names == ("a", "b")
    with pytest.raises(ConfigError, match="names: expected comma-separated names"):
        from_mapping(WithCsv, {"names": [1]})
    assert schema_of(WithCsv)["properties"]["names"] == {"type": "string", "default": []}


def test_files_are_read_once_and_problems_carry_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "doc.yaml"
    f.write_text("limits: {low: 2}\nother: {anything: 1}\n")
    with pytest.raises(ConfigError) as info:
        load_file(Document, f)
    assert info.value.messages == [
        f"{f}:2: other: unknown key (known: limits, title)"]
    # one section of a file whose other sections belong to other commands
    assert load_section(Limits, f, "limits") == Limits(low=2)
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_section(Limits, f, "limits")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_file(Document, tmp_path / "missing.yaml")
    f.write_text("")
    assert load_file(Document, f) == Document()
