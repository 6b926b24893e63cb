"""A real response action on the file system, for tests of the request life without a cluster
or a container: ``plan`` reads a marker file, ``apply`` writes it (refusing when it changed
since the plan, as a real action refuses a moved state), ``revert`` puts back what was there.
Every apply and revert is also appended to ``journal`` so a test can see exactly what ran."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from otelguard.response.actions.base import ActionError, Change, Outcome, Target, Where
from otelguard.response.request import ResponseRequest, Step, Trigger, new_request


@dataclass(frozen=True)
class MarkParams:
    text: str = "marked"


class MarkerAction:
    name: ClassVar[str] = "mark"
    where: ClassVar[Where] = "cluster"
    Params: ClassVar[type[Any]] = MarkParams
    reversible: ClassVar[bool] = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.journal = directory / "journal.jsonl"

    def _file(self, target: Target) -> Path:
        return self.directory / f"{target.namespace or 'host'}_{target.pod or target.pid}.mark"

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        if params.get("fail_plan"):
            raise ActionError("asked to fail at plan")
        path = self._file(target)
        before = path.read_text() if path.exists() else ""
        after = str(params.get("text", "marked"))
        return Change(self.name, target, dict(params), f"mark {path.name} {after!r}",
                      f"--- {path.name}\n+++ {path.name}\n-{before}\n+{after}\n",
                      planned_state={"path": str(path), "before": before})

    def apply(self, change: Change) -> Outcome:
        if change.params.get("fail_apply"):
            raise ActionError("asked to fail at apply")
        path = Path(change.planned_state["path"])
        now = path.read_text() if path.exists() else ""
        if now != change.planned_state["before"]:
            raise ActionError(f"{path.name} changed since the plan")
        path.write_text(str(change.params.get("text", "marked")))
        self._log("apply", change)
        return Outcome(True, f"wrote {path.name}", {"before": now})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        path = Path(change.planned_state["path"])
        before = outcome.revert_state.get("before", "")
        if before:
            path.write_text(before)
        elif path.exists():
            path.unlink()
        self._log("revert", change)
        return Outcome(True, f"restored {path.name}")

    def _log(self, what: str, change: Change) -> None:
        with open(self.journal, "a") as fh:
            fh.write(json.dumps({"what": what, "target": change.target.as_dict()}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def runs(self) -> list[dict[str, Any]]:
        if not self.journal.exists():
            return []
        return [json.loads(line) for line in self.journal.read_text().splitlines()]


def planned_request(action: MarkerAction, *, policy: str = "p", mode: str = "approve",
                    trigger_uid: str = "det-1", pod: str = "web-1", now: float = 1000.0,
                    expire_seconds: float = 900.0, ttl_seconds: float | None = None,
                    dry_run: bool = False) -> ResponseRequest:
    """A request as the responder makes it: one planned marker change for pod ``shop/POD``."""
    target = Target(namespace="shop", pod=pod, node="node-1")
    change = action.plan(target, {"text": f"by {policy}"})
    trigger = Trigger("detection", trigger_uid, "Read sensitive file untrusted", "WARNING",
                      detection_uids=(trigger_uid,), trace_ids=("0af7651916cd43dd8448eb211c80319c",))
    return new_request(policy=policy, revision="abcdef012345", mode=mode, trigger=trigger,
                       target=target, steps=(Step(action.name, change),), now=now,
                       expire_seconds=expire_seconds, ttl_seconds=ttl_seconds, dry_run=dry_run)
