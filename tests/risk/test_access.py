"""Granted vs used and sensitive reach through the ``risk`` stage, on agent-shaped OTLP batches
(in-memory tier source; tests/risk/test_access_kernel.py runs them on the real kernel and API
server)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.config import ConfigError, from_mapping
from otelguard.otlp.messages import PyValue, attrs_dict, set_attrs
from otelguard.kube.reflector import InMemorySource, Kind
from otelguard.processors.risk import Config
from otelguard.processors.risk.processor import RiskStage
from otelguard.risk.grants import ledger as G
from otelguard.risk.grants.config import SENSOR_READ_PREFIXES, GrantsConfig
from otelguard.risk.grants.ledger import parse_mount
from otelguard.risk.reach.config import ReachConfig

_uids = itertools.count(1)
TOKEN = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~projected/kube-api-access-x:" \
        "/var/run/secrets/kubernetes.io/serviceaccount:ro:false:rprivate"
HOSTLOG = "/var/log/pods:/host/logs:ro:false:rprivate"
HOSTDATA = "/srv/data:/data::true:rprivate"
ROOT_CAPS = sorted(G.DEFAULT_CAPABILITIES)


class Clock:
    def __init__(self) -> None:
        self.now = 1_763_900_000.0

    def __call__(self) -> float:
        return self.now


def resource(deployment: str = "web", ns: str = "shop", ip: str = "10.244.0.5",
             **extra: PyValue) -> dict[str, PyValue]:
    return {S.CONTAINER_ID: "c" * 64, S.K8S_POD_UID: "p1", S.K8S_NAMESPACE_NAME: ns,
            S.K8S_DEPLOYMENT_NAME: deployment, S.K8S_POD_NAME: f"{deployment}-1",
            S.K8S_CONTAINER_NAME: "main", S.K8S_POD_IP: ip, S.STREAM: S.STREAM_EVENT,
            S.K8S_POD_PRIVILEGED: False, S.K8S_CONTAINER_MOUNTS: [TOKEN],
            S.K8S_POD_SERVICE_ACCOUNT: "web-sa", **extra}


def batch(res: dict[str, PyValue], *events: tuple[str, dict[str, PyValue]]
          ) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, res)
    sl = rl.scope_logs.add()
    for name, attrs in events:
        rec = sl.log_records.add()
        rec.event_name = name
        set_attrs(rec.attributes, {S.LOG_RECORD_UID: f"u{next(_uids)}", S.SYSCALL_RET: 0,
                                   S.PROCESS_EXECUTABLE_PATH: "/app/server", **attrs})
    return req


def ev(name: str, **attrs: PyValue) -> tuple[str, dict[str, PyValue]]:
    keys = {"path": S.FILE_PATH, "flags": S.FILE_OPEN_FLAGS, "cap": S.CAPABILITY,
            "ret": S.SYSCALL_RET, "caps": S.PROCESS_CAP_EFFECTIVE, "addr": S.NETWORK_PEER_ADDRESS,
            "port": S.NETWORK_PEER_PORT, "peer_ns": S.PEER_K8S_NAMESPACE_NAME,
            "peer_svc": S.PEER_K8S_SERVICE_NAME, "nsflags": S.NAMESPACE_FLAGS}
    return name, {keys[k]: v for k, v in attrs.items()}


def analyser(clock: Clock, source: InMemorySource, learning: float = 600.0,
             **reach: Any) -> RiskStage:
    """A risk stage with the grants and reach analysers, on ``clock`` and ``source``."""
    stage = RiskStage(Config(analysers=("grants", "reach"),
                             grants=GrantsConfig(learning_seconds=learning),
                             reach=ReachConfig(**reach)), clock=clock)
    stage.analyser("grants").clock = clock  # type: ignore[attr-defined]
    stage.analyser("reach").source = source  # type: ignore[attr-defined]
    stage.start()
    return stage


def due(stage: RiskStage) -> list[Any]:
    """A report, then what the flush releases (its ResourceLogs)."""
    stage.report()
    return [rl for b in stage.drain(False) for rl in b.resource_logs]  # type: ignore[union-attr]


def flushed(stage: RiskStage, req: ExportLogsServiceRequest) -> list[Any]:
    """Process a batch: the risk records it came out with, then what the next flush releases
    (no report in between: nothing)."""
    out = stage.process(req)
    appended = [rl for rl in out.resource_logs  # type: ignore[union-attr]
                if attrs_dict(rl.resource.attributes).get(S.STREAM) == S.STREAM_RISK]
    assert [rl for b in stage.drain(False) for rl in b.resource_logs] == []  # type: ignore[union-attr]
    return appended


def findings(items: list[Any]) -> list[dict[str, PyValue]]:
    """The finding records of released ResourceLogs, attributes and body."""
    out = []
    for rl in items:
        assert attrs_dict(rl.resource.attributes)[S.STREAM] == S.STREAM_RISK
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                assert rec.event_name == S.EV_RISK_FINDING
                out.append({**attrs_dict(rec.attributes), "body": rec.body.string_value})
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world() -> Iterator[InMemorySource]:
    src = InMemorySource()
    src.put(Kind.NAMESPACE, {"metadata": {"name": "shop"}})
    src.put(Kind.NAMESPACE, {"metadata": {"name": "vault", "labels": {
        "otelguard.dev/tier": "sensitive"}}})
    src.put(Kind.SERVICE, {"metadata": {"namespace": "shop", "name": "payments-db", "labels": {
        "otelguard.dev/tier": "sensitive"}}, "spec": {"clusterIP": "10.96.7.7"}})
    src.put(Kind.SERVICE, {"metadata": {"namespace": "default", "name": "kubernetes"},
                           "spec": {"clusterIP": "10.96.0.1"}})
    src.put(Kind.ENDPOINTSLICE, {"metadata": {"namespace": "default", "name": "kubernetes",
                                              "labels": {"kubernetes.io/service-name":
                                                         "kubernetes"}},
                                 "endpoints": [{"addresses": ["192.168.1.10"]}]})
    src.put(Kind.ENDPOINTSLICE, {"metadata": {"namespace": "shop", "name": "payments-db-1",
                                              "labels": {"kubernetes.io/service-name":
                                                         "payments-db"}},
                                 "endpoints": [{"addresses": ["10.244.9.9"]}]})
    yield src


def test_mount_items_parse_as_the_enricher_writes_them() -> None:
    m = parse_mount(TOKEN)
    assert m is not None and m.token and not m.host_path and m.read_only
    h = parse_mount(HOSTDATA)
    assert h is not None and h.host_path and not h.read_only and h.dest == "/data"
    assert parse_mount("garbage") is None


def key(f: dict[str, PyValue]) -> tuple[str, str, str]:
    return (str(f[S.RISK_KIND]), str(f[S.RISK_STATE]), str(f[S.RISK_SUBJECT]))


def test_unused_grants_are_reported_only_after_the_window(clock: Clock,
                                                          world: InMemorySource) -> None:
    a = analyser(clock, world)
    res = resource(**{S.K8S_POD_ADDED_CAPABILITIES: ["CAP_NET_ADMIN", "CAP_SYS_TIME"],
                      S.K8S_CONTAINER_MOUNTS: [TOKEN, HOSTLOG, HOSTDATA]})
    a.process(batch(res, ev(S.EV_PROCESS_EXEC, caps=ROOT_CAPS),
                    ev(S.EV_PRIV_CAPABLE, cap="CAP_NET_ADMIN", caps=ROOT_CAPS),
                    ev(S.EV_PRIV_CAPABLE, cap="CAP_SYS_TIME", ret=-1),  # denied: no use
                    ev(S.EV_PRIV_CAPABLE, cap="CAP_CHOWN"),
                    ev(S.EV_FILE_OPEN, path="/host/logs/a.log", flags="O_RDONLY")))
    clock.now += 599
    assert due(a) == []  # window not over: nothing is "unused" yet, and nothing used is a record
    states = {(f.kind, f.subject): f.state for f in a.findings("k8s/shop/Deployment/web/main")}
    assert states[("capability", "CAP_SYS_TIME")] == "learning"
    assert states[("capability", "CAP_NET_ADMIN")] == "used"
    clock.now += 2
    got = {key(f): f for f in findings(due(a))}
    assert ("capability", "unused", "CAP_SYS_TIME") in got
    assert ("capability", "unused", "CAP_NET_ADMIN") not in got  # used
    assert ("capability", "unused", "CAP_CHOWN") not in got  # used
    assert ("capability", "unused", "CAP_KILL") in got  # a default the root process never used
    assert ("token", "unused", G.SA_TOKEN_MOUNT) in got
    assert ("host_path", "unwritten", "/data") in got  # rw, outside read prefixes, unwritten
    assert not any(k[2] == "/host/logs" for k in got)  # read-only and read
    assert all(f[S.RISK_ANALYSER] == "grants" for f in got.values())
    f = got[("capability", "unused", "CAP_SYS_TIME")]
    assert f[S.RISK_SEVERITY] == "medium" and got[("capability", "unused", "CAP_KILL")][
        S.RISK_SEVERITY] == "low"
    assert "after 0.2 h of observation (learning window 0.2 h" in str(f["body"])
    assert f[S.RISK_LEARNING_SECONDS] == 600.0
    patch = yaml.safe_load(str(f[S.RISK_SUGGESTION]))
    assert patch == {"spec": {"template": {"spec": {"containers": [{
        "name": "main", "securityContext": {"capabilities": {
            "drop": ["ALL"], "add": ["CHOWN", "NET_ADMIN"]}}}]}}}}
    token = yaml.safe_load(str(got[("token", "unused", G.SA_TOKEN_MOUNT)][S.RISK_SUGGESTION]))
    assert token == {"spec": {"template": {"spec": {"automountServiceAccountToken": False}}}}
    assert due(a) == []  # each once
    a.shutdown()


def test_used_token_hostpath_and_privileged_need_are_not_reported(clock: Clock,
                                                                  world: InMemorySource) -> None:
    a = analyser(clock, world)
    res = resource("agent", **{S.K8S_POD_PRIVILEGED: True,
                               S.K8S_CONTAINER_MOUNTS: [TOKEN, "/proc:/host/proc:ro:false:rslave",
                                                        HOSTDATA]})
    out = findings(flushed(a, batch(
        res, ev(S.EV_FILE_OPEN, path="/var/run/secrets/kubernetes.io/serviceaccount/"
                "..2025_01_01/token", flags="O_RDONLY"),
        ev(S.EV_NETWORK_CONNECT, addr="10.96.0.1", port=443),
        ev(S.EV_FILE_OPEN, path="/data/x", flags="O_WRONLY|O_CREAT"),
        ev(S.EV_MOUNT))))
    # the API server connection is a sensitive edge (reach), with the batch
    assert [(f[S.RISK_ANALYSER], f[S.RISK_TARGET]) for f in out] == [
        ("reach", "builtin:api-server")]
    clock.now += 601
    assert due(a) == []  # no grant finding
    # /host/proc: read-only, outside the read prefixes: unverifiable, never called unused
    rows = {(f.state, f.subject) for f in a.findings("k8s/shop/Deployment/agent/main")}
    assert ("unverifiable", "/host/proc") in rows and ("used", "privileged") in rows
    assert ("used", G.SA_TOKEN_MOUNT) in rows and ("used", "/data") in rows
    a.shutdown()


def test_the_runtimes_own_setup_is_not_the_workloads_use(clock: Clock,
                                                         world: InMemorySource) -> None:
    """runc's init runs in the container's cgroup (mounts, capset) before the entrypoint."""
    a = analyser(clock, world)
    res = resource("tool", **{S.K8S_POD_PRIVILEGED: True, S.K8S_CONTAINER_MOUNTS: []})
    a.process(batch(res, *[(name, {**attrs, S.PROCESS_EXECUTABLE_PATH: "/usr/bin/runc"})
                           for name, attrs in (ev(S.EV_MOUNT), ev(S.EV_PRIV_CAPABLE,
                                                                  cap="CAP_SYS_MODULE"))]))
    clock.now += 601
    assert [f[S.RISK_STATE] for f in findings(due(a)) if f[S.RISK_KIND] == "privileged"] == [
        "unneeded"]
    a.shutdown()


def test_privileged_without_need_suggests_the_used_capabilities(clock: Clock,
                                                                world: InMemorySource) -> None:
    a = analyser(clock, world)
    res = resource("tool", **{S.K8S_POD_PRIVILEGED: True, S.K8S_CONTAINER_MOUNTS: []})
    a.process(batch(res, ev(S.EV_PRIV_CAPABLE, cap="CAP_NET_BIND_SERVICE"),
                    ev(S.EV_FILE_OPEN, path="/dev/null", flags="O_RDWR")))
    clock.now += 601
    (f,) = [f for f in findings(due(a)) if f[S.RISK_KIND] == "privileged"]
    assert f[S.RISK_STATE] == "unneeded" and f[S.RISK_SEVERITY] == "high"
    ctx = yaml.safe_load(str(f[S.RISK_SUGGESTION]))["spec"]["template"]["spec"][
        "containers"][0]["securityContext"]
    assert ctx == {"privileged": False, "allowPrivilegeEscalation": False,
                   "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    a.shutdown()


def test_a_new_edge_into_the_sensitive_tier_is_reported_once(clock: Clock,
                                                             world: InMemorySource) -> None:
    a = analyser(clock, world)
    res = resource(**{S.K8S_CONTAINER_MOUNTS: []})
    out = findings(flushed(a, batch(
        res, ev(S.EV_NETWORK_CONNECT, addr="10.96.7.7", port=5432),  # labelled Service
        ev(S.EV_NETWORK_CONNECT, addr="10.96.7.7", port=5432),  # same edge: once
        ev(S.EV_NETWORK_CONNECT, addr="10.244.3.3", port=8200, peer_ns="vault"),  # labelled ns
        ev(S.EV_NETWORK_CONNECT, addr="169.254.169.254", port=80, ret=-101),  # attempt counts
        ev(S.EV_NETWORK_CONNECT, addr="192.168.1.10", port=6443),  # API server endpoint
        ev(S.EV_NETWORK_CONNECT, addr="10.0.0.4", port=10250),  # kubelet
        ev(S.EV_NETWORK_CONNECT, addr="127.0.0.1", port=2379),  # own netns loopback: no
        ev(S.EV_NETWORK_CONNECT, addr="10.244.1.1", port=80))))  # ordinary peer
    targets = [f[S.RISK_TARGET] for f in out]
    assert targets == ["service:shop/payments-db", "namespace:vault", "builtin:cloud-metadata",
                       "builtin:api-server", "builtin:kubelet/10.0.0.4"]
    assert all(f[S.RISK_SOURCE_TIER] == "standard" and f[S.RISK_KIND] == "edge"
               and f[S.RISK_ANALYSER] == "reach" for f in out)
    assert out[2][S.RISK_STATE] == "attempted" and "tried to connect" in str(out[2]["body"])
    assert [f[S.RISK_SEVERITY] for f in out] == ["medium", "medium", "high", "high", "high"]
    assert due(a) == []  # the report knows them as already recorded
    # the sensitive Service's own pods (its endpoint) are sensitive: no finding from them
    backend = resource("db", ip="10.244.9.9", **{S.K8S_CONTAINER_MOUNTS: []})
    assert flushed(a, batch(backend, ev(S.EV_NETWORK_CONNECT, addr="10.244.3.3", port=8200,
                                        peer_ns="vault"))) == []
    # a Service labelled sensitive later: its next new edge is reported
    world.put(Kind.SERVICE, {"metadata": {"namespace": "shop", "name": "cache", "labels": {
        "otelguard.dev/tier": "sensitive"}}, "spec": {"clusterIP": "10.96.8.8"}})
    assert len(flushed(a, batch(res, ev(S.EV_NETWORK_CONNECT, addr="10.96.8.8",
                                        port=6379)))) == 1
    assert len(a.findings("k8s/shop/Deployment/web/main")) == 6
    a.shutdown()


def test_edges_per_workload_are_bounded(clock: Clock, world: InMemorySource) -> None:
    a = analyser(clock, world, max_edges=4)
    res = resource(**{S.K8S_CONTAINER_MOUNTS: []})
    for port in range(10):
        a.process(batch(res, ev(S.EV_NETWORK_CONNECT, addr="10.96.7.7", port=5000 + port)))
    assert len(a.findings("k8s/shop/Deployment/web/main")) == 4
    assert a.analyser("reach").tracker.evicted_edges == 6  # type: ignore[attr-defined]
    a.shutdown()


def test_the_read_prefixes_are_the_sensors() -> None:
    from otelguard.ebpf.probe import ProbeConfig

    assert SENSOR_READ_PREFIXES == ProbeConfig().read_path_prefixes


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(ReachConfig, {"default_tier": "gold", "max_edges": 0, "tiers": ["a", "a"]},
                     path="reach")
    text = str(err.value)
    assert "reach.default_tier" in text and "reach.max_edges" in text and "reach.tiers" in text
    with pytest.raises(ConfigError, match=r"grants.read_prefixes\[0\]"):
        from_mapping(GrantsConfig, {"read_prefixes": ["etc/"]}, path="grants")


def test_memory_per_workload_is_bounded(clock: Clock, world: InMemorySource) -> None:
    """1,000 workloads, each with a token, a hostPath, two added capabilities, a root process's
    effective set, capability uses, and 8 sensitive edges: the analysers' state per workload
    (tracemalloc), then the same workloads again with 3x the records and more distinct edges
    than ``max_edges``, which must not grow it."""
    import gc
    import tracemalloc

    from otelguard.risk.grants.analyser import GrantsAnalyser
    from otelguard.risk.model import Observation
    from otelguard.risk.reach.analyser import ReachAnalyser

    grants = GrantsAnalyser(GrantsConfig(learning_seconds=600), clock=clock)
    reach = ReachAnalyser(ReachConfig(max_edges=8), lambda reason, n: None, source=world)
    reach.start()

    def feed(n_workloads: int, rounds: int) -> None:
        for w in range(n_workloads):
            workload = f"k8s/ns{w % 50}/Deployment/app{w}/main"
            res = resource(f"app{w}", ns=f"ns{w % 50}", ip=f"10.245.{w // 250}.{w % 250}",
                           **{S.K8S_POD_ADDED_CAPABILITIES: ["CAP_NET_ADMIN", "CAP_SYS_TIME"],
                              S.K8S_CONTAINER_MOUNTS: [TOKEN, HOSTDATA]})
            records = [(S.EV_PROCESS_EXEC, {S.PROCESS_CAP_EFFECTIVE: ROOT_CAPS}),
                       (S.EV_PRIV_CAPABLE, {S.CAPABILITY: "CAP_CHOWN"}),
                       (S.EV_PRIV_CAPABLE, {S.CAPABILITY: "CAP_SETUID"}),
                       (S.EV_FILE_OPEN, {S.FILE_PATH: "/data/f", S.FILE_OPEN_FLAGS: "O_WRONLY"})]
            for r in range(rounds):
                records += [(S.EV_NETWORK_CONNECT, {S.NETWORK_PEER_ADDRESS: "10.96.7.7",
                                                    S.NETWORK_PEER_PORT: 5000 + (r % 12)})]
            for i, (name, attrs) in enumerate(records):
                obs = Observation(workload, "pod", "c" * 64, "node-1", name, 1, f"u{w}-{i}",
                                  {S.SYSCALL_RET: 0, S.LOG_RECORD_UID: f"u{w}-{i}", **attrs},
                                  res)
                (reach if name == S.EV_NETWORK_CONNECT else grants).observe(obs)
                if name == S.EV_FILE_OPEN:
                    grants.observe(obs)
        reach.urgent()

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    feed(1000, 8)
    gc.collect()
    mid = tracemalloc.take_snapshot()
    feed(1000, 24)  # three times the records, more distinct edges than max_edges
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    per = sum(s.size_diff for s in mid.compare_to(before, "filename")) / 1000
    growth = sum(s.size_diff for s in after.compare_to(mid, "filename")) / 1000
    print(f"risk grants+reach state: {per / 1024:.1f} KiB per workload "
          f"(1,000 workloads), +{growth / 1024:.2f} KiB after 3x the records")
    assert len(grants.workloads()) == 1000 and len(reach.workloads()) == 1000
    assert all(len(e) == 8 for e in reach.tracker.edges.values())
    assert per < 8 * 1024, per
    assert growth < 0.1 * per + 256, (per, growth)
    reach.shutdown()


def test_risk_show_prints_the_verdicts_and_the_patch(clock: Clock, world: InMemorySource,
                                                     tmp_path: Path) -> None:
    """`otelguard risk list|show` over the snapshots the stage wrote (the console script)."""
    stage = RiskStage(Config(analysers=("grants", "reach"), directory=str(tmp_path),
                             grants=GrantsConfig(learning_seconds=600)), clock=clock)
    stage.analyser("grants").clock = clock  # type: ignore[attr-defined]
    stage.analyser("reach").source = world  # type: ignore[attr-defined]
    stage.start()
    res = resource(**{S.K8S_POD_ADDED_CAPABILITIES: ["CAP_NET_ADMIN"]})
    stage.process(batch(res, ev(S.EV_PROCESS_EXEC, caps=["CAP_NET_BIND_SERVICE"]),
                        ev(S.EV_NETWORK_CONNECT, addr="169.254.169.254", port=80)))
    clock.now += 601
    stage.report()
    stage.shutdown()
    cli = [sys.executable, "-m", "otelguard.cli", "risk"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    listed = subprocess.run([*cli, "list", "-d", str(tmp_path)], capture_output=True,
                            text=True, env=env, check=True).stdout
    assert "k8s/shop/Deployment/web/main" in listed
    assert "2 capability unused" in listed and "1 edge reached" in listed, listed
    shown = subprocess.run([*cli, "show", "web/main", "-d", str(tmp_path)], capture_output=True,
                           text=True, env=env, check=True).stdout
    lines = shown.splitlines()
    assert any("capability" in ln and "unused" in ln and "CAP_NET_ADMIN" in ln for ln in lines)
    assert any("edge" in ln and "builtin:cloud-metadata" in ln for ln in lines), shown
    # the patch is printed as YAML, line by line under "suggestion:", and parses back
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "suggestion:") + 1
    block = []
    for ln in lines[start:]:
        if not ln.startswith("        "):
            break
        block.append(ln[8:])
    assert yaml.safe_load("\n".join(block))["spec"]["template"]["spec"]
    assert any(ln.strip() == "automountServiceAccountToken: false" for ln in lines), shown


def test_otelguard_run_sends_token_reads_even_with_narrowed_read_prefixes() -> None:
    """A run whose sensor watches no read prefix still gets the token reads the grants analyser
    judges by (runner.with_risk_read_prefixes widens the kernel filter for it)."""
    import dataclasses

    from otelguard.ebpf.settings import SensorConfig
    from otelguard.processors.config import ProcessorSpec
    from otelguard.runner import build_pipeline, with_risk_read_prefixes

    sensor = SensorConfig()
    sensor = dataclasses.replace(sensor, probe=dataclasses.replace(sensor.probe,
                                                                   read_path_prefixes=()))
    pipeline = build_pipeline([ProcessorSpec("risk", "risk", Config(analysers=("grants",)))],
                              None, incidents=False)
    widened = with_risk_read_prefixes(sensor, pipeline).probe.read_path_prefixes
    assert widened == G.SA_TOKEN_DIRS
