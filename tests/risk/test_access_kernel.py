"""Granted vs used and sensitive reach on the real kernel and a real kube-apiserver.

Two Deployments' pods run as fake kubepods containers (tests/ebpf/containers.py) with the
capability set a container runtime gives (the default set plus the pod spec's ``add``, through
``setpriv --bounding-set``) and a service-account token in their own mount namespace at the
path the kubelet mounts it. The pod specs are in the API server, which adds the token's
projected volume itself (its ServiceAccount admission). ``idle`` holds NET_ADMIN, SYS_TIME and
its token and uses none; ``busy`` holds NET_ADMIN and its token and uses both (SO_RCVBUFFORCE
is a CAP_NET_ADMIN check; it reads the token and connects to the API server). Records go
sensor -> OtlpBuilder -> k8s_attributes (real) -> the ``risk`` stage with the grants and reach
analysers, whose tier map watches the same API server; the stage is flushed every 0.2 s (the
service's flush timer runs every second). Both mount a read-write hostPath, which only ``busy``
writes. The suggestions are applied to the idle Deployment as strategic-merge patches and must
leave exactly the capabilities used, no token, and the hostPath read-only.
"""

from __future__ import annotations

import pprint
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.k8s import K8sEnricher
from otelguard.processors.risk import Config
from otelguard.processors.risk.processor import RiskStage
from otelguard.risk.grants.config import GrantsConfig
from otelguard.risk.grants.ledger import DEFAULT_CAPABILITIES, SA_TOKEN_MOUNT
from otelguard.risk.reach.config import ReachConfig
from tests.ebpf.containers import container, new_container_id
from tests.processors.k8s import objects as o
from tests.support.kube_world import apis, create_running_pod, make_namespace, next_ip

pytestmark = [pytest.mark.e2e, pytest.mark.kernel]

IMAGE = "registry.local:5000/shop/app:1.0"
HOSTDATA = "/run/hostdata"  # a read-write hostPath mount (a tmpfs dir in the workload's mount ns)
LEARNING = 3600.0
# Runs as root in a private mount namespace: a tmpfs on /run holds the token where the kubelet
# would mount it, then the shell drops to the container's capability set, enters the
# container's cgroup and execs the workload.
WRAPPER = """set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/secrets/kubernetes.io/serviceaccount /run/hostdata
echo not-a-real-token > /run/secrets/kubernetes.io/serviceaccount/token
cg=$1 caps=$2
shift 2
exec setpriv --bounding-set="$caps" --inh-caps=-all -- \
    /bin/sh -c 'echo $$ > "$0/cgroup.procs" && exec /usr/bin/python3 "$@"' "$cg" "$@"
"""
IDLE = """import socket, sys, time
open('/etc/hostname').read()
for addr, port in ((sys.argv[1], 5432), ('169.254.169.254', 80)):
    s = socket.socket(); s.setblocking(False)
    print(f"{time.time()} {addr}", flush=True)
    s.connect_ex((addr, port)); s.close()
time.sleep(0.5)
"""
BUSY = """import socket, sys
open('/var/run/secrets/kubernetes.io/serviceaccount/token').read()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, 33, 1 << 16)  # SO_RCVBUFFORCE: a CAP_NET_ADMIN check
s.close()
socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()
open('/run/hostdata/state', 'w').write('x')  # the hostPath mount, written
"""


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def bounding(added: list[str]) -> str:
    caps = sorted({c[4:].lower() for c in DEFAULT_CAPABILITIES} | {a.lower() for a in added})
    return "-all," + ",".join("+" + c for c in caps)


def deploy(admin: Any, ns: str, name: str, added: list[str], cid: str) -> str:
    """Deployment -> ReplicaSet -> running pod of ``name``; the pod's uid."""
    core, apps, _, _ = apis(admin)
    spec = {"serviceAccountName": "web-sa",
            "volumes": [{"name": "hostdata", "hostPath": {"path": "/srv/hostdata"}}],
            "containers": [{
                "name": "main", "image": IMAGE,
                "securityContext": {"capabilities": {"add": added}},
                "volumeMounts": [{"name": "hostdata", "mountPath": HOSTDATA}]}]}
    labels = {"app": name}
    dep = apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": spec}}})
    rs = o.replicaset(ns, f"{name}-7c9f", name, IMAGE,
                      o.owner("Deployment", name, dep.metadata.uid))
    rs["spec"]["template"]["spec"] = spec
    created = apps.create_namespaced_replica_set(ns, rs)
    body = o.pod(ns, f"{name}-7c9f-a", labels=labels, service_account="web-sa",
                 owner_ref=o.owner("ReplicaSet", f"{name}-7c9f", created.metadata.uid),
                 containers=spec["containers"])
    body["spec"]["volumes"] = spec["volumes"]
    return create_running_pod(admin, ns, body, next_ip(), {"main": cid})


def run_in(c: Any, tmp: Path, added: list[str], code: str, *args: str) -> Any:
    script = tmp / f"w-{uuid.uuid4().hex[:6]}.py"
    script.write_text(code)
    wrapper = tmp / "wrapper.sh"
    wrapper.write_text(WRAPPER)
    return subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "/bin/sh", str(wrapper), str(c.path),
         bounding(added), str(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def explain(**parts: Any) -> str:
    """A failure message in full (pytest shortens a message that is not a string)."""
    return "\n".join(f"{k}: {pprint.pformat(v, width=110)}" for k, v in parts.items())


def file_maps(sensor: Any, pid: int) -> dict[str, Any]:
    """The file probe's kernel state for ``pid`` (its tid slot's pending stash count, a stash
    left for it, its dedup exec mark) and the sizes of its maps."""
    tables = sensor._program.tables if sensor._program is not None else {}
    out: dict[str, Any] = {}
    for name in ("og_file_pending", "og_file_stash", "og_file_exec", "og_file_dedup"):
        t = tables.get(name)
        if t is None:
            continue
        try:
            if name == "og_file_pending":
                out[name] = t.lookup(pid & 4095)
                out[name + "_nonzero"] = sum(1 for _, v in t.items() if int(getattr(v, "value", v)))
            else:
                out[name + "_entries"] = sum(1 for _ in t.keys())
                if name in ("og_file_stash", "og_file_exec"):
                    out[name + "_for_pid"] = t.lookup(pid) is not None
        except Exception as exc:  # noqa: BLE001 - a diagnostic, never the failure itself
            out[name] = repr(exc)
    return out


def census(sensor: Any) -> dict[str, str]:
    """Every hash map of the loaded program as ``entries/max_entries`` (a full LRU map evicts
    entries another CPU stashed a moment ago)."""
    from otelguard.ebpf import bpfsys

    tables = sensor._program.tables if sensor._program is not None else {}
    out = {}
    for name, t in sorted(tables.items()):
        if t.info.type in (bpfsys.MAP_HASH, bpfsys.MAP_LRU_HASH):
            try:
                out[name] = f"{sum(1 for _ in t.keys())}/{t.info.max_entries}"
            except Exception as exc:  # noqa: BLE001 - a diagnostic, never the failure itself
                out[name] = repr(exc)
    return out


def connects(records: list[Any], cid: str) -> list[Any]:
    """The connect records of container ``cid`` with their resource's workload attributes."""
    out = []
    for rl, r in records:
        res = attrs_dict(rl.resource.attributes)
        if res.get(S.CONTAINER_ID) == cid and r.event_name == S.EV_NETWORK_CONNECT:
            out.append((attrs_dict(r.attributes), {k: v for k, v in res.items()
                                                   if k.startswith("k8s.")}))
    return out


def pump(sensor: Any, builder: Any, enricher: K8sEnricher, stage: RiskStage,
         cids: set[str], until: Callable[[list[Any], list[Any]], bool], marker: str,
         strays: list[Any], timeout: float = 30.0,
         pids: Optional[dict[int, list[Any]]] = None) -> tuple[list[Any], list[Any]]:
    """Drain the sensor every 0.2 s through the builder, the enricher and the risk stage, and
    flush the stage (the processor's path without the network); (records seen, (time, released
    ResourceLogs)) once ``until`` holds. Records of our workloads (``marker`` in the command
    line) that carry another container id go to ``strays``, for the failure messages."""
    records: list[Any] = []
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = []
        for e in sensor.drain(65536, 0.2):
            if pids is not None and e.pid in pids:  # every record of the workloads' pids
                pids[e.pid].append((e.name, e.container_id, e.cgroup_path,
                                    e.get(S.FILE_PATH), e.get(S.NETWORK_PEER_ADDRESS)))
            if e.container_id in cids:
                events.append(e)
            elif marker in str(e.get(S.PROCESS_COMMAND_LINE) or ""):
                strays.append((e.name, e.pid, e.container_id, e.cgroup_path,
                               e.get(S.FILE_PATH) or e.get(S.NETWORK_PEER_ADDRESS)))
        if events:
            batch = enricher.process(builder.logs(events))
            for rl in batch.resource_logs:
                records.extend((rl, r) for sl in rl.scope_logs for r in sl.log_records)
            out = stage.process(batch)
            found.extend((time.time(), rl) for rl in out.resource_logs  # type: ignore[union-attr]
                         if attrs_dict(rl.resource.attributes).get(S.STREAM) == S.STREAM_RISK)
        found.extend((time.time(), rl) for b in stage.drain(False)
                     for rl in b.resource_logs)  # type: ignore[union-attr]
        if until(records, found):
            break
    return records, found


def test_granted_but_unused_is_reported_used_is_not_and_reach_is_fast(
        sensor: Any, admin: Any, kube: Any, tmp_path: Path,
        enricher_factory: Callable[..., K8sEnricher]) -> None:
    from otelguard.exporter.builder import OtlpBuilder
    from otelguard.exporter.settings import NodeIdentity

    from tests.ebpf.capture import flush

    core, apps, _, _ = apis(admin)
    ns = make_namespace(admin)
    vault = make_namespace(admin, {"otelguard.dev/tier": "sensitive"})
    svc = core.create_namespaced_service(vault, {
        "metadata": {"name": "secrets-db", "labels": {"otelguard.dev/tier": "sensitive"}},
        "spec": {"ports": [{"port": 5432}]}})
    db_ip = str(svc.spec.cluster_ip)
    idle_cid, busy_cid = new_container_id(), new_container_id()
    idle_uid = deploy(admin, ns, "idle", ["NET_ADMIN", "SYS_TIME"], idle_cid)
    busy_uid = deploy(admin, ns, "busy", ["NET_ADMIN"], busy_cid)
    pod = core.read_namespaced_pod("idle-7c9f-a", ns)
    assert any(m.mount_path == SA_TOKEN_MOUNT for m in pod.spec.containers[0].volume_mounts), \
        "the API server's ServiceAccount admission mounts the token"

    enricher = enricher_factory()
    clock = Clock()
    stage = RiskStage(Config(
        analysers=("grants", "reach"), grants=GrantsConfig(learning_seconds=LEARNING),
        reach=ReachConfig(kubeconfig=str(kube.kubeconfig), wait_for_sync_seconds=20)),
        clock=clock)
    stage.analyser("grants").clock = clock  # type: ignore[attr-defined]
    stage.start()
    builder = OtlpBuilder(NodeIdentity("node-a", "host-a", "0" * 32))
    flush(sensor)
    strays: list[Any] = []
    try:
        with container(pod_uid=idle_uid, container_id=idle_cid) as ci, \
                container(pod_uid=busy_uid, container_id=busy_cid) as cb:
            busy = run_in(cb, tmp_path, ["NET_ADMIN"], BUSY, str(kube.port))
            idle = run_in(ci, tmp_path, ["NET_ADMIN", "SYS_TIME"], IDLE, db_ip)

            def done(records: list[Any], found: list[Any]) -> bool:
                exits = {attrs_dict(rl.resource.attributes).get(S.CONTAINER_ID)
                         for rl, r in records if r.event_name == S.EV_PROCESS_EXIT}
                return {idle_cid, busy_cid} <= exits and len(found) >= 2

            by_pid: dict[int, list[Any]] = {busy.pid: [], idle.pid: []}
            records, found = pump(sensor, builder, enricher, stage, {idle_cid, busy_cid},
                                  done, str(tmp_path), strays, pids=by_pid)
            out_i, err_i = idle.communicate(timeout=30)
            out_b, err_b = busy.communicate(timeout=30)
        assert idle.returncode == 0 and busy.returncode == 0, (err_i, err_b)
    finally:
        stage.shutdown()

    # --- sensitive reach: both edges of idle, each within 5 s of its connect -----------------
    started = {line.split()[1]: float(line.split()[0]) for line in out_i.decode().splitlines()}
    reach = {}
    for at, rl in found:
        rec = rl.scope_logs[0].log_records[0]
        a = attrs_dict(rec.attributes)
        reach[a[S.RISK_TARGET]] = (at, a)
    seen = sorted({(attrs_dict(rl.resource.attributes).get(S.CONTAINER_ID) == idle_cid,
                    r.event_name, str(attrs_dict(r.attributes).get(S.NETWORK_PEER_ADDRESS, "")),
                    str(attrs_dict(rl.resource.attributes).get(S.K8S_DEPLOYMENT_NAME, "")))
                   for rl, r in records})
    # Strings, not tuples: pytest shortens a non-string assertion message, and these are what
    # a red CI run leaves to explain itself.
    assert set(reach) == {"service:" + vault + "/secrets-db", "builtin:cloud-metadata"}, \
        explain(reach=reach, seen_idle_event_peer_deployment=seen, ours_under_another_id=strays,
                idle_connects=connects(records, idle_cid), idle_pid_records=by_pid[idle.pid],
                sensor=sensor.stats(), kernel=file_maps(sensor, idle.pid), maps=census(sensor))
    for target, addr in ((f"service:{vault}/secrets-db", db_ip),
                         ("builtin:cloud-metadata", "169.254.169.254")):
        at, a = reach[target]
        latency = at - started[addr]
        print(f"sensitive reach {target}: {latency:.2f} s from connect to finding")
        assert 0 < latency < 5.0, latency
        assert a[S.RISK_WORKLOAD] == f"k8s/{ns}/Deployment/idle/main"
        assert a[S.RISK_SOURCE_TIER] == "standard"

    # --- granted vs used, after the learning window ------------------------------------------
    def report() -> dict[tuple[str, str, str], dict[str, Any]]:
        stage.report()
        out = {}
        for b in stage.drain(False):
            for rl in b.resource_logs:  # type: ignore[union-attr]
                assert attrs_dict(rl.resource.attributes)[S.STREAM] == S.STREAM_RISK
                for rec in rl.scope_logs[0].log_records:
                    a = attrs_dict(rec.attributes)
                    if a[S.RISK_ANALYSER] == "grants":
                        out[(str(a[S.RISK_WORKLOAD]).split("/")[3], str(a[S.RISK_KIND]),
                             str(a[S.RISK_SUBJECT]))] = a
        return out

    assert report() == {}, "nothing is unused before the learning window ends"
    clock.offset = LEARNING + 1
    got = report()
    assert ("idle", "capability", "CAP_NET_ADMIN") in got
    assert ("idle", "capability", "CAP_SYS_TIME") in got
    assert ("idle", "token", SA_TOKEN_MOUNT) in got
    assert ("idle", "host_path", HOSTDATA) in got  # read-write, never written: readOnly
    assert got[("idle", "host_path", HOSTDATA)][S.RISK_STATE] == "unwritten"
    busy_opens = [(a.get(S.FILE_PATH), sorted(k for k in a if k.startswith("file.") or
                                                 k.startswith("otelguard.file")))
                  for rl, r in records
                  if attrs_dict(rl.resource.attributes).get(S.CONTAINER_ID) == busy_cid
                  and r.event_name == S.EV_FILE_OPEN for a in [attrs_dict(r.attributes)]]
    assert ("busy", "host_path", HOSTDATA) not in got, explain(  # written
        finding=got[("busy", "host_path", HOSTDATA)], busy_opens=busy_opens,
        ours_under_another_id=strays, busy_pid_records=by_pid[busy.pid], sensor=sensor.stats(),
        kernel=file_maps(sensor, busy.pid), maps=census(sensor))
    busy_facts = explain(busy_pid_records=by_pid[busy.pid], sensor=sensor.stats(),
                         kernel=file_maps(sensor, busy.pid), maps=census(sensor))
    assert ("busy", "capability", "CAP_NET_ADMIN") not in got, busy_facts
    assert ("busy", "token", SA_TOKEN_MOUNT) not in got, busy_facts
    assert all(a[S.RISK_STATE] == "unused" for k, a in got.items() if k[1] != "host_path")
    assert all(k[2] in DEFAULT_CAPABILITIES | {"CAP_NET_ADMIN", "CAP_SYS_TIME", SA_TOKEN_MOUNT,
                                               HOSTDATA} for k in got), got  # nothing else
    busy_verdicts = {(f.state, f.subject) for f in stage.findings(
        f"k8s/{ns}/Deployment/busy/main")}
    assert ("used", "CAP_NET_ADMIN") in busy_verdicts, busy_verdicts
    assert ("used", SA_TOKEN_MOUNT) in busy_verdicts, busy_verdicts
    assert ("used", HOSTDATA) in busy_verdicts, busy_verdicts

    # The suggestions apply to the real Deployment and leave exactly what was used.
    cap_patch = yaml.safe_load(str(got[("idle", "capability", "CAP_NET_ADMIN")][
        S.RISK_SUGGESTION]))
    apps.patch_namespaced_deployment("idle", ns, cap_patch,
                                     _content_type="application/strategic-merge-patch+json")
    token_patch = yaml.safe_load(str(got[("idle", "token", SA_TOKEN_MOUNT)][
        S.RISK_SUGGESTION]))
    apps.patch_namespaced_deployment("idle", ns, token_patch,
                                     _content_type="application/strategic-merge-patch+json")
    mount_patch = yaml.safe_load(str(got[("idle", "host_path", HOSTDATA)][S.RISK_SUGGESTION]))
    apps.patch_namespaced_deployment("idle", ns, mount_patch,
                                     _content_type="application/strategic-merge-patch+json")
    spec = apps.read_namespaced_deployment("idle", ns).spec.template.spec
    (mount,) = [m for m in spec.containers[0].volume_mounts if m.mount_path == HOSTDATA]
    assert mount.read_only is True and mount.name == "hostdata"
    caps = spec.containers[0].security_context.capabilities
    unused = {a[S.RISK_SUBJECT] for a in got.values()}
    assert caps.drop == ["ALL"]
    assert "NET_ADMIN" not in (caps.add or []) and "SYS_TIME" not in (caps.add or [])
    assert not {"CAP_" + c for c in caps.add or []} & unused
    assert spec.automount_service_account_token is False
