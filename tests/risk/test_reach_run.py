"""Sensitive reach through the product: `otelguard run` (its own process: sensor, exporter,
k8s_attributes and risk stages, JSON lines output) with a real kube-apiserver. A pod's container
in a namespace without a tier connects to a Service labelled sensitive and to the cloud
metadata address; each finding must be in the output file within 5 s of its connect (the
agent's batching and the pipeline included, measured at steady state after a warm-up
container), and a repeat of the same edges must add none."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from tests.ebpf.containers import container, new_container_id
from tests.processors.k8s import objects as o
from tests.support.kube_world import apis, create_running_pod, make_namespace, next_ip
from tests.support.otelguard_run import OTELGUARD, output_records, wait_for_line

pytestmark = [pytest.mark.e2e, pytest.mark.kernel, pytest.mark.timeout(300)]

SRC = str(Path(__file__).resolve().parents[2] / "src")
CONNECT = """import socket, sys, time
for addr, port in ((sys.argv[1], 5432), ('169.254.169.254', 80)):
    s = socket.socket(); s.setblocking(False)
    print(f"{time.time()} {addr}", flush=True)
    s.connect_ex((addr, port)); s.close()
    time.sleep(1.5)
"""


def findings(out: Path, cid: str) -> list[dict[str, Any]]:
    return [{**attrs_dict(rec.attributes), "released": rec.time_unix_nano / 1e9}
            for res, rec in output_records(out)
            if res.get(S.CONTAINER_ID) == cid and rec.event_name == S.EV_RISK_FINDING]


def test_a_sensitive_edge_reaches_the_output_within_5_s(tmp_path: Path, admin: Any,
                                                        kube: Any) -> None:
    core = apis(admin)[0]
    ns = make_namespace(admin)
    vault = make_namespace(admin)
    svc = core.create_namespaced_service(vault, {
        "metadata": {"name": "db", "labels": {"otelguard.dev/tier": "sensitive"}},
        "spec": {"ports": [{"port": 5432}]}})
    db_ip = str(svc.spec.cluster_ip)
    cid = new_container_id()
    uid = create_running_pod(admin, ns, o.pod(ns, "batch-1", owner_ref=o.owner(
        "StatefulSet", "batch")), next_ip(), {"main": cid})
    warm = new_container_id()
    warm_uid = create_running_pod(admin, ns, o.pod(ns, "warm-0"), next_ip(), {"main": warm})
    out, config = tmp_path / "out.jsonl", tmp_path / "otelguard.yaml"
    config.write_text(yaml.safe_dump({
        "sensor": {"cgroup_scope": ["/kubepods.slice", "/kubepods"]},
        "processors": [
            {"type": "k8s_attributes", "config": {"kubeconfig": str(kube.kubeconfig)}},
            {"type": "risk", "config": {"analysers": ["reach"], "reach": {
                "kubeconfig": str(kube.kubeconfig)}}},
        ]}))
    script = tmp_path / "connect.py"
    script.write_text(CONNECT)
    argv = [OTELGUARD, "run", "--config", str(config), "--output", f"jsonl:{out}",
            "--metrics", "127.0.0.1:0", "--no-incidents"]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}) as run:
        try:
            wait_for_line(run, "watching (", 180)
            # warm-up: the run's first seconds go to start-up work (the measure is steady state)
            with container(pod_uid=warm_uid, container_id=warm) as c:
                c.run(["/bin/sleep", "2"])  # alive while its records are resolved
            deadline = time.monotonic() + 60
            while not any(res.get(S.CONTAINER_ID) == warm for res, _ in output_records(out)):
                assert time.monotonic() < deadline, "the warm-up container never came out"
                time.sleep(0.2)
            latencies: dict[str, float] = {}
            for attempt in range(2):  # the second run repeats the same edges
                with container(pod_uid=uid, container_id=cid) as c:
                    proc = c.popen([sys.executable, str(script), db_ip],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                    started = _connect_times(proc)
                    deadline = time.monotonic() + 30
                    while attempt == 0 and len(latencies) < 2 and time.monotonic() < deadline:
                        got = {str(a[S.RISK_TARGET]) for a in findings(out, cid)}
                        now = time.time()
                        for target, addr in ((f"service:{vault}/db", db_ip),
                                             ("builtin:cloud-metadata", "169.254.169.254")):
                            if target in got and target not in latencies and addr in started:
                                latencies[target] = now - started[addr]
                        time.sleep(0.05)
                    proc.wait(timeout=30)
                time.sleep(2.5)  # two flushes: anything the repeat caused is out
        finally:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=60)
    for a in findings(out, cid):  # where the time went: connect -> released by the stage
        print(a[S.RISK_TARGET], "first seen", a.get(S.RISK_FIRST_SEEN), "released",
              a.get("released"))
    print(f"sensitive reach through otelguard run: {latencies}")
    assert set(latencies) == {f"service:{vault}/db", "builtin:cloud-metadata"}, latencies
    assert all(0 < v < 5.0 for v in latencies.values()), latencies
    got = findings(out, cid)
    assert sorted(str(a[S.RISK_TARGET]) for a in got) == sorted(latencies), got  # once each
    db = next(a for a in got if a[S.RISK_TARGET] == f"service:{vault}/db")
    assert db[S.RISK_WORKLOAD] == f"k8s/{ns}/StatefulSet/batch/main"
    assert db[S.RISK_TARGET_REASON] == f"label on Service {vault}/db"


def _connect_times(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """address -> when the workload connected, filled by a thread as it prints them."""
    times: dict[str, float] = {}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            at, addr = line.decode().split()
            times[addr] = float(at)

    threading.Thread(target=read, daemon=True).start()
    return times
