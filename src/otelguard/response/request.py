"""A ``ResponseRequest``: one proposal of a policy for one target, and its life
(docs/response.md#requests).

States and the only legal moves (:data:`TRANSITIONS`; anything else raises
:class:`IllegalTransition`)::

    (new) -> Proposed -> Approved | Rejected | Expired
             Approved -> Executing -> Done | Failed
             Done | Failed -> Reverted

A request carries what caused it (detection uids, incident id, trace ids), the policy name and
revision, the planned changes exactly as a dry run shows them (and their hash, which the
approval binds to), who approved or rejected it and why, and every transition with its time.
It is a frozen value: :func:`advance` returns the next one; stores persist it as JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Optional

from otelguard.response.actions.base import Change, Outcome, Target


class State(str, Enum):
    PROPOSED = "Proposed"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    EXECUTING = "Executing"
    DONE = "Done"
    FAILED = "Failed"
    REVERTED = "Reverted"


NEW = "New"  # the "from" of a request's first transition (creation)
TRANSITIONS: Mapping[Optional[State], frozenset[State]] = {
    None: frozenset({State.PROPOSED}),
    State.PROPOSED: frozenset({State.APPROVED, State.REJECTED, State.EXPIRED}),
    State.APPROVED: frozenset({State.EXECUTING}),
    State.EXECUTING: frozenset({State.DONE, State.FAILED}),
    State.DONE: frozenset({State.REVERTED}),
    State.FAILED: frozenset({State.REVERTED}),
    State.REJECTED: frozenset(),
    State.EXPIRED: frozenset(),
    State.REVERTED: frozenset(),
}
OPEN = frozenset({State.PROPOSED, State.APPROVED, State.EXECUTING})  # not yet settled
APPLIED = frozenset({State.DONE, State.FAILED})  # something may have changed: revertible


class IllegalTransition(Exception):
    """A move the transition table does not allow (approving a rejected request, ...)."""


@dataclass(frozen=True)
class Trigger:
    """What caused the request: a detection or an incident record's identifying facts."""

    source: str  # "detection" | "incident"
    uid: str  # the detection's log.record.uid, or the incident id
    summary: str = ""  # rule name or incident title
    severity: str = ""
    incident_id: str = ""
    detection_uids: tuple[str, ...] = ()
    trace_ids: tuple[str, ...] = ()  # hex; the first links the audit records to its trace


@dataclass(frozen=True)
class Step:
    """One planned change of the request and, once executed, what became of it."""

    action: str
    change: Change
    ignore_errors: bool = False
    outcome: Optional[Outcome] = None  # set when apply returned
    error: str = ""  # apply raised (or was interrupted): why
    reverted: Optional[Outcome] = None  # set when revert returned


@dataclass(frozen=True)
class Transition:
    frm: str  # a State value, or NEW
    to: str
    at: float  # wall-clock seconds
    by: str
    reason: str = ""


@dataclass(frozen=True)
class ResponseRequest:
    id: str
    policy: str
    policy_revision: str
    mode: str  # advise | approve | auto
    trigger: Trigger
    target: Target
    steps: tuple[Step, ...]
    created: float
    expires_at: float
    dry_run: bool = False
    ttl_seconds: Optional[float] = None
    node: str = ""  # where node actions run ("" when none)
    state: Optional[State] = None  # None until the creating transition
    approved_by: str = ""
    decided_reason: str = ""  # the approver's or rejecter's reason
    revert_at: Optional[float] = None  # done + ttl
    history: tuple[Transition, ...] = ()

    @property
    def changes_hash(self) -> str:
        """SHA-256 of the planned changes: what an approval approves, exactly."""
        return changes_hash(self.steps)

    def has_node_actions(self) -> bool:
        return any(s.change.where == "node" for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        """JSON data (:meth:`from_json` reads it back)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(trigger=dataclasses.asdict(self.trigger), target=self.target.as_dict(),
                   steps=[_step_json(s) for s in self.steps],
                   state=self.state.value if self.state else None,
                   history=[dataclasses.asdict(t) for t in self.history])
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ResponseRequest":
        d = dict(data)
        d["trigger"] = Trigger(**{**d["trigger"],
                                  "detection_uids": tuple(d["trigger"].get("detection_uids", ())),
                                  "trace_ids": tuple(d["trigger"].get("trace_ids", ()))})
        d["target"] = Target.from_dict(d["target"])
        d["steps"] = tuple(_step(s) for s in d["steps"])
        d["state"] = State(d["state"]) if d.get("state") else None
        d["history"] = tuple(Transition(**t) for t in d.get("history", ()))
        return cls(**d)


def change_of(data: Mapping[str, Any]) -> Change:
    return Change(action=data["action"], target=Target.from_dict(data["target"]),
                  params=dict(data.get("params", {})), summary=data["summary"],
                  diff=data["diff"], where=data.get("where", "cluster"),
                  planned_state=dict(data.get("planned_state", {})))


def outcome_of(data: Optional[Mapping[str, Any]]) -> Optional[Outcome]:
    if data is None:
        return None
    return Outcome(bool(data["ok"]), str(data["message"]), dict(data.get("revert_state", {})))


def _step(d: Mapping[str, Any]) -> Step:
    return Step(d["action"], change_of(d["change"]), bool(d.get("ignore_errors", False)),
                outcome_of(d.get("outcome")), str(d.get("error", "")),
                outcome_of(d.get("reverted")))


def change_json(c: Change) -> dict[str, Any]:
    return {"action": c.action, "target": c.target.as_dict(), "params": dict(c.params),
            "summary": c.summary, "diff": c.diff, "where": c.where,
            "planned_state": dict(c.planned_state)}


def _outcome_json(o: Optional[Outcome]) -> Optional[dict[str, Any]]:
    return None if o is None else {"ok": o.ok, "message": o.message,
                                   "revert_state": dict(o.revert_state)}


def _step_json(s: Step) -> dict[str, Any]:
    return {"action": s.action, "change": change_json(s.change),
            "ignore_errors": s.ignore_errors, "outcome": _outcome_json(s.outcome),
            "error": s.error, "reverted": _outcome_json(s.reverted)}


def changes_hash(steps: tuple[Step, ...]) -> str:
    planned = [change_json(s.change) for s in steps]
    canon = json.dumps(planned, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def request_id(policy: str, trigger_uid: str, target: Target) -> str:
    """Deterministic: the same trigger seen again (a retried batch, a restart) names the same
    request, so it is not proposed twice. A DNS-1123 name (a custom resource's name)."""
    key = json.dumps([policy, trigger_uid, target.as_dict()], sort_keys=True)
    return "rr-" + uuid.uuid5(uuid.NAMESPACE_URL, "otelguard/response/" + key).hex[:16]


def advance(req: ResponseRequest, to: State, *, by: str, at: float, reason: str = "",
            **updates: Any) -> ResponseRequest:
    """The request after the move to ``to`` (with ``updates`` applied), or IllegalTransition."""
    if to not in TRANSITIONS[req.state]:
        frm = req.state.value if req.state else NEW
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[req.state])) or "none (final)"
        raise IllegalTransition(f"request {req.id}: {frm} -> {to.value} is not allowed "
                                f"(from {frm}: {allowed})")
    step = Transition(req.state.value if req.state else NEW, to.value, at, by, reason)
    return dataclasses.replace(req, state=to, history=req.history + (step,), **updates)


def with_step(req: ResponseRequest, index: int, **updates: Any) -> ResponseRequest:
    """The request with step ``index`` updated (an outcome recorded during execution)."""
    steps = list(req.steps)
    steps[index] = dataclasses.replace(steps[index], **updates)
    return dataclasses.replace(req, steps=tuple(steps))


def new_request(*, policy: str, revision: str, mode: str, trigger: Trigger, target: Target,
                steps: tuple[Step, ...], now: float, expire_seconds: float,
                dry_run: bool = False, ttl_seconds: Optional[float] = None,
                node: str = "") -> ResponseRequest:
    """A request before its creating transition (``advance(r, State.PROPOSED, ...)``)."""
    return ResponseRequest(
        id=request_id(policy, trigger.uid, target), policy=policy, policy_revision=revision,
        mode=mode, trigger=trigger, target=target, steps=steps, created=now,
        expires_at=now + expire_seconds, dry_run=dry_run, ttl_seconds=ttl_seconds,
        node=node or (target.node or "" if any(s.change.where == "node" for s in steps) else ""))


__all__ = ["APPLIED", "NEW", "OPEN", "TRANSITIONS", "IllegalTransition", "ResponseRequest",
           "State", "Step", "Transition", "Trigger", "advance", "change_of", "changes_hash",
           "change_json", "new_request", "outcome_of", "request_id", "with_step"]
