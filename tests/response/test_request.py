"""The request state machine: exactly the documented moves are legal (docs/response.md#requests),
and a request survives its JSON form unchanged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from otelguard.response.request import (
    TRANSITIONS, IllegalTransition, ResponseRequest, State, advance, with_step,
)
from otelguard.response.actions.base import Outcome
from tests.support.response import MarkerAction, planned_request

DOCUMENTED = {
    (None, State.PROPOSED),
    (State.PROPOSED, State.APPROVED), (State.PROPOSED, State.REJECTED),
    (State.PROPOSED, State.EXPIRED), (State.APPROVED, State.EXECUTING),
    (State.EXECUTING, State.DONE), (State.EXECUTING, State.FAILED),
    (State.DONE, State.REVERTED), (State.FAILED, State.REVERTED),
}


def test_exactly_the_documented_transitions_are_legal(tmp_path: Path) -> None:
    base = planned_request(MarkerAction(tmp_path))
    assert {(f, t) for f, ts in TRANSITIONS.items() for t in ts} == DOCUMENTED
    for frm in [None, *State]:
        req = dataclasses.replace(base, state=frm)
        for to in State:
            if (frm, to) in DOCUMENTED:
                moved = advance(req, to, by="alice", at=5.0, reason="why")
                assert moved.state == to
                assert moved.history[-1].frm == (frm.value if frm else "New")
                assert (moved.history[-1].to, moved.history[-1].by) == (to.value, "alice")
            else:
                with pytest.raises(IllegalTransition, match=f"-> {to.value} is not allowed"):
                    advance(req, to, by="alice", at=5.0)


def test_json_round_trip_keeps_everything(tmp_path: Path) -> None:
    req = planned_request(MarkerAction(tmp_path), ttl_seconds=60.0)
    req = advance(req, State.PROPOSED, by="policy:p", at=1.0)
    req = advance(req, State.APPROVED, by="alice", at=2.0, reason="seen it",
                  approved_by="alice", decided_reason="seen it")
    req = with_step(req, 0, outcome=Outcome(True, "wrote", {"before": ""}))
    back = ResponseRequest.from_json(json.loads(json.dumps(req.to_json())))
    assert back == req
    assert back.changes_hash == req.changes_hash and back.changes_hash.startswith("sha256:")
    # the hash binds the diff: another planned text is another hash
    other = planned_request(MarkerAction(tmp_path), policy="q")
    assert other.changes_hash != req.changes_hash
    assert other.id != req.id and req.id.startswith("rr-") and len(req.id) == 19
