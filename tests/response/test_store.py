"""The local store: every acknowledged transition survives SIGKILL at any moment and is in
the audit chain exactly once; two processes share it through the file lock; a transition torn
between the request file and the chain is completed by the next process to take the lock."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from otelguard.response.audit import read_jsonl, verify
from otelguard.response.request import IllegalTransition, State
from otelguard.response.store import LocalStore, StoreError
from tests.support.response import MarkerAction, planned_request

ROOT = Path(__file__).resolve().parents[2]


def _churn(directory: Path, worker: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    return subprocess.Popen([sys.executable, "-m", "tests.support.response_churn",
                             str(directory), worker, str(count)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def _transitions_in_files(store: LocalStore) -> Counter[tuple[str, str, str]]:
    return Counter((r.id, t.frm, t.to) for r in store.requests() for t in r.history)


def _transitions_in_chain(store: LocalStore) -> Counter[tuple[str, str, str]]:
    from otelguard import semconv as S
    return Counter((str(r.attributes[S.RESPONSE_REQUEST_ID]),
                    str(r.attributes[S.RESPONSE_STATE_FROM]),
                    str(r.attributes[S.RESPONSE_STATE_TO])) for r in read_jsonl(store.audit_path))


def _check(store: LocalStore, acked: set[tuple[str, str, str]]) -> None:
    in_files = _transitions_in_files(store)
    in_chain = _transitions_in_chain(store)
    assert in_chain == in_files  # every transition a file shows is in the chain exactly once
    assert max(in_chain.values(), default=1) == 1
    assert acked <= set(in_files)  # nothing acknowledged is lost
    result = verify(read_jsonl(store.audit_path))
    assert result.ok, result.problems


def test_transitions_are_chained_and_refused_when_illegal(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", clock=lambda: 1500.0)
    action = MarkerAction(tmp_path / "marks")
    req, rec = store.create(planned_request(action), by="policy:p", reason="matched")
    assert rec is not None and rec.seq == 1 and req.state == State.PROPOSED
    again, none = store.create(planned_request(action), by="policy:p")
    assert none is None and again == req  # the same trigger proposes nothing new
    store.transition(req.id, State.APPROVED, by="alice", reason="ok")
    with pytest.raises(IllegalTransition):
        store.transition(req.id, State.REJECTED, by="bob")
    with pytest.raises(StoreError, match="no request"):
        store.transition("rr-nothere", State.APPROVED, by="bob")
    assert store.get(req.id[:8]) == store.get(req.id)  # a prefix names it
    assert store.head()[0] == 2
    _check(store, set())


def test_a_transition_torn_between_file_and_chain_is_completed(tmp_path: Path) -> None:
    """The disk exactly as a crash after the request file's rename and before the chain
    append leaves it: the intent, the new request file, the old chain."""
    directory = tmp_path / "store"
    store = LocalStore(directory)
    action = MarkerAction(tmp_path / "marks")
    req, _ = store.create(planned_request(action), by="policy:p")
    old_chain = store.audit_path.read_bytes()
    seq, _ = store.head()
    store.transition(req.id, State.APPROVED, by="alice")
    store.audit_path.write_bytes(old_chain)
    (directory / "intent.json").write_text(json.dumps({"id": req.id, "n": 2, "seq": seq + 1}))
    other = LocalStore(directory)  # another process takes the lock next
    assert other.get(req.id).state == State.APPROVED  # type: ignore[union-attr]
    assert not (directory / "intent.json").exists()
    _check(other, set())
    # and a crash before the rename (intent written, file still old): nothing to append
    (directory / "intent.json").write_text(json.dumps({"id": req.id, "n": 3, "seq": seq + 2}))
    assert LocalStore(directory).head()[0] == seq + 1
    _check(other, set())


def test_sigkill_at_random_moments_loses_no_acknowledged_transition(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    LocalStore(directory)
    rng = random.Random(7)
    acked: set[tuple[str, str, str]] = set()
    kills = 0
    for _ in range(12):
        proc = _churn(directory, "w", 400)
        assert proc.stdout is not None
        first = proc.stdout.readline()  # started (imports take most of a second)
        if first:
            acked.add(tuple(first.split()[1:]))  # type: ignore[arg-type]
        deadline = time.monotonic() + rng.uniform(0.0, 0.4)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, rid, frm, to = line.split()
            acked.add((rid, frm, to))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        rest, _ = proc.communicate()
        for line in rest.splitlines():  # acknowledged before the kill landed
            _, rid, frm, to = line.split()
            acked.add((rid, frm, to))
        _check(LocalStore(directory), acked)
    assert kills >= 8 and len(acked) > 50


def test_two_processes_share_one_chain(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    LocalStore(directory)
    procs = [_churn(directory, w, 60) for w in ("a", "b")]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    acked = {tuple(line.split()[1:]) for out in outs for line in out.splitlines()}
    store = LocalStore(directory)
    _check(store, acked)  # type: ignore[arg-type]
    assert store.head()[0] == len(acked)  # one seq per transition, no gap, no reuse
    assert {r.id[:3] for r in store.requests()} == {"rr-"} and len(store.requests()) == 120
