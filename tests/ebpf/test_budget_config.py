"""The per-cgroup budget without a kernel: config checks, the rendered C, the drop ledger."""

from __future__ import annotations

from typing import Iterator

import pytest

from otelguard.config import ConfigError, from_mapping
from otelguard.ebpf import budget, file, loader, network, privilege, process
from otelguard.ebpf.budget import HIGH_VALUE, BudgetConfig, BudgetLedger
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.settings import SensorConfig
from tests.support.metrics import sample


def test_default_renders_the_default_budget() -> None:
    text = budget.render(BudgetConfig())
    # 10000/s: one record every 100 µs; burst 100000 records = 10 s ahead of now
    assert "#define OG_BUDGET_NS 100000ULL" in text
    assert "#define OG_BUDGET_BURST_NS 10000000000ULL" in text
    assert "#define OG_BUDGET_RESERVE_NS 5000000ULL" in text  # 200/s per class
    assert "#define OG_BUDGET_RESERVE_BURST_NS 5000000000ULL" in text
    assert "#define OG_BUDGET_CGROUPS 10240" in text
    assert text.index("og_budget_class(u32 type)") < text.index("og_budget_allow(u32 type,")


def test_zero_rate_compiles_the_budget_out() -> None:
    text = budget.render(BudgetConfig(records_per_s=0, reserve_per_s=0))
    assert "#define OG_BUDGET_NS 0ULL" in text and "#define OG_BUDGET_RESERVE_NS 0ULL" in text
    assert "#if OG_BUDGET_NS > 0" in text  # no map, og_budget_allow() is `return 1`
    assert not BudgetConfig(records_per_s=0).enabled and BudgetConfig().enabled


def test_every_record_path_asks_the_budget() -> None:
    text = loader.render_program([process.create(), file.create()], ProbeConfig(),
                                 frozenset(), budget=BudgetConfig(records_per_s=7, burst=3))
    assert f"#define OG_BUDGET_NS {10**9 // 7}ULL" in text
    assert f"#define OG_BUDGET_BURST_NS {10**9 // 7 * 3}ULL" in text
    assert text.index("og_budget_allow(u32 type, u64 cg, u64 now) {") < text.index(
        "struct og_hdr {")
    reserve = text[text.index("og_reserve(u32 size"):]
    assert reserve.index("og_budget_allow(type, ") < reserve.index("ringbuf_reserve(size)")
    output = text[text.index("og_output(void *rec"):]
    assert output.index("og_budget_allow(") < output.index("ringbuf_output(")


def _class_of(type_id: int) -> int:
    return next((index for index, types in HIGH_VALUE.values() if type_id in types), 0)


def test_high_value_classes() -> None:
    assert _class_of(process.T_EXEC) == 1
    assert _class_of(privilege.T_SETUID) == _class_of(privilege.T_MOUNT) == 2
    assert _class_of(file.T_OPEN) == _class_of(file.T_CHMOD) == 3
    for ordinary in (process.T_FORK, process.T_EXIT, process.T_CHDIR, privilege.T_KILL,
                     file.T_UNLINK, network.T_CONNECT, network.T_STATE):
        assert _class_of(ordinary) == 0
    indexes = [index for index, _ in HIGH_VALUE.values()]
    assert sorted(indexes) == list(range(1, budget.CLASS_COUNT))
    switch = budget.render_class_switch()
    assert f"case {process.T_EXEC}: return 1;  // exec" in switch
    assert f"case {privilege.T_KILL}:" not in switch and "default: return 0;" in switch


def test_config_from_the_sensor_section() -> None:
    cfg = from_mapping(SensorConfig, {"budget": {"records_per_s": 500, "burst": 50,
                                                 "reserve_per_s": 0, "report_top": 3}},
                       path="sensor")
    assert cfg.budget == BudgetConfig(records_per_s=500, burst=50, reserve_per_s=0,
                                      report_top=3)
    off = from_mapping(SensorConfig, {"budget": {"records_per_s": 0, "burst": 0}}, path="sensor")
    assert not off.budget.enabled
    with pytest.raises(ConfigError) as info:
        from_mapping(SensorConfig, {"budget": {"records_per_s": -1, "reserve_per_s": 5,
                                               "reserve_burst": 0, "max_cgroups": 0,
                                               "report_top": 101, "rate": 3}}, path="sensor")
    problems = [str(i) for i in info.value.issues]
    assert "sensor.budget.records_per_s: must be 0 (off) .. 1000000000, got -1" in problems
    assert "sensor.budget.reserve_burst: must be 1..10000000 when reserve_per_s is set, got 0" \
        in problems
    assert "sensor.budget.max_cgroups: must be 1..1048576, got 0" in problems
    assert "sensor.budget.report_top: must be 0..100, got 101" in problems
    assert any(p.startswith("sensor.budget.rate: unknown key") for p in problems)


def _counted() -> float:
    return sample("otelguard_dropped_total", stage="kernel_budget", reason="cgroup_over_budget")


def test_ledger_counts_deltas_and_names_top_offenders() -> None:
    ledger = BudgetLedger(max_kept=2)
    before = _counted()
    reads = []

    def entries(rows: list[tuple[int, int, int]]) -> Iterator[tuple[int, int, int]]:
        reads.append(len(rows))
        yield from rows

    assert ledger.update(0, entries([(1, 5, 0)])) == 0 and reads == []  # total unchanged
    assert ledger.update(10, entries([(1, 7, 1), (2, 3, 0), (3, 0, 0)])) == 10
    assert _counted() - before == 10 and ledger.total == 10
    assert [(o.cgroup_id, o.dropped, o.dropped_high) for o in ledger.top(5)] == [(1, 7, 1),
                                                                                 (2, 3, 0)]
    # an evicted cgroup's entry restarts at 0 in the kernel: the larger count is kept
    assert ledger.update(25, entries([(1, 2, 0), (4, 9, 0), (5, 1, 0)])) == 15
    assert [(o.cgroup_id, o.dropped) for o in ledger.top(5)] == [(4, 9), (1, 7)]  # bounded
    assert _counted() - before == 25
    assert ledger.update(20, entries([])) == 0  # never backwards
