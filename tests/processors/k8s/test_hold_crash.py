"""k8s_attributes' held Resources under SIGKILL: a real ``otelguard processor`` (journal in
``service.state_dir``) enriching from a real kube-apiserver where some pods appear late.

Three senders push a seeded load (each request: Resources of three containers, two records each,
every record with its own ``log.record.uid``) and retry each request until it is answered OK.
Containers: pods that exist from the start; "late" pods the test creates at seeded points of
progress (their records are held until then); containers of a known pod that its status never
lists (held for the whole ``hold_seconds``, released with pod-level attributes, counted
``container_not_found``). Right before each SIGKILL the test sends one more request for a fresh
container and waits for its OK, so Resources are provably held at the kill; that container's pod
is created while the service is down. Then, exactly:

* every acknowledged record arrives downstream (duplicates carry the same uid);
* every copy of a record of a pod that exists by the time it is released is enriched with its
  pod and container; every copy of a never-listed container's record carries its pod only;
* each restart after a SIGKILL re-released held Resources (its log says how many), and no run
  counted a forward drop.

Marked e2e (real etcd + kube-apiserver, tests/support/kube.py); ~30-60 s on a loaded host.
"""

from __future__ import annotations

import queue
import random
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest

from otelguard import semconv
from otelguard.otlp.messages import attrs_dict
from tests.ebpf.containers import new_container_id
from tests.processors.k8s import objects as o
from tests.processors.crash_load import Service, drive, send_until_ok
from tests.support.kube import KubeCluster
from tests.support.kube_world import create_running_pod, make_namespace, next_ip
from tests.transport.receivers import GrpcReceiver

pytestmark = [pytest.mark.e2e]

SEED = 12
REQUESTS = 450
SENDERS = 3
KILLS = 3
EARLY, LATE, NEVER = 3, 6, 2


def _processors(kubeconfig: Path) -> str:
    # hold_seconds far beyond the test's length: a late pod's records are held until it exists
    # (or the final SIGTERM), so what arrives enriched does not depend on the host's speed.
    return ("  - type: k8s_attributes\n"
            f"    config: {{kubeconfig: '{kubeconfig}', hold_seconds: 600,"
            " max_held_batches: 100000, peers: false, wait_for_sync_seconds: 60}\n")


def _pod(admin: Any, ns: str, name: str, cid: str) -> str:
    return create_running_pod(admin, ns, o.pod(ns, name), next_ip(), {"main": cid})


def _request(i: int, rng: random.Random, containers: list[str], pod_uid: dict[str, str],
             expect: dict[str, str]) -> bytes:
    resources = []
    for cid in rng.sample(containers, 3):
        res: dict[str, Any] = {semconv.CONTAINER_ID: cid}
        if cid in pod_uid:
            res[semconv.K8S_POD_UID] = pod_uid[cid]
        uids = [f"r{i}-{cid[:6]}-{j}" for j in range(2)]
        for uid in uids:
            expect[uid] = cid
        resources.append((res, [{semconv.LOG_RECORD_UID: u} for u in uids]))
    return o.logs(*resources).SerializeToString()


def _send_one(endpoint: str, body: bytes) -> None:
    work: queue.Queue[Optional[bytes]] = queue.Queue()
    work.put(body)
    work.put(None)
    send_until_ok(endpoint, work, [0], threading.Lock())


def test_sigkill_while_resources_are_held_loses_no_acknowledged_record(
        tmp_path: Path, kube: KubeCluster, admin: Any) -> None:
    rng = random.Random(SEED)
    ns = make_namespace(admin)
    early = [new_container_id() for _ in range(EARLY)]
    late = [new_container_id() for _ in range(LATE)]
    never = [new_container_id() for _ in range(NEVER)]
    probes = [new_container_id() for _ in range(KILLS)]
    pod_of = {cid: f"early-{i}" for i, cid in enumerate(early)}
    pod_of |= {cid: f"late-{i}" for i, cid in enumerate(late)}
    pod_of |= {cid: f"probe-{i}" for i, cid in enumerate(probes)}
    host_uid = ""
    for i, cid in enumerate(early):
        uid = _pod(admin, ns, f"early-{i}", cid)
        host_uid = host_uid or uid
    pod_uid = {cid: host_uid for cid in never}  # early-0's uid, a container it does not list
    expect: dict[str, str] = {}  # record uid -> container id
    bodies = [_request(i, rng, early + late + never, pod_uid, expect) for i in range(REQUESTS)]
    steps = sorted([(p, "late", i) for i, p in enumerate(rng.sample(range(20, REQUESTS - 60),
                                                                     LATE))]
                   + [(p, "kill", k) for k, p in enumerate(rng.sample(range(40, REQUESTS - 40),
                                                                      KILLS))])

    receiver = GrpcReceiver().start()
    service = Service(tmp_path, receiver.endpoint, _processors(kube.kubeconfig))
    service.start()
    killed_runs: list[int] = []

    def step(what: str, i: int) -> None:
        if what == "late":
            _pod(admin, ns, f"late-{i}", late[i])
            return
        probe = o.logs(({semconv.CONTAINER_ID: probes[i]},
                        [{semconv.LOG_RECORD_UID: f"probe-{i}"}]))
        expect[f"probe-{i}"] = probes[i]
        _send_one(f"127.0.0.1:{service.port}", probe.SerializeToString())  # OK: held, on disk
        service.stop(signal.SIGKILL)
        _pod(admin, ns, f"probe-{i}", probes[i])  # appears while the service is down
        service.start()
        killed_runs.append(service.runs)

    acked = drive(service, receiver, bodies, SENDERS,
                  [(point, lambda what=what, i=i: step(what, i)) for point, what, i in steps])
    assert acked == REQUESTS
    with receiver._lock:
        requests = list(receiver.logs)
    copies: Counter[str] = Counter()
    for req in requests:
        for rl in req.resource_logs:
            res = attrs_dict(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    uid = attrs_dict(rec.attributes)[semconv.LOG_RECORD_UID]
                    assert isinstance(uid, str)
                    copies[uid] += 1
                    cid = expect[uid]
                    assert res[semconv.CONTAINER_ID] == cid
                    if cid in never:
                        assert res[semconv.K8S_POD_NAME] == "early-0", uid
                        assert semconv.K8S_CONTAINER_NAME not in res, uid
                    else:
                        assert res[semconv.K8S_POD_NAME] == pod_of[cid], uid
                        assert res[semconv.K8S_CONTAINER_NAME] == "main", uid
    missing = set(expect) - set(copies)
    assert not missing, f"{len(missing)} acknowledged record(s) never arrived: {sorted(missing)[:5]}"
    assert service.dropped == [0.0] * (KILLS + 1)
    recovered = {run: _rereleased(service.log(run)) for run in killed_runs}
    assert all(n >= 1 for n in recovered.values()), recovered
    print(f"\n{REQUESTS} requests, {len(expect)} records; runs {service.runs}; held Resources "
          f"re-released after each SIGKILL {recovered}; duplicate records "
          f"{sum(1 for n in copies.values() if n > 1)}")


def _rereleased(log: str) -> int:
    """Held Resources a start re-released, from its log line."""
    for line in log.splitlines():
        if "re-releasing" in line:
            return int(line.split("re-releasing ")[1].split()[0])
    return 0
