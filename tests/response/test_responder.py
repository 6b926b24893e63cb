"""The responder over random lives of requests (hypothesis): proposals from three policies
(approve, auto with a ttl, advise), approvals, rejections, time passing (expiry, ttl), restarts
and reverts, in any order. After every step: no action ran for a request of an approve policy
that a person did not approve, none for an advise one; every transition a request shows is in
the audit chain exactly once and the chain verifies; and at the end, deleting or editing any
one record is detected."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otelguard import semconv as S
from otelguard.response.audit import AuditRecord, read_jsonl, verify
from otelguard.response.policy import Facts, PolicySet, parse_policies
from otelguard.response.request import IllegalTransition, State, Trigger
from otelguard.response.responder import Refused, Responder, approve, reject
from otelguard.response.actions.base import Target
from otelguard.response.store import LocalStore
from tests.support.response import MarkerAction

POLICIES = """\
apiVersion: otelguard.dev/v1alpha1
kind: ResponsePolicy
metadata: {name: ask}
spec:
  mode: approve
  expire_after: 100s
  match: {rules: [A]}
  actions: [{action: mark}]
---
apiVersion: otelguard.dev/v1alpha1
kind: ResponsePolicy
metadata: {name: auto}
spec:
  mode: auto
  ttl: 50s
  match: {rules: [B]}
  actions: [{action: mark, params: {text: auto}}]
---
apiVersion: otelguard.dev/v1alpha1
kind: ResponsePolicy
metadata: {name: tell}
spec:
  match: {rules: [C]}
  actions: [{action: mark}]
"""

ops = st.lists(st.one_of(
    st.tuples(st.just("detect"), st.sampled_from("ABC"), st.integers(0, 3)),
    st.tuples(st.just("approve"), st.integers(0, 30)),
    st.tuples(st.just("reject"), st.integers(0, 30)),
    st.tuples(st.just("revert"), st.integers(0, 30)),
    st.tuples(st.just("wait"), st.sampled_from([1, 30, 60, 120])),
    st.tuples(st.just("tick")),
    st.tuples(st.just("restart")),
), min_size=1, max_size=40)


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = 1_000_000.0
        self.action = MarkerAction(root / "marks")
        self.policies = PolicySet(tuple(parse_policies(POLICIES, "mem", {"mark"})))
        self.restart()
        self.n = 0

    def restart(self) -> None:
        self.store = LocalStore(self.root / "store", clock=lambda: self.now)
        self.responder = Responder(self.policies, self.store, {"mark": self.action},
                                   clock=lambda: self.now)
        self.responder.recover()

    def ids(self) -> list[str]:
        return [r.id for r in self.store.requests()]

    def step(self, op: tuple) -> None:  # type: ignore[type-arg]
        kind = op[0]
        if kind == "detect":
            self.n += 1
            self.responder.propose(
                Facts("detection", rule=op[1], priority="WARNING", namespace="shop"),
                Trigger("detection", f"uid-{self.n}", op[1], "WARNING", "", (f"uid-{self.n}",)),
                Target(namespace="shop", pod=f"pod-{op[2]}", node="node-1"))
        elif kind in ("approve", "reject", "revert"):
            ids = self.ids()
            if not ids:
                return
            rid = ids[op[1] % len(ids)]
            try:
                if kind == "approve":
                    approve(self.store, rid, by="alice", reason="ok", now=self.now)
                elif kind == "reject":
                    reject(self.store, rid, by="bob", reason="no")
                else:
                    self.responder.revert(rid, by="carol", reason="undo")
            except (IllegalTransition, Refused):
                pass
        elif kind == "wait":
            self.now += op[1]
        elif kind == "tick":
            self.responder.tick()
        else:
            self.restart()

    def check(self) -> None:
        reqs = self.store.requests()
        executed = 0
        for r in reqs:
            moves = [(t.frm, t.to, t.by) for t in r.history]
            ran = any(to == "Executing" for _, to, _ in moves)
            approvals = [by for _, to, by in moves if to == "Approved"]
            if r.mode == "advise":
                assert not approvals and not ran, moves
            if r.mode == "approve" and ran:
                assert approvals == ["alice"], moves  # a person approved it, before it ran
                assert [to for _, to, _ in moves].index("Approved") < \
                    [to for _, to, _ in moves].index("Executing")
            if r.mode == "auto" and ran:
                assert approvals == ["policy:auto"], moves
            executed += sum(1 for s in r.steps if s.outcome is not None)
        applies = [x for x in self.action.runs() if x["what"] == "apply"]
        assert len(applies) == executed  # nothing applied outside an executing request
        in_files = Counter((r.id, t.frm, t.to) for r in reqs for t in r.history)
        in_chain = Counter((str(a.attributes[S.RESPONSE_REQUEST_ID]),
                            str(a.attributes[S.RESPONSE_STATE_FROM]),
                            str(a.attributes[S.RESPONSE_STATE_TO]))
                           for a in read_jsonl(self.store.audit_path))
        assert in_chain == in_files and max(in_chain.values(), default=1) == 1
        assert verify(read_jsonl(self.store.audit_path)).ok


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.data())
def test_random_lives_keep_approval_and_audit_invariants(steps: list, data: st.DataObject  # type: ignore[type-arg]
                                                         ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        world = World(Path(tmp))
        for op in steps:
            world.step(op)
            world.check()
        records = read_jsonl(world.store.audit_path)
        if len(records) < 2:
            return
        victim = data.draw(st.integers(0, len(records) - 1), label="victim")
        lines = world.store.audit_path.read_text().splitlines()
        # deleted (the last one too: its seq is the exported head)
        kept = [AuditRecord(r.attributes, r.body, r.trace_id) for i, r in enumerate(records)
                if i != victim]
        result = verify(kept)
        if victim == len(records) - 1:  # only the exported head seq shows a cut tail
            assert result.ok and result.chains[world.store.chain][1] == records[-1].seq - 1
        else:
            assert not result.ok and "missing" in result.problems[0], result.problems
        # edited: any one attribute value or the body
        d = json.loads(lines[victim])
        keys = sorted(k for k in d["attributes"] if k != S.AUDIT_HASH)
        key = data.draw(st.sampled_from([*keys, "body"]), label="edited")
        if key == "body":
            d["body"] += "!"
        else:
            d["attributes"][key] = str(d["attributes"][key]) + "x"
        edited = [*records]
        edited[victim] = AuditRecord(d["attributes"], d["body"], d.get("trace_id", ""))
        assert not verify(edited).ok
