"""The ``reach`` section of the ``risk`` stage's config (docs/risk.md#configuration)."""

from __future__ import annotations

from dataclasses import dataclass

from otelguard.config import Checks

TIER_LABEL = "otelguard.dev/tier"


@dataclass(frozen=True)
class ReachConfig:
    """Sensitive-reach analysis (docs/risk.md#sensitive-reach)."""

    # empty: the in-cluster service account if present, else ~/.kube/config; when none
    # works, only the built-in targets and the enricher's peer names are judged (logged)
    kubeconfig: str = ""
    context: str = ""  # kubeconfig context; empty: its current context
    wait_for_sync_seconds: float = 10.0  # start() waits this long for the first lists
    label: str = TIER_LABEL  # the namespace and Service label that names a tier
    # Tiers from lowest to highest; a label value not listed counts as default_tier.
    tiers: tuple[str, ...] = ("public", "standard", "sensitive")
    default_tier: str = "standard"  # the tier of a namespace or Service without the label
    sensitive_tier: str = "sensitive"  # edges into this tier from a lower one are findings
    # Built-in targets (sensitive without a label): metadata, API server, etcd, kubelet.
    builtins: bool = True
    max_edges: int = 256  # edges remembered per workload (least recently seen forgotten)
    # new-edge findings waiting for the next flush (beyond: counted, the report has them)
    max_pending: int = 1024

    def __post_init__(self) -> None:
        checks = Checks()
        if self.default_tier not in self.tiers:
            checks.add("default_tier", f"{self.default_tier!r} is not one of tiers {self.tiers}")
        if self.sensitive_tier not in self.tiers:
            checks.add("sensitive_tier",
                       f"{self.sensitive_tier!r} is not one of tiers {self.tiers}")
        if len(set(self.tiers)) != len(self.tiers):
            checks.add("tiers", "must be distinct")
        checks.at_least(self, 1, "max_edges", "max_pending")
        checks.at_least(self, 0, "wait_for_sync_seconds")
        checks.done()
