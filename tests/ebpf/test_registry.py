"""The probe registry."""

from __future__ import annotations

import sys
import types

import pytest

from otelguard.ebpf.registry import AREAS, discover


def test_core_probes_register_with_disjoint_type_ids() -> None:
    reg = discover()
    # every area ships with the package: one that fails to import is a bug, not a skip
    assert reg.skipped == {}
    assert [p.name for p in reg.probes] == list(AREAS)
    seen: set[int] = set()
    for p in reg.probes:
        ids = set(p.type_ids)
        assert not ids & seen
        seen |= ids
        assert p.tracepoints() and all(":" in tp for tp in p.tracepoints())


def test_broken_and_missing_areas_are_skipped_with_reasons(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "otelguard.ebpf.evasion", types.ModuleType("x"))
    monkeypatch.setitem(sys.modules, "otelguard.ebpf.privilege", None)  # type: ignore[arg-type]
    reg = discover(["process", "privilege", "evasion", "bogus"])
    assert [p.name for p in reg.probes] == ["process"]
    assert reg.skipped["evasion"] == "otelguard.ebpf.evasion has no create()"
    assert reg.skipped["privilege"] == "not implemented (no module)"
    assert reg.skipped["bogus"] == "unknown area"


def test_overlapping_type_ids_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelguard.ebpf.process import create

    PROCESS = create()

    clone = types.ModuleType("fake_evasion")
    fake = types.SimpleNamespace(name="evasion", source_file="x", type_ids=range(3, 5),
                                 tracepoints=PROCESS.tracepoints, render=PROCESS.render,
                                 decode=PROCESS.decode)
    clone.create = lambda: fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "otelguard.ebpf.evasion", clone)
    reg = discover(["process", "evasion"])
    assert reg.skipped["evasion"] == "type ids overlap with process"
