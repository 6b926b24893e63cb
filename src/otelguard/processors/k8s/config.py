"""Config of the ``k8s_attributes`` stage: a frozen dataclass whose defaults are the default config.

Built from YAML by the one config loader (:func:`otelguard.config.from_mapping`): unknown keys are
errors, every problem is reported with its dotted path and file:line. Value checks live in
``__post_init__`` and name the field they are about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from otelguard.config import Checks, from_mapping

# Labels most teams use to say what a workload is and who owns it (Kubernetes recommended labels
# plus the two older conventions). A "*" at the end matches any suffix.
DEFAULT_POD_LABELS = ("app.kubernetes.io/*", "app", "team", "version")
DEFAULT_NAMESPACE_LABELS = ("team",)


@dataclass(frozen=True)
class Config:
    """Where the enricher gets its view of the cluster, and how patient it is with late pods.

    ``mode``: ``node`` watches only the pods of ``node_name`` (the agent's DaemonSet, cheap);
    ``gateway`` watches every pod (the processor Deployment behind the Collector's load balancer).
    ``node_name`` empty means: take it from ``OTELGUARD_K8S_NODE_NAME`` (see settings.py).
    ``kubeconfig`` empty means: in-cluster service account if present, else ``~/.kube/config``.
    """

    # node: only the pods of node_name (cheap, per node); gateway: every pod of the cluster
    mode: Literal["node", "gateway"] = "gateway"
    node_name: str = ""  # for mode node; empty: OTELGUARD_K8S_NODE_NAME
    # empty: the in-cluster service account if present, else ~/.kube/config
    kubeconfig: str = ""
    context: str = ""  # kubeconfig context; empty: its current context
    # A Resource whose container.id the cache does not know yet is held this long, then passed.
    hold_seconds: float = 2.0
    # At most this many held Resources (one Resource's records from one batch each); beyond it
    # the oldest go on unenriched (counted, reason hold_full).
    max_held_batches: int = 256
    # A deleted pod stays resolvable this long: records of its last moments arrive late.
    deleted_grace_seconds: float = 120.0
    # start() waits this long for the first list of every kind (0: do not wait).
    wait_for_sync_seconds: float = 10.0
    # Pod labels copied onto the Resource (exact keys or "prefix*").
    pod_labels: tuple[str, ...] = DEFAULT_POD_LABELS
    pod_annotations: tuple[str, ...] = ()  # pod annotations copied (exact keys or "prefix*")
    namespace_labels: tuple[str, ...] = DEFAULT_NAMESPACE_LABELS  # namespace labels copied
    # Resolve network.peer.address of each record to a pod or Service.
    peers: bool = True
    # Server-side watch timeout; the watch is re-opened from the last resourceVersion after it.
    watch_timeout_seconds: int = 300
    # Reconnect backoff after a watch or list error doubles from 0.2 s up to this.
    max_backoff_seconds: float = 5.0
    # Page size of the initial and recovery lists.
    list_page_size: int = 500

    def __post_init__(self) -> None:
        checks = Checks()
        if self.mode == "node" and self.node_name == "":
            from otelguard.processors.k8s import settings

            if not settings.node_name():
                checks.add("node_name", "mode 'node' needs node_name (or OTELGUARD_K8S_NODE_NAME "
                           "from the downward API)")
        checks.at_least(self, 0, "hold_seconds", "deleted_grace_seconds", "wait_for_sync_seconds",
                        "max_held_batches")
        checks.at_least(self, 1, "watch_timeout_seconds", "list_page_size")
        checks.above(self, 0, "max_backoff_seconds")
        for name in ("pod_labels", "pod_annotations", "namespace_labels"):
            for i, pattern in enumerate(getattr(self, name)):
                if not pattern or "*" in pattern[:-1]:
                    checks.add(f"{name}[{i}]", f"{pattern!r}: use an exact key or 'prefix*'")
        checks.done()

    @property
    def effective_node_name(self) -> Optional[str]:
        """The node whose pods are watched, or None in gateway mode."""
        if self.mode != "node":
            return None
        if self.node_name:
            return self.node_name
        from otelguard.processors.k8s import settings

        return settings.node_name()


def load(data: Any, path: str = "", source: Optional[str] = None) -> Config:
    """A Config from plain (YAML) data; raises ConfigError listing every problem."""
    return from_mapping(Config, data, path=path, source=source)


class KeySelector:
    """Matches label/annotation keys against an allow-list of exact keys and ``prefix*`` patterns.

    Built once per config; ``select`` is called per pod update, never per record.
    """

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._exact = frozenset(p for p in patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def matches(self, key: str) -> bool:
        return key in self._exact or key.startswith(self._prefixes)

    def select(self, values: Optional[dict[str, str]]) -> dict[str, str]:
        if not values:
            return {}
        return {k: v for k, v in values.items() if self.matches(k)}
