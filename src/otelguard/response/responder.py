"""The responder: policies applied to what the pipeline saw, requests proposed, approved ones
executed, expired ones closed, done ones reverted at their ttl (docs/response.md).

Runs on the response stage's worker thread (never in ``process``: planning reads the cluster or
the node) and, for approvals and manual reverts, in ``otelguard respond``. Every state change
goes through the store, so it is persisted and audited before anything acts on it; an action
runs only for a request the store shows ``Approved`` and this responder moved to ``Executing``.
The only way to ``Approved`` is :func:`approve` (a human, through the CLI or the custom
resource) or, for a policy whose ``mode`` is ``auto``, the policy itself.

Safety checks at proposal time: protected namespaces, ``max_per_hour`` per policy, one open
(or done and not reverted) request per policy and target. At approval: the request has not
expired and its policy is not ``advise``. At execution: each action's ``apply`` checks that the
state it planned against still holds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol

from otelguard.response import metrics
from otelguard.response.actions.base import Action, ActionError, Outcome, Target
from otelguard.response.audit import AuditRecord
from otelguard.response.policy import Facts, Policy, PolicySet
from otelguard.response.request import (
    APPLIED, OPEN, IllegalTransition, ResponseRequest, State, Step, Trigger, new_request,
    with_step,
)

log = logging.getLogger(__name__)
SYSTEM = "otelguard"  # the actor of transitions no person made (expiry, execution, ttl revert)
UNNAMED = "unnamed (see the API server's audit log)"  # a decision patched without ``by``


class RequestStore(Protocol):
    """What the responder needs of a store (the local one, or the custom-resource one)."""

    def get(self, rid: str) -> Optional[ResponseRequest]: ...

    def requests(self) -> list[ResponseRequest]: ...

    def save(self, req: ResponseRequest) -> None: ...

    def create(self, req: ResponseRequest, *, by: str, reason: str = ""
               ) -> tuple[ResponseRequest, Optional[AuditRecord]]: ...

    def transition(self, rid: str, to: State, *, by: str, reason: str = "",
                   check: Optional[Callable[[ResponseRequest], None]] = None,
                   **updates: Any) -> tuple[ResponseRequest, AuditRecord]: ...


class Refused(Exception):
    """A decision that may not be made (approving an advise proposal or an expired one)."""


def target_key(t: Target) -> str:
    """What "the same target" means for de-duplication: the pod (uid, else namespace/name),
    else the container, else the workload, else the process on its node; and the peer."""
    who = t.pod_uid or (f"{t.namespace}/{t.pod}" if t.pod else "") or t.container_id or (
        f"{t.namespace}/{t.workload_kind}/{t.workload_name}" if t.workload_name else "") or (
        f"{t.node}/{t.pid}" if t.pid else f"{t.node}")
    return f"{who}|{t.peer_address or ''}"


@dataclass
class Responder:
    """``actions`` by name; ``executes(req)`` says whether this process runs a request's
    changes (``otelguard run``: all; a cluster's processor: those without node actions; an
    agent: those for its node). ``administers``: this process also expires proposals and takes
    approvals and rejections (every responder but an agent's node executor, so one process
    decides what several execute)."""

    policies: PolicySet
    store: RequestStore
    actions: Mapping[str, Action]
    clock: Callable[[], float] = time.time
    executes: Callable[[ResponseRequest], bool] = lambda req: True
    administers: bool = True
    _created: dict[str, deque[float]] = field(default_factory=dict)

    # --- proposals ---------------------------------------------------------------------------

    def propose(self, facts: Facts, trigger: Trigger, target: Target) -> list[ResponseRequest]:
        """The requests the matching policies make for one detection or incident."""
        out = []
        for policy in self.policies.matching(facts):
            req = self._propose(policy, trigger, target)
            if req is not None:
                out.append(req)
        return out

    def _propose(self, policy: Policy, trigger: Trigger,
                 target: Target) -> Optional[ResponseRequest]:
        spec = policy.spec
        now = self.clock()
        if target.namespace and target.namespace in spec.protected():
            metrics.suppressed.labels(policy.name, "protected_namespace").inc()
            return None
        key = target_key(target)
        for r in self.store.requests():
            if r.policy == policy.name and target_key(r.target) == key and (
                    r.state in OPEN or r.state == State.DONE):
                metrics.suppressed.labels(policy.name, "duplicate").inc()
                return None
        window = self._created.setdefault(policy.name, deque())
        while window and window[0] <= now - 3600:
            window.popleft()
        if len(window) >= spec.max_per_hour:
            metrics.suppressed.labels(policy.name, "rate_limit").inc()
            log.warning("response: policy %s reached max_per_hour=%d; %s not proposed",
                        policy.name, spec.max_per_hour, trigger.uid)
            return None
        steps = []
        for s in spec.actions:
            action = self.actions.get(s.action)
            if action is None:
                metrics.suppressed.labels(policy.name, "unknown_action").inc()
                log.error("response: policy %s names action %s, which is not available here",
                          policy.name, s.action)
                return None
            params = {"min_healthy_replicas": spec.min_healthy_replicas, **s.params} \
                if _takes(action, "min_healthy_replicas") else dict(s.params)
            try:
                change = action.plan(target, params)
            except ActionError as exc:
                metrics.suppressed.labels(policy.name, "plan_failed").inc()
                log.warning("response: policy %s: %s cannot plan for %s: %s", policy.name,
                            s.action, key or "?", exc)
                return None
            steps.append(Step(s.action, change, s.ignore_errors))
        req = new_request(policy=policy.name, revision=policy.revision, mode=spec.mode,
                          trigger=trigger, target=target, steps=tuple(steps), now=now,
                          expire_seconds=spec.expire_seconds, dry_run=spec.dry_run,
                          ttl_seconds=spec.ttl_seconds)
        req, record = self.store.create(req, by=f"policy:{policy.name}",
                                        reason=f"matched {trigger.source} {trigger.summary}")
        if record is None:
            return None  # the same trigger again
        window.append(now)
        metrics.transitions.labels(policy.name, State.PROPOSED.value).inc()
        if spec.mode == "auto":
            req, _ = self.store.transition(req.id, State.APPROVED, by=f"policy:{policy.name}",
                                           reason="policy mode auto", approved_by=
                                           f"policy:{policy.name}")
            metrics.transitions.labels(policy.name, State.APPROVED.value).inc()
        return req

    # --- the worker's periodic pass ----------------------------------------------------------

    def tick(self) -> float:
        """Take decisions made on the objects (cluster store), expire overdue proposals,
        execute approved requests, revert at ttl. Returns when the next expiry or ttl revert
        falls due (wall clock; inf: none), so a caller may skip ticks until then unless the
        store changed."""
        self.take_decisions()
        now = self.clock()
        due = float("inf")
        for req in self.store.requests():
            try:
                if req.state == State.PROPOSED and not self.administers:
                    pass
                elif req.state == State.PROPOSED and now >= req.expires_at:
                    self._move(req, State.EXPIRED, SYSTEM, "not approved in time")
                elif req.state == State.PROPOSED:
                    due = min(due, req.expires_at)
                elif req.state == State.APPROVED and self.executes(req):
                    req = self.execute(req.id)
                if req.state == State.DONE and req.revert_at is not None and \
                        self.executes(req):
                    if now >= req.revert_at:
                        self.revert(req.id, by=SYSTEM, reason="ttl")
                    else:
                        due = min(due, req.revert_at)
            except (IllegalTransition, Refused):
                continue  # moved on by someone else since it was listed
        return due

    def take_decisions(self) -> None:
        """A store whose requests people decide on elsewhere (kube_store.KubeStore: a patched
        ``spec.decision``): each new decision becomes a transition, or is refused; either way
        it is marked handled with what became of it."""
        pending = getattr(self.store, "decisions", None)
        handled = getattr(self.store, "mark_handled", None)
        if pending is None or handled is None:
            return
        for rid, generation, d in pending():
            by, reason = d.get("by") or UNNAMED, d.get("reason", "")
            if d["action"] != "revert" and not self.administers:
                continue  # for the responder that administers
            try:
                if d["action"] == "approve":
                    approve(self.store, rid, by=by, reason=reason, now=self.clock())
                elif d["action"] == "reject":
                    reject(self.store, rid, by=by, reason=reason)
                else:
                    req = self.store.get(rid)
                    if req is not None and not self.executes(req):
                        continue  # for the responder that executes it
                    self.revert(rid, by=by, reason=reason or "revert")
                result = f"done: {d['action']} by {by}"
            except (IllegalTransition, Refused) as exc:
                result = f"refused: {exc}"
            handled(rid, generation, result)

    def recover(self) -> None:
        """At start: a request left Executing by a crash is Failed (its steps with an outcome
        were applied and are revertible; a step without one may or may not have been)."""
        for req in self.store.requests():
            if req.state == State.EXECUTING and self.executes(req):
                self._move(req, State.FAILED, SYSTEM, "interrupted: the responder stopped "
                           "while executing; steps without an outcome may be partly applied")

    def _move(self, req: ResponseRequest, to: State, by: str, reason: str,
              **updates: Any) -> ResponseRequest:
        moved, _ = self.store.transition(req.id, to, by=by, reason=reason, **updates)
        metrics.transitions.labels(req.policy, to.value).inc()
        return moved

    # --- execution and revert ----------------------------------------------------------------

    def execute(self, rid: str) -> ResponseRequest:
        """Run an Approved request's steps in order (only an Approved one: the store's
        transition to Executing refuses anything else)."""
        req = self.store.get(rid)
        if req is None:
            raise Refused(f"no request {rid!r}")
        req = self._move(req, State.EXECUTING, SYSTEM, "approved by " + (req.approved_by or "?"))
        failed = ""
        for i, step in enumerate(req.steps):
            if req.dry_run:
                req = with_step(req, i, outcome=Outcome(True, "dry run: not applied"))
                continue
            action = self.actions.get(step.action)
            try:
                if action is None:
                    raise ActionError(f"action {step.action} is not available here")
                outcome = action.apply(step.change)
            except Exception as exc:  # noqa: BLE001 - any failure is recorded, never raised
                req = with_step(req, i, error=f"{type(exc).__name__}: {exc}"
                                if not isinstance(exc, ActionError) else str(exc))
                self.store.save(req)
                if not step.ignore_errors:
                    failed = f"{step.action} failed: {exc}"
                    break
                continue
            req = with_step(req, i, outcome=outcome)
            self.store.save(req)
            if not outcome.ok and not step.ignore_errors:
                failed = f"{step.action} failed: {outcome.message}"
                break
        if failed:
            return self._move(req, State.FAILED, SYSTEM, failed, steps=req.steps)
        revert_at = self.clock() + req.ttl_seconds if req.ttl_seconds and not req.dry_run \
            else None
        return self._move(req, State.DONE, SYSTEM, "dry run" if req.dry_run else "applied",
                          revert_at=revert_at, steps=req.steps)

    def revert(self, rid: str, *, by: str, reason: str = "") -> ResponseRequest:
        """Undo every applied step, last first; Reverted only when all undid. A step that could
        not be undone leaves the request as it was (retry later); the error is raised."""
        req = self.store.get(rid)
        if req is None:
            raise Refused(f"no request {rid!r}")
        if req.state not in APPLIED:
            raise IllegalTransition(f"request {req.id}: {req.state.value if req.state else '?'}"
                                    f" has nothing to revert")
        errors = []
        for i in reversed(range(len(req.steps))):
            step = req.steps[i]
            if step.outcome is None or not step.outcome.ok or step.reverted is not None \
                    or req.dry_run:
                continue
            action = self.actions.get(step.action)
            try:
                if action is None:
                    raise ActionError(f"action {step.action} is not available here")
                undone = action.revert(step.change, step.outcome)
            except Exception as exc:  # noqa: BLE001 - reported to the caller, request kept
                errors.append(f"{step.action}: {exc}")
                continue
            if not undone.ok:
                errors.append(f"{step.action}: {undone.message}")
                continue
            req = with_step(req, i, reverted=undone)
            self.store.save(req)
        if errors:
            raise Refused(f"request {req.id}: revert incomplete: {'; '.join(errors)}")
        return self._move(req, State.REVERTED, by, reason or "revert", steps=req.steps)


def _takes(action: Action, param: str) -> bool:
    """Whether an action's ``Params`` has a field ``param`` (the policy's
    ``min_healthy_replicas`` is its default there)."""
    cls = getattr(action, "Params", None)
    return dataclasses.is_dataclass(cls) and param in {f.name for f in dataclasses.fields(cls)}


def approve(store: RequestStore, rid: str, *, by: str, reason: str = "",
            now: Optional[float] = None) -> ResponseRequest:
    """A human's approval: only a Proposed request of an approve (or auto) policy that has not
    expired. An expired one is moved to Expired and refused."""
    at = time.time() if now is None else now
    expired: list[ResponseRequest] = []

    def check(req: ResponseRequest) -> None:
        if req.mode == "advise":
            raise Refused(f"request {req.id}: policy {req.policy} is advise-only: its "
                          f"proposals are never executed (set mode: approve to act on them)")
        if req.state == State.PROPOSED and at >= req.expires_at:
            expired.append(req)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(req.expires_at))
            raise Refused(f"request {req.id} expired at {when} UTC")

    try:
        req, _ = store.transition(rid, State.APPROVED, by=by, reason=reason, check=check,
                                  approved_by=by, decided_reason=reason)
    except Refused:
        if expired:
            store.transition(expired[0].id, State.EXPIRED, by=SYSTEM,
                             reason="not approved in time")
        raise
    metrics.transitions.labels(req.policy, State.APPROVED.value).inc()
    return req


def reject(store: RequestStore, rid: str, *, by: str, reason: str = "") -> ResponseRequest:
    req, _ = store.transition(rid, State.REJECTED, by=by, reason=reason, decided_reason=reason)
    metrics.transitions.labels(req.policy, State.REJECTED.value).inc()
    return req
