"""Per-cgroup record budget in the kernel: one flooding container cannot starve the others.

Every probe sends its records through ``og_reserve``/``og_output`` (``probes/common.bpf.h``);
both first ask ``og_budget_allow`` (``probes/budget.bpf.h``), a token bucket per cgroup id
(``bpf_get_current_cgroup_id()``) kept in an LRU hash, clocked by ``bpf_ktime_get_ns()``. A
record over budget is not sent; it is counted for its cgroup in the map and in a per-CPU total,
which the sensor reads once a second: the total goes to
``otelguard_dropped_total{stage="kernel_budget",reason="cgroup_over_budget"}`` and the
per-cgroup counts to :class:`BudgetLedger`, whose top offenders (container ids through the
sensor's cgroup resolver) are logged and shown in ``otelguard run``'s exit summary.

High-value records (:data:`HIGH_VALUE`) that find their cgroup's bucket empty get a second chance
from a small reserve bucket of their class, so flooding cheap events (or one high-value class)
cannot hide that container's exec of a shell, a privilege change or a sensitive open:

* ``exec``: execve/execveat, the start of every attack step.
* ``privilege``: uid/gid changes, capset, capability use (already deduplicated in the kernel per
  process and capability), ptrace, unshare, setns, mount, module loading, bpf(), memfd_create,
  stdio dup/dup2/dup3, and io_uring setup (a way around syscall tracing). kill() is not: it is cheap
  to flood and the least telling of the set.
* ``file``: the file probe's filtered opens (reads under the sensitive prefixes, or write intent),
  chmod and chown.

Forks, exits, chdir, other file changes, network and io_uring submissions are ordinary.

Default (:class:`BudgetConfig`): 10000 records/s per cgroup with a burst of 100000, and a reserve
of 200/s (burst 1000) per class. A benign but busy container stays below it: measured with the
budget off (``bench/cgroup_budget.py``, docs/benchmarks.md), a shell loop exec'ing /bin/true
(the busiest benign shape: fork, exec and exit records per command) peaked at ~5.9k records/s, a
``make -j2`` C build at ~2.4k/s and a Python import storm at ~100/s; the 28k execs/s flood this
guards against sends ~85k records/s. The cost is one hash lookup and a few compares per record
(``bench/bpf_program_cost.py``, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from otelguard import telemetry
from otelguard.config import Checks
from otelguard.ebpf import evasion, file, privilege, process
from otelguard.ebpf.probe import probe_source

CLASS_COUNT = 4  # OG_BUDGET_CLASSES: 0 ordinary, then one reserve per high-value class

# class name -> (class index, record type ids); see the module docstring for the reasons
HIGH_VALUE: Mapping[str, tuple[int, tuple[int, ...]]] = {
    "exec": (1, (process.T_EXEC,)),
    "privilege": (2, (privilege.T_SETUID, privilege.T_SETGID, privilege.T_CAPSET,
                      privilege.T_CAPABLE, privilege.T_PTRACE, privilege.T_UNSHARE,
                      privilege.T_SETNS, privilege.T_MOUNT, privilege.T_MODULE, privilege.T_BPF,
                      privilege.T_MEMFD, privilege.T_DUP, evasion.T_URING_SETUP)),
    "file": (3, (file.T_OPEN, file.T_CHMOD, file.T_CHOWN)),
}

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class BudgetConfig:
    """Per-cgroup record budget, enforced in the kernel before every record (a token bucket per
    cgroup id); records over it are dropped and counted (``kernel_budget``). Defaults are the
    default configuration."""

    records_per_s: int = 10000  # sustained records per second per cgroup; 0 turns the budget off
    burst: int = 100000  # records a cgroup may send at once after being quiet
    reserve_per_s: int = 200  # per high-value class, once the cgroup's own bucket is empty
    reserve_burst: int = 1000  # high-value records a class reserve lets through at once
    max_cgroups: int = 10240  # cgroups tracked at once (LRU: the least recently active go)
    report_top: int = 5  # offenders named in the log line and the exit summary

    def __post_init__(self) -> None:
        checks = Checks()
        for rate_key, burst_key in (("records_per_s", "burst"),
                                    ("reserve_per_s", "reserve_burst")):
            rate, burst = getattr(self, rate_key), getattr(self, burst_key)
            if not 0 <= rate <= _NS_PER_S:
                checks.add(rate_key, f"must be 0 (off) .. {_NS_PER_S}, got {rate}")
            if rate and not 1 <= burst <= 10_000_000:
                checks.add(burst_key, f"must be 1..10000000 when {rate_key} is set, got {burst}")
        if not 1 <= self.max_cgroups <= 1 << 20:
            checks.add("max_cgroups", f"must be 1..{1 << 20}, got {self.max_cgroups}")
        if not 0 <= self.report_top <= 100:
            checks.add("report_top", f"must be 0..100, got {self.report_top}")
        checks.done()

    @property
    def enabled(self) -> bool:
        return self.records_per_s > 0


def _interval_ns(rate: int) -> int:
    return _NS_PER_S // rate if rate > 0 else 0


def render_class_switch() -> str:
    """``og_budget_class(type)``: the high-value class of a record type (0: ordinary)."""
    lines = ["static __always_inline u32 og_budget_class(u32 type) {", "    switch (type) {"]
    for name, (index, types) in HIGH_VALUE.items():
        cases = " ".join(f"case {t}:" for t in types)
        lines.append(f"    {cases} return {index};  // {name}")
    lines += ["    default: return 0;", "    }", "}"]
    return "\n".join(lines)


def render(config: BudgetConfig) -> str:
    """The budget's C (placeholders, the class switch, ``budget.bpf.h``); with the budget off,
    ``og_budget_allow`` compiles to ``return 1`` and no map exists."""
    interval = _interval_ns(config.records_per_s)
    reserve = _interval_ns(config.reserve_per_s)
    return "\n".join([
        f"#define OG_BUDGET_NS {interval}ULL",
        f"#define OG_BUDGET_BURST_NS {interval * config.burst}ULL",
        f"#define OG_BUDGET_RESERVE_NS {reserve}ULL",
        f"#define OG_BUDGET_RESERVE_BURST_NS {reserve * config.reserve_burst}ULL",
        f"#define OG_BUDGET_CGROUPS {config.max_cgroups}",
        render_class_switch(),
        probe_source("budget.bpf.h"),
    ])


@dataclass(frozen=True)
class Offender:
    cgroup_id: int
    dropped: int
    dropped_high: int


class BudgetLedger:
    """What the kernel dropped over budget: the exact total (into telemetry) and the per-cgroup
    counts read from the map, kept for the log line and the exit summary.

    A cgroup's count lives in its LRU entry; if the entry is evicted (the cgroup went quiet for
    longer than ``max_cgroups`` others were active) and the cgroup floods again, its count
    restarts, so per-cgroup figures are lower bounds; the total is exact. The map is read only
    when the total moved, so a quiet node pays one per-CPU array read per second.
    """

    def __init__(self, max_kept: int = 1024) -> None:
        self._total = 0
        self._max_kept = max_kept
        self._by_cgroup: dict[int, Offender] = {}
        self._counter = telemetry.dropped.labels("kernel_budget", "cgroup_over_budget")

    @property
    def total(self) -> int:
        return self._total

    def update(self, total: int, entries: Iterable[tuple[int, int, int]]) -> int:
        """``total`` is the kernel's running sum, ``entries`` (cgroup id, dropped, dropped
        high-value) from the map (iterated only when the total moved). Returns the new drops."""
        delta = total - self._total
        if delta <= 0:
            return 0
        self._counter.inc(delta)
        self._total = total
        kept = self._by_cgroup
        for cgroup_id, dropped, high in entries:
            old = kept.get(cgroup_id)
            if dropped and (old is None or dropped > old.dropped):
                kept[cgroup_id] = Offender(cgroup_id, dropped, high)
        if len(kept) > self._max_kept:
            self._by_cgroup = {o.cgroup_id: o for o in self.top(self._max_kept)}
        return delta

    def top(self, n: int) -> list[Offender]:
        """The ``n`` cgroups with the most drops, most first."""
        return sorted(self._by_cgroup.values(), key=lambda o: -o.dropped)[:n]
