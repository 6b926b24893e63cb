"""``response`` config; its defaults are the default config (docs/response.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from otelguard.config import Checks


@dataclass(frozen=True)
class Config:
    """Defaults: no policies (the stage proposes nothing); requests in
    ``<service.state_dir>/<stage name>/``; this process executes every approved request."""

    # ResponsePolicy files or directories (*.yaml read in name order), evaluated in order
    policies: tuple[str, ...] = ()
    # A policy tree (docs/policy.md) whose responses/ are the policies (not with `policies`):
    # the whole tree must validate, and requests record the tree's revision
    policy_dir: str = ""
    # Where requests live: local (files in `store`, shared with `otelguard respond --store`)
    # or kube (ResponseRequest objects in `namespace`; decided with `otelguard respond --kube`
    # or by patching spec.decision, so RBAC governs approval)
    requests: Literal["local", "kube"] = "local"
    # Directory of the local request store and the audit chain (with kube: the chain only);
    # null: <service.state_dir>/<stage name>/
    store: Optional[str] = None
    # kube: the namespace of the ResponseRequest objects; null: otelguard's own namespace
    namespace: Optional[str] = None
    # Which approved requests this process carries out: all (otelguard run, one host),
    # cluster (requests without node actions: a cluster's processor), none (propose and audit)
    execute: Literal["all", "cluster", "none"] = "all"
    # Kubernetes API access for cluster actions; null: the in-cluster service account, else
    # ~/.kube/config (a policy with a cluster action fails the start when neither works)
    kubeconfig: Optional[str] = None
    # How often approvals, expiries and ttl reverts are looked for (locally a stat of the
    # chain file unless something changed or fell due)
    tick_seconds: float = 0.25
    # Detections and incidents waiting for the worker; beyond it they are dropped and counted
    max_queue: int = 4096

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "tick_seconds")
        checks.at_least(self, 1, "max_queue")
        if self.policy_dir and self.policies:
            checks.add("policy_dir", "the tree's responses/ are the policies: not with policies")
        checks.done()
