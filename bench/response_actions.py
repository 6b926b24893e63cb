"""Approval -> effect: how long each response action's ``apply`` takes (issue 14 aims <= 1 s p95).

An approved request runs ``apply`` on the plan the human saw; the effect is in place when it
returns (the API server accepted the write, the cgroup reports frozen, the process has exited,
the nft table is loaded). Per action, ``--rounds`` fresh targets (default 20): plan (untimed,
it precedes the approval), then apply (timed), then revert (timed, untimed setup between).

- cluster actions on a real etcd + kube-apiserver (tests/support/kube.py; no controllers, the
  bench writes Deployment/ReplicaSet/pods as they would), against the baseline of one GET of
  the pod through the same client (the floor of any API round trip);
- node actions on the real kernel with fake kubepods containers (tests/ebpf/containers.py),
  against the baseline of one fork+exec of /bin/true (block_peer runs nsenter + nft).

Run as root from the repository: ``PYTHONPATH=src:. .venv/bin/python -m bench.response_actions``
(``--rounds N``, ``--quick``: 5 rounds, ``--skip-cluster``, ``--skip-node``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from bench.common import summary_line
from otelguard.response.actions.base import Target
from otelguard.response.actions.host import Host, proc_stat
from otelguard.response.actions.kube import CordonNode, IsolatePod, LabelPod
from otelguard.response.actions.kubeapi import api_client
from otelguard.response.actions.node import BlockPeer, FreezeContainer, KillProcess
from otelguard.response.actions.workload import DeletePod, RollbackDeployment, ScaleToZero

Timings = dict[str, dict[str, list[float]]]


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def _pct(xs: list[float], q: float) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def _round(timings: Timings, action: Any, target: Target, params: dict[str, Any]) -> None:
    change = action.plan(target, params)
    took, outcome = _ms(lambda: action.apply(change))
    assert outcome.ok, outcome.message
    timings.setdefault(action.name, {"apply": [], "revert": []})["apply"].append(took)
    if action.reversible:
        took, _ = _ms(lambda: action.revert(change, outcome))
        timings[action.name]["revert"].append(took)


def bench_cluster(rounds: int, timings: Timings) -> list[float]:
    from tests.support.kube import start_cluster
    from tests.support.kube_rollout import make_node, rollout
    from tests.support.kube_world import make_namespace

    with tempfile.TemporaryDirectory() as tmp:
        cluster = start_cluster(Path(tmp) / "kube")
        try:
            admin = api_client(str(cluster.kubeconfig))
            from kubernetes import client

            core = client.CoreV1Api(admin)
            baseline: list[float] = []
            for _ in range(rounds):
                ns = make_namespace(admin)
                node = f"node-{uuid.uuid4().hex[:6]}"
                make_node(admin, node)
                r = rollout(admin, ns, "web", ["web:1", "web:2"], replicas=3, ready=3, node=node)
                pod = Target(namespace=ns, pod=r.pods[0])
                baseline.append(_ms(lambda: core.read_namespaced_pod(
                    r.pods[0], ns, _preload_content=False))[0])
                for action, target, params in (
                        (LabelPod(admin), pod, {"labels": {"quarantine": "true"}}),
                        (IsolatePod(admin), pod, {}), (CordonNode(admin), pod, {}),
                        (ScaleToZero(admin), pod, {}), (RollbackDeployment(admin), pod, {}),
                        (DeletePod(admin), Target(namespace=ns, pod=r.pods[1]), {})):
                    _round(timings, action, target, params)
            return baseline
        finally:
            cluster.stop()


def bench_node(rounds: int, timings: Timings) -> list[float]:
    from tests.ebpf.containers import container

    busy = [sys.executable, "-c", "while True: pass"]
    baseline: list[float] = []
    for _ in range(rounds):
        baseline.append(_ms(lambda: subprocess.run(["/bin/true"], check=True))[0])
        with container() as c:
            loop = c.popen(busy)
            _round(timings, FreezeContainer(), Target(container_id=c.container_id), {})
            st = proc_stat(Host(), loop.pid)
            assert st is not None
            _round(timings, KillProcess(), Target(pid=loop.pid, process_start_ticks=st.start_ticks),
                   {})
            loop.wait()
            ns = f"otelguard-bench-{uuid.uuid4().hex[:8]}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            holder = c.popen(["ip", "netns", "exec", ns, "sleep", "60"])
            try:
                time.sleep(0.05)  # the holder has entered the netns
                _round(timings, BlockPeer(), Target(container_id=c.container_id,
                                                    peer_address="127.0.0.2", peer_port=8080), {})
            finally:
                holder.kill()
                holder.wait()
                subprocess.run(["ip", "netns", "del", ns], check=False)
    return baseline


def report(timings: Timings, baselines: dict[str, list[float]]) -> dict[str, float]:
    figures: dict[str, float] = {}
    print(f"{'action':<22}{'apply p50':>11}{'apply p95':>11}{'x base':>9}{'revert p95':>12}")
    for kind, base in baselines.items():
        b50 = statistics.median(base)
        print(f"{'baseline ' + kind:<22}{b50:>9.1f}ms{_pct(base, 95):>9.1f}ms{1:>9.1f}")
        names = ("freeze_container", "kill_process", "block_peer") if kind == "node" else (
            "label_pod", "isolate_pod", "cordon_node", "scale_to_zero", "rollback_deployment",
            "delete_pod")
        for name in names:
            t = timings[name]
            p50, p95 = statistics.median(t["apply"]), _pct(t["apply"], 95)
            rev = f"{_pct(t['revert'], 95):>10.1f}ms" if t["revert"] else f"{'-':>12}"
            print(f"{name:<22}{p50:>9.1f}ms{p95:>9.1f}ms{p50 / b50:>9.1f}{rev}")
            figures[f"{name}_apply_p95_ms"] = round(p95, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="fresh targets per action")
    ap.add_argument("--quick", action="store_true", help="5 rounds")
    ap.add_argument("--skip-cluster", action="store_true", help="node actions only")
    ap.add_argument("--skip-node", action="store_true", help="cluster actions only")
    args = ap.parse_args(argv)
    rounds = 5 if args.quick else args.rounds
    timings: Timings = {}
    baselines: dict[str, list[float]] = {}
    if not args.skip_cluster:
        baselines["cluster"] = bench_cluster(rounds, timings)
    if not args.skip_node:
        baselines["node"] = bench_node(rounds, timings)
    figures = report(timings, baselines)
    worst = max(figures.values()) if figures else float("nan")
    print(f"worst apply p95: {worst:.1f} ms (aim <= 1000 ms)")
    print(summary_line("response_actions", {**figures, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
