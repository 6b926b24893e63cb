"""``risk`` config; its defaults are the default config (docs/risk.md#configuration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from otelguard.config import Checks
from otelguard.risk.analysers import ANALYSERS
from otelguard.risk.grants.config import GrantsConfig
from otelguard.risk.packages.config import PackagesConfig
from otelguard.risk.reach.config import ReachConfig


@dataclass(frozen=True)
class Config:
    """Runs the analysers named in `analysers` over raw event records; reports their findings
    every `report_interval_seconds` as records (otelguard.stream=risk), gauges and a snapshot
    file per workload that `otelguard risk show` reads."""

    analysers: tuple[str, ...] = ("packages", "grants")  # names from otelguard.risk.analysers
    report_interval_seconds: float = 10.0  # how often findings are computed and reported
    max_workloads: int = 10_000  # workloads held at once; the least recently seen is forgotten
    # One JSON snapshot per workload (what `otelguard risk show` reads). null:
    # <service.state_dir>/<stage name>/ when the service has a state_dir, else no snapshots.
    directory: Optional[str] = None
    packages: PackagesConfig = field(default_factory=PackagesConfig)  # the packages analyser
    grants: GrantsConfig = field(default_factory=GrantsConfig)  # the grants analyser
    reach: ReachConfig = field(default_factory=ReachConfig)  # the reach analyser

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "report_interval_seconds")
        checks.at_least(self, 1, "max_workloads")
        for i, name in enumerate(self.analysers):
            if name not in ANALYSERS:
                checks.add(f"analysers[{i}]", f"unknown analyser {name!r} (known: "
                           f"{', '.join(ANALYSERS)})")
        if len(set(self.analysers)) != len(self.analysers):
            checks.add("analysers", "an analyser is named twice")
        checks.done()
