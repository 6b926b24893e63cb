"""The contract every response action keeps (docs/architecture.md#response).

An action acts on a :class:`Target` (the workload, pod, container, process or peer a detection
or incident names). It is used in three steps, each a separate call so that a human approves
between the first two and a revert can come much later, from another process:

1. ``plan(target, params)`` reads current state and returns a :class:`Change`: the exact change
   as a human-readable diff. It has no side effects; a dry run is exactly this diff.
2. ``apply(change)`` makes the change and returns an :class:`Outcome` whose ``revert_state``
   (JSON-serialisable) holds all that ``revert`` needs (the original object, the cgroup path,
   the nftables handle...). It refuses (``ActionError``) when the state moved since ``plan``
   in a way that makes the approved diff untrue (a pid reused by another process, a replica
   count changed).
3. ``revert(change, outcome)`` restores what ``apply`` changed and nothing else; reverting
   twice is harmless.

Where an action runs: ``cluster`` actions call the Kubernetes API with the responder's
identity; ``node`` actions run on the node that hosts the target (the agent there, or
``otelguard run`` on a single host) and need root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Optional, Protocol, TypeVar

Where = Literal["cluster", "node"]
P = TypeVar("P")


class ActionError(Exception):
    """An action could not plan, apply or revert; the message says why, for the audit trail."""


@dataclass(frozen=True)
class Target:
    """What a detection or incident points at; any field may be unknown (None).

    Filled from the record's attributes (docs/architecture.md#attribute-schema): ``k8s.*`` from
    the Resource, ``process.pid`` and ``process.creation.time`` from the record, the peer from
    ``network.peer.address``/``network.peer.port``.
    """

    node: Optional[str] = None
    namespace: Optional[str] = None
    pod: Optional[str] = None
    pod_uid: Optional[str] = None
    container_id: Optional[str] = None
    workload_kind: Optional[str] = None   # Deployment, StatefulSet, DaemonSet, ...
    workload_name: Optional[str] = None
    pid: Optional[int] = None
    process_start_ticks: Optional[int] = None  # /proc/PID/stat field 22: tells a reused pid
    # the record's process.creation.time (ISO 8601, wall clock): what a detection carries;
    # the node checks it against /proc/PID/stat (host.start_time_matches)
    process_creation_time: Optional[str] = None
    executable: Optional[str] = None
    peer_address: Optional[str] = None
    peer_port: Optional[int] = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Target":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Change:
    """One planned change: what a human approves and what a dry run prints."""

    action: str
    target: Target
    params: Mapping[str, Any]
    summary: str          # one line, e.g. "isolate pod shop/web-1 with NetworkPolicy og-isolate-web-1"
    diff: str             # unified diff (or before/after) of the objects or node state it changes
    where: Where = "cluster"
    planned_state: Mapping[str, Any] = field(default_factory=dict)  # JSON: what apply checks again


@dataclass(frozen=True)
class Outcome:
    """What ``apply`` or ``revert`` did."""

    ok: bool
    message: str
    revert_state: Mapping[str, Any] = field(default_factory=dict)  # JSON-serialisable


class Action(Protocol):
    """A response action (see the module docstring for the contract)."""

    name: ClassVar[str]
    where: ClassVar[Where]
    # The frozen dataclass ``plan`` builds from ``params`` (registry.py: unknown keys are errors).
    Params: ClassVar[type[Any]]
    # False: ``revert`` cannot undo it (a deleted pod, a killed process); ``plan`` says so.
    reversible: ClassVar[bool]

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change: ...

    def apply(self, change: Change) -> Outcome: ...

    def revert(self, change: Change, outcome: Outcome) -> Outcome: ...


def params_json(params: Any) -> dict[str, Any]:
    """A ``Params`` instance as the JSON mapping ``Change.params`` stores (every default filled
    in, tuples as lists): a request replayed later applies exactly what was approved."""
    import dataclasses
    import json

    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(params)))
    return data


def build_params(cls: type[P], raw: Mapping[str, Any], action: str) -> P:
    """``raw`` built into an action's frozen ``Params`` (registry.py does the same for a policy,
    with the policy's path); a bad key or value is an ActionError naming every problem."""
    from otelguard.config import ConfigError, from_mapping

    try:
        return from_mapping(cls, dict(raw), path=f"{action}.params")
    except ConfigError as exc:
        raise ActionError("; ".join(exc.messages)) from None
