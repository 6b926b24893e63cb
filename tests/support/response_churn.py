"""``python -m tests.support.response_churn DIR WORKER N``: drive a local response store through
request lives as fast as it can (propose, approve or reject, execute, revert), printing each
acknowledged transition as ``ack <id> <from> <to>`` once the store returned. Tests kill it
with SIGKILL at random moments (crash safety) or run several at once (the file lock)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from otelguard.response.request import IllegalTransition, State
from otelguard.response.store import LocalStore
from tests.support.response import MarkerAction, planned_request


def main(directory: str, worker: str, count: int) -> None:
    store = LocalStore(Path(directory))
    action = MarkerAction(Path(directory) / f"marks-{worker}")
    rng = random.Random(worker)
    for i in range(count):
        req = planned_request(action, trigger_uid=f"{worker}-{i}", pod=f"{worker}-{i}")
        req, rec = store.create(req, by="policy:p")
        if rec is None:
            continue  # made by an earlier run of this worker before it was killed
        print(f"ack {req.id} New Proposed", flush=True)
        path = ([State.APPROVED, State.EXECUTING, State.DONE, State.REVERTED]
                if rng.random() < 0.7 else [State.REJECTED])
        for to in path:
            try:
                moved, _ = store.transition(req.id, to, by=worker)
            except IllegalTransition:
                break
            print(f"ack {req.id} {req.state.value if req.state else 'New'} {to.value}",
                  flush=True)
            req = moved


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
