"""Detection -> proposal and approval -> effect through the response stage (issue 14 aims at
<= 2 s and <= 1 s p95), with the registry's real freeze_container on fake kubepods containers.

Per round a fresh container (tests/ebpf/containers.py) runs a busy loop; a detection batch for
it goes into ``ResponseStage.process``:

- detection -> proposal: from ``process`` returning to the request being in the store
  (the worker plans the freeze, reading the cgroup, and writes the proposal with its fsyncs);
  baseline: one ``LocalStore.create`` of an already planned request (the store's own cost);
- approval -> effect: from ``approve()`` (what ``otelguard respond approve`` does after its
  start-up) to the request Done, the cgroup frozen (the worker notices the chain grew at its
  next tick, ``tick_seconds`` 0.25, and applies); baseline: ``FreezeContainer.apply`` alone.

Run as root from the repository: ``PYTHONPATH=src:. .venv/bin/python -m bench.response``
(``--rounds N``, default 20).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench.common import summary_line
from otelguard import semconv as S
from otelguard.processors.response import Config, ResponseStage
from otelguard.response.actions.base import Target
from otelguard.response.actions.node import FreezeContainer
from otelguard.response.request import State, Trigger, new_request, Step
from otelguard.response.responder import approve
from otelguard.response.store import LocalStore

POLICY = textwrap.dedent("""\
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: freeze}
    spec:
      mode: approve
      max_per_hour: 100000
      match: {rules: ["Read sensitive file untrusted"]}
      actions: [{action: freeze_container}]
    """)


def _pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] if len(xs) > 1 else xs[0]


def _detection(container_id: str, n: int) -> Any:
    from tests.support.incidents import batch, detection, event, pod, trace

    tr = trace(f"bench-{n}")
    ev = event(S.EV_FILE_OPEN, 4000 + n, tr, attrs={S.FILE_PATH: "/etc/shadow"})
    det = detection(ev, "Read sensitive file untrusted", 13, "credential_access", "T1555")
    res = pod(f"web-{n}", cid="x")
    res[S.CONTAINER_ID] = container_id
    return batch(res, [ev], [det])


def _wait(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("not within 10 s")
        time.sleep(0.001)


def run(rounds: int) -> dict[str, Any]:
    from tests.ebpf.containers import container

    times: dict[str, list[float]] = {"proposal": [], "store": [], "effect": [], "apply": []}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p.yaml").write_text(POLICY)
        stage = ResponseStage(Config(policies=(f"{tmp}/p.yaml",), store=f"{tmp}/store"))
        stage.start()
        base = LocalStore(Path(tmp) / "baseline")
        assert stage.store is not None
        try:
            for n in range(rounds):
                with container() as c:
                    busy = c.popen([sys.executable, "-c", "while True: pass"])
                    try:
                        t = time.perf_counter()
                        stage.process(_detection(c.container_id, n))
                        _wait(lambda: any(r.target.container_id == c.container_id
                                          for r in stage.store.requests()))  # type: ignore[union-attr]
                        times["proposal"].append(time.perf_counter() - t)
                        req = next(r for r in stage.store.requests()
                                   if r.target.container_id == c.container_id)
                        t = time.perf_counter()
                        approve(stage.store, req.id, by="bench")
                        _wait(lambda: stage.store.get(req.id).state == State.DONE)  # type: ignore[union-attr]
                        times["effect"].append(time.perf_counter() - t)
                        stage.responder.revert(req.id, by="bench")  # type: ignore[union-attr]

                        action = FreezeContainer()
                        change = action.plan(Target(container_id=c.container_id), {})
                        t = time.perf_counter()
                        outcome = action.apply(change)
                        times["apply"].append(time.perf_counter() - t)
                        action.revert(change, outcome)
                        planned = new_request(
                            policy="baseline", revision="0", mode="approve",
                            trigger=Trigger("detection", f"b-{n}"), target=change.target,
                            steps=(Step("freeze_container", change),), now=time.time(),
                            expire_seconds=60)
                        t = time.perf_counter()
                        base.create(planned, by="bench")
                        times["store"].append(time.perf_counter() - t)
                    finally:
                        busy.kill()
                        busy.wait()
        finally:
            stage.shutdown()
    out: dict[str, Any] = {}
    for k, xs in times.items():
        out[f"{k}_p50_ms"] = round(statistics.median(xs) * 1000, 1)
        out[f"{k}_p95_ms"] = round(_pct(xs, 95) * 1000, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="fresh containers (default 20)")
    args = p.parse_args(argv)
    f = run(args.rounds)
    print(f"detection -> proposal   p50 {f['proposal_p50_ms']:7.1f} ms  p95 "
          f"{f['proposal_p95_ms']:7.1f} ms   baseline (one store create) p50 "
          f"{f['store_p50_ms']:.1f} ms: x{f['proposal_p50_ms'] / f['store_p50_ms']:.1f}")
    print(f"approval -> effect      p50 {f['effect_p50_ms']:7.1f} ms  p95 "
          f"{f['effect_p95_ms']:7.1f} ms   baseline (freeze apply alone) p50 "
          f"{f['apply_p50_ms']:.1f} ms: x{f['effect_p50_ms'] / f['apply_p50_ms']:.1f}")
    print(summary_line("response", {**f, "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
