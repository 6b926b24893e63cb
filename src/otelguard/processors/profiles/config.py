"""``profiles`` config; its defaults are the default config.

Semantics: docs/profiles.md (the model, the states, what never auto-learns) and
docs/architecture.md#behaviour-profiles.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Optional

from otelguard.config import Checks


@dataclass(frozen=True)
class StoreConfig:
    """Where profiles live (docs/profiles.md#profiles-in-a-cluster)."""

    # dir: one YAML file per workload in `directory`; kube: one WorkloadProfile object per
    # workload (otelguard.dev/v1alpha1; the CRD must be installed) in `namespace`
    kind: Literal["dir", "kube"] = "dir"
    # kube: the objects' namespace; empty: the processor pod's own namespace (from its service
    # account), else "otelguard"
    namespace: str = ""
    # kube: a kubeconfig file; empty: the in-cluster service account, else the default kubeconfig
    kubeconfig: str = ""
    context: str = ""  # kube: the kubeconfig context (empty: its current one)
    watch_timeout_seconds: int = 300  # kube: the server ends each watch after ~this (1-2x)

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 1, "watch_timeout_seconds")
        checks.done()


@dataclass(frozen=True)
class Config:
    """Defaults: learn each workload for 24 h in 1 h buckets; an entry is learned when seen in
    2 buckets and by 2 instances (pods or containers; fewer when the workload had fewer)."""

    # One WorkloadProfile YAML file per workload (profiles as code). null: <service.state_dir>/
    # profiles when the processor service has a state_dir, else profiles live in memory only.
    directory: Optional[str] = None
    store: StoreConfig = field(default_factory=StoreConfig)  # files (default) or cluster objects
    # A policy tree (docs/policy.md): its profiles/ are enforced as approved and never written
    # (learning of other workloads still goes to `directory`/`store`), its ProfileExceptions
    # apply; the whole tree must validate, its revision is stamped on deviations
    policy_dir: str = ""
    learn_seconds: float = 86_400.0  # the learning window, from a workload's first record
    bucket_seconds: float = 3_600.0  # the learning window's time buckets
    min_buckets: int = 2  # an entry is learned only when seen in this many separate buckets
    # ... and by this many instances (pod uid, else container id), or by all the workload's
    # instances when it had fewer
    min_replicas: int = 2
    max_entries: int = 512  # entries (learned or quarantined) per kind per profile
    max_new_per_bucket: int = 256  # new entries per profile per bucket; more: partial
    glob_siblings: int = 8  # this many paths in one directory (names under one domain,
    # addresses in one /24) collapse into one glob entry
    max_profiles: int = 10_000  # workloads profiled at once; more are counted, not profiled
    # Peers outside these (and not a pod or Service the enricher resolved) are "outside the
    # cluster": egress there is never learned, only listed by a human.
    internal_cidrs: tuple[str, ...] = (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "100.64.0.0/10",
        "::1/128", "fc00::/7",
    )
    save_interval_seconds: float = 5.0  # changed profiles are written (atomically) this often
    # A rule detection at or above this OTel severity_number (13: WARNING) on a learning
    # workload taints its window: the profile cannot become learned without a human.
    taint_severity: int = 13

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "learn_seconds", "bucket_seconds", "save_interval_seconds")
        checks.at_least(self, 1, "min_buckets", "min_replicas", "max_entries", "max_new_per_bucket",
                        "glob_siblings", "max_profiles", "taint_severity")
        if self.bucket_seconds * self.min_buckets > self.learn_seconds:
            checks.add("min_buckets", f"{self.min_buckets} buckets of {self.bucket_seconds}s do "
                       f"not fit in learn_seconds {self.learn_seconds}: nothing could be learned")
        if self.store.kind == "kube" and self.directory is not None:
            checks.add("directory", "profiles are WorkloadProfile objects with store.kind: kube; "
                       "remove directory (or use store.kind: dir)")
        for i, cidr in enumerate(self.internal_cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                checks.add(f"internal_cidrs[{i}]", str(exc))
        checks.done()
