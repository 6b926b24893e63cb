"""K8sEnricher with the in-memory source: association order, never-overwrite, owners, hold/expiry,
grace period, peers, config. The same code runs against a real API server in test_apiserver.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from otelguard import semconv
from otelguard.processors.errors import ConfigError
from otelguard.processors.k8s import Config, K8sEnricher, create
from otelguard.processors.k8s import config as k8s_config
from otelguard.processors.k8s.pods import parse_image, strip_container_id
from otelguard.processors.k8s.processor import DROP_STAGE, GIVE_UP_SECONDS
from otelguard.processors.k8s.source import InMemorySource, Kind
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.stage import Stage

from tests.support.metrics import sample
from tests.processors.k8s import objects as o

NS = "shop"
CID = "a" * 64
CID2 = "b" * 64


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _dropped(reason: str) -> float:
    return sample("otelguard_dropped_total", stage=DROP_STAGE, reason=reason)


def _metric(target: str, result: str) -> float:
    return sample("otelguard_k8s_enrichment_total", target=target, result=result)


def _res(batch: Any, i: int = 0) -> dict[str, Any]:
    items = batch.resource_logs if hasattr(batch, "resource_logs") else batch.resource_spans
    return attrs_dict(items[i].resource.attributes)


def _world(src: InMemorySource) -> dict[str, str]:
    """A namespace with Deployment web -> ReplicaSet web-5d4f -> pod web-5d4f-x (container CID)."""
    uid = str(uuid.uuid4())
    src.put(Kind.NAMESPACE, o.namespace(NS, {"team": "payments", "other": "x"}))
    dep = o.owner("Deployment", "web")
    src.put(Kind.REPLICASET, o.replicaset(NS, "web-5d4f", "web", "nginx:1.27", dep))
    p = o.pod(
        NS, "web-5d4f-x", uid=uid,
        labels={"app": "web", "app.kubernetes.io/name": "storefront", "pod-template-hash": "5d4f"},
        annotations={"note": "n", "otelguard.io/profile": "strict"},
        owner_ref=o.owner("ReplicaSet", "web-5d4f"),
        containers=[
            {"name": "main", "image": "registry.local:5000/shop/web:2.1@sha256:" + "0" * 64,
             "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CAP_SYS_PTRACE"]}}},
            {"name": "sidecar", "image": "envoy", "securityContext": {"privileged": True}},
        ],
        service_account="web-sa",
    )
    src.put(Kind.POD, o.running(p, "10.1.0.5", {"main": CID, "sidecar": CID2}))
    src.put(Kind.SERVICE, o.service(NS, "web-svc", "10.96.0.10", "web"))
    src.put(Kind.ENDPOINTSLICE, o.endpointslice(NS, "web-svc-abc", "web-svc", ["10.1.0.5"]))
    return {"uid": uid}


def _enricher(src: InMemorySource, clock: Clock, **cfg: Any) -> K8sEnricher:
    cfg.setdefault("wait_for_sync_seconds", 0)
    cfg.setdefault("pod_annotations", ("otelguard.io/*",))
    e = K8sEnricher(Config(**cfg), src, clock)
    e.start()
    return e


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def src() -> InMemorySource:
    return InMemorySource()


def test_is_a_stage_and_builds_from_registry_shape(src: InMemorySource) -> None:
    e = create(Config(wait_for_sync_seconds=0), src)
    assert isinstance(e, Stage)
    assert e.type_name == "k8s_attributes"


def test_container_id_gives_pod_container_workload_image_labels_security(
    src: InMemorySource, clock: Clock
) -> None:
    w = _world(src)
    e = _enricher(src, clock)
    before = _metric("resource", "hit_container_id")
    batch = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{semconv.PROCESS_PID: 1}])))
    a = _res(batch)
    assert a[semconv.K8S_NAMESPACE_NAME] == NS
    assert a[semconv.K8S_POD_NAME] == "web-5d4f-x"
    assert a[semconv.K8S_POD_UID] == w["uid"]
    assert a[semconv.K8S_CONTAINER_NAME] == "main"
    assert a[semconv.K8S_NODE_NAME] == "node-a"
    assert a[semconv.K8S_POD_IP] == "10.1.0.5"
    assert a[semconv.K8S_DEPLOYMENT_NAME] == "web"
    assert a[semconv.K8S_REPLICASET_NAME] == "web-5d4f"
    assert a[semconv.CONTAINER_IMAGE_NAME] == "registry.local:5000/shop/web"
    assert a[semconv.CONTAINER_IMAGE_TAGS] == ["2.1"]
    assert a[semconv.SERVICE_NAME] == "storefront"  # app.kubernetes.io/name wins
    assert a[semconv.K8S_POD_LABEL_PREFIX + "app"] == "web"
    assert a[semconv.K8S_POD_LABEL_PREFIX + "app.kubernetes.io/name"] == "storefront"
    assert semconv.K8S_POD_LABEL_PREFIX + "pod-template-hash" not in a  # not allow-listed
    assert a[semconv.K8S_POD_ANNOTATION_PREFIX + "otelguard.io/profile"] == "strict"
    assert semconv.K8S_POD_ANNOTATION_PREFIX + "note" not in a
    assert a[semconv.K8S_NAMESPACE_LABEL_PREFIX + "team"] == "payments"
    assert semconv.K8S_NAMESPACE_LABEL_PREFIX + "other" not in a
    assert a[semconv.K8S_POD_PRIVILEGED] is False  # main is not; the sidecar is
    assert a[semconv.K8S_POD_ADDED_CAPABILITIES] == ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"]
    assert a[semconv.K8S_POD_HOST_PID] is False
    assert a[semconv.K8S_POD_HOST_NETWORK] is False
    assert a[semconv.K8S_POD_SERVICE_ACCOUNT] == "web-sa"
    assert _metric("resource", "hit_container_id") == before + 1

    side = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID2}, [{}]))))
    assert side[semconv.K8S_CONTAINER_NAME] == "sidecar"
    assert side[semconv.K8S_POD_PRIVILEGED] is True
    assert side[semconv.CONTAINER_IMAGE_NAME] == "envoy"
    assert side[semconv.CONTAINER_IMAGE_TAGS] == ["latest"]


def test_pod_spec_mounts_and_exec_probes_for_falcos_container_fields(
    src: InMemorySource, clock: Clock
) -> None:
    uid = str(uuid.uuid4())
    p = o.pod(NS, "agent-x", uid=uid, containers=[{
        "name": "main", "image": "agent:1",
        "volumeMounts": [
            {"name": "sock", "mountPath": "/var/run/docker.sock"},
            {"name": "proc", "mountPath": "/host/proc", "readOnly": True,
             "mountPropagation": "HostToContainer"},
            {"name": "cfg", "mountPath": "/etc/agent", "subPath": "agent.yaml"},
            {"name": "data", "mountPath": "/data"},  # a claim: its host source is not known
        ],
        "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
    }, {"name": "side", "image": "side:1"}])
    p["spec"]["volumes"] = [
        {"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}},
        {"name": "proc", "hostPath": {"path": "/proc", "type": "Directory"}},
        {"name": "cfg", "configMap": {"name": "agent"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
    ]
    src.put(Kind.POD, o.running(p, "10.1.0.9", {"main": CID, "side": CID2}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert a[semconv.K8S_CONTAINER_MOUNTS] == [
        "/var/run/docker.sock:/var/run/docker.sock::true:rprivate",
        "/proc:/host/proc:ro:false:rslave",
        f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~configmap/cfg/agent.yaml:/etc/agent"
        "::true:rprivate",
    ]
    assert a[semconv.K8S_CONTAINER_LIVENESS_PROBE] == ["cat", "/tmp/healthy"]
    assert semconv.K8S_CONTAINER_READINESS_PROBE not in a  # not an exec probe
    side = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID2}, [{}]))))
    assert side[semconv.K8S_CONTAINER_MOUNTS] == []  # known: no mounts
    assert semconv.K8S_CONTAINER_LIVENESS_PROBE not in side


def test_association_order_container_then_uid_then_ip(src: InMemorySource, clock: Clock) -> None:
    w = _world(src)
    other_uid = str(uuid.uuid4())
    src.put(Kind.POD, o.running(o.pod(NS, "lonely", uid=other_uid), "10.1.0.9", {"main": "c" * 64}))
    e = _enricher(src, clock)
    # container.id points at web; the uid and IP at "lonely": container.id wins.
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID, semconv.K8S_POD_UID: other_uid,
                                semconv.K8S_POD_IP: "10.1.0.9"}, [{}]))))
    assert a[semconv.K8S_POD_NAME] == "web-5d4f-x"
    # No container.id: the uid wins over the IP.
    a = _res(e.process(o.logs(({semconv.K8S_POD_UID: w["uid"], semconv.K8S_POD_IP: "10.1.0.9"},
                               [{}]))))
    assert a[semconv.K8S_POD_NAME] == "web-5d4f-x"
    assert semconv.K8S_CONTAINER_NAME not in a  # pod-level only
    assert a[semconv.K8S_POD_PRIVILEGED] is True  # any container of the pod
    # IP alone.
    a = _res(e.process(o.logs(({semconv.K8S_POD_IP: "10.1.0.9"}, [{}]))))
    assert a[semconv.K8S_POD_NAME] == "lonely"
    # bare pod: one fixed name, never its own (a stream per pod in Loki)
    assert a[semconv.SERVICE_NAME] == "bare-pod"


def test_never_overwrites_what_the_resource_already_says(src: InMemorySource, clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID, semconv.SERVICE_NAME: "checkout",
                                semconv.K8S_NAMESPACE_NAME: "set-by-sdk"}, [{}]))))
    assert a[semconv.SERVICE_NAME] == "checkout"
    assert a[semconv.K8S_NAMESPACE_NAME] == "set-by-sdk"
    assert a[semconv.K8S_POD_NAME] == "web-5d4f-x"


def test_host_resources_are_left_alone_and_not_counted(src: InMemorySource, clock: Clock) -> None:
    e = _enricher(src, clock)
    before = _dropped("pod_not_found")
    batch = e.process(o.logs(({semconv.HOST_PROCESS: True, semconv.HOST_NAME: "n1"}, [{}]),
                             ({semconv.HOST_NAME: "n1"}, [{}])))
    assert len(batch.resource_logs) == 2
    assert _dropped("pod_not_found") == before
    assert e.held_count == 0


@pytest.mark.parametrize("owner_kind,api,field", [
    ("StatefulSet", "apps/v1", semconv.K8S_STATEFULSET_NAME),
    ("DaemonSet", "apps/v1", semconv.K8S_DAEMONSET_NAME),
])
def test_direct_owners(src: InMemorySource, clock: Clock, owner_kind: str, api: str,
                       field: str) -> None:
    src.put(Kind.POD, o.running(o.pod(NS, "w-0", uid=str(uuid.uuid4()),
                                      owner_ref=o.owner(owner_kind, "w", api=api)),
                                "10.1.0.7", {"main": CID}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert a[field] == "w"
    assert a[semconv.SERVICE_NAME] == "w"


def test_job_and_cronjob(src: InMemorySource, clock: Clock) -> None:
    src.put(Kind.JOB, o.job(NS, "backup-29001", o.owner("CronJob", "backup", api="batch/v1")))
    src.put(Kind.POD, o.running(o.pod(NS, "backup-29001-q", uid=str(uuid.uuid4()),
                                      owner_ref=o.owner("Job", "backup-29001", api="batch/v1")),
                                "10.1.0.8", {"main": CID}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert a[semconv.K8S_JOB_NAME] == "backup-29001"
    assert a[semconv.K8S_CRONJOB_NAME] == "backup"
    assert a[semconv.SERVICE_NAME] == "backup"


def test_cronjob_run_before_its_job_is_known_is_named_after_the_cronjob(
        src: InMemorySource, clock: Clock) -> None:
    """Every run of a CronJob is one service.name even while the run's Job has not reached the
    cache (its name carries the scheduled minute); a Job of another name keeps its own."""
    for i, (job, cid) in enumerate((("backup-29001000", CID), ("migrate-v2", "c" * 64))):
        src.put(Kind.POD, o.running(o.pod(NS, f"{job}-q", uid=str(uuid.uuid4()),
                                          owner_ref=o.owner("Job", job, api="batch/v1")),
                                    f"10.1.0.{20 + i}", {"main": cid}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert a[semconv.K8S_JOB_NAME] == "backup-29001000" and a[semconv.SERVICE_NAME] == "backup"
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: "c" * 64}, [{}]))))
    assert a[semconv.SERVICE_NAME] == "migrate-v2"


@pytest.mark.parametrize("labels,expected", [
    ({"app.kubernetes.io/name": "shop", "app": "legacy"}, "shop"),
    ({"app": "legacy", "k8s-app": "dns"}, "legacy"),
    ({"k8s-app": "dns"}, "dns"),
    ({"team": "payments"}, "bare-pod"),
])
def test_bare_pod_service_name(src: InMemorySource, clock: Clock, labels: dict[str, str],
                               expected: str) -> None:
    src.put(Kind.POD, o.running(o.pod(NS, "debug-x7k2p", uid=str(uuid.uuid4()), labels=labels),
                                "10.1.0.30", {"main": CID}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert a[semconv.SERVICE_NAME] == expected and a[semconv.K8S_POD_NAME] == "debug-x7k2p"


def test_owner_arriving_after_the_pod_is_used_from_then_on(src: InMemorySource,
                                                           clock: Clock) -> None:
    src.put(Kind.POD, o.running(o.pod(NS, "api-77-z", uid=str(uuid.uuid4()),
                                      owner_ref=o.owner("ReplicaSet", "api-77")),
                                "10.1.0.3", {"main": CID}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert a[semconv.K8S_REPLICASET_NAME] == "api-77"
    assert semconv.K8S_DEPLOYMENT_NAME not in a
    assert a[semconv.SERVICE_NAME] == "api-77"
    src.put(Kind.REPLICASET, o.replicaset(NS, "api-77", "api", "x", o.owner("Deployment", "api")))
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))  # memo invalidated
    assert a[semconv.K8S_DEPLOYMENT_NAME] == "api"
    assert a[semconv.SERVICE_NAME] == "api"


def test_late_pod_is_held_then_enriched_in_order(src: InMemorySource, clock: Clock) -> None:
    e = _enricher(src, clock, hold_seconds=2.0)
    held_before = _metric("resource", "held")
    first = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{semconv.PROCESS_PID: 1}]),
                             ({semconv.HOST_PROCESS: True}, [{}])))
    # The unknown container's records left the batch; the host's went on.
    assert len(first.resource_logs) == 1
    assert e.held_count == 1
    assert _metric("resource", "held") == held_before + 1
    clock.t += 0.5
    second = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{semconv.PROCESS_PID: 2}])))
    assert len(second.resource_logs) == 0  # held too: keeps order behind the first
    assert e.held_count == 2
    assert e.drain(final=False) == []  # not due yet
    # The kubelet reports the container: the next batch carries the held ones first, enriched.
    _world(src)
    clock.t += 0.1
    third = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{semconv.PROCESS_PID: 3}])))
    pids = [attrs_dict(rl.scope_logs[0].log_records[0].attributes)[semconv.PROCESS_PID]
            for rl in third.resource_logs]
    assert pids == [1, 2, 3]
    for i in range(3):
        assert _res(third, i)[semconv.K8S_POD_NAME] == "web-5d4f-x"
    assert e.held_count == 0
    assert e.released_records == 2  # pids 1 and 2 ride on the third batch (pipeline counts)


def test_hold_expires_passes_unenriched_counts_and_gives_up(src: InMemorySource,
                                                            clock: Clock) -> None:
    e = _enricher(src, clock, hold_seconds=2.0)
    before = _dropped("pod_not_found")
    e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}, {}, {}])))
    assert e.held_count == 1
    clock.t += 2.5
    out = e.drain(final=False)  # the pipeline's flush timer
    assert len(out) == 1 and len(out[0].resource_logs) == 1
    assert semconv.K8S_POD_NAME not in _res(out[0])
    assert _dropped("pod_not_found") == before + 3  # records, not Resources
    # Given up: the next batch of that container passes at once (counted), no second hold.
    again = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}])))
    assert len(again.resource_logs) == 1 and e.held_count == 0
    assert _dropped("pod_not_found") == before + 4
    # ... until the give-up expires
    clock.t += GIVE_UP_SECONDS + 1
    e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}])))
    assert e.held_count == 1


def test_released_into_the_next_batch_of_its_signal_when_expired(src: InMemorySource,
                                                                 clock: Clock) -> None:
    e = _enricher(src, clock, hold_seconds=1.0)
    e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}])))
    e.process(o.spans(({semconv.CONTAINER_ID: CID2}, [{}])))
    assert e.held_count == 2
    clock.t += 1.5
    logs_out = e.process(o.logs(({semconv.HOST_PROCESS: True}, [{}])))
    assert len(logs_out.resource_logs) == 2
    assert _res(logs_out, 0)[semconv.CONTAINER_ID] == CID
    assert e.held_count == 1  # the span Resource waits for a trace batch or drain
    out = e.drain(final=False)
    assert len(out) == 1 and len(out[0].resource_spans) == 1


def test_container_unknown_but_pod_known_is_held_then_pod_level(src: InMemorySource,
                                                                clock: Clock) -> None:
    w = _world(src)
    e = _enricher(src, clock, hold_seconds=1.0)
    before = _dropped("container_not_found")
    new_cid = "d" * 64
    e.process(o.logs(({semconv.CONTAINER_ID: new_cid, semconv.K8S_POD_UID: w["uid"]}, [{}])))
    assert e.held_count == 1
    clock.t += 2
    (out,) = e.drain(final=False)
    a = _res(out)
    assert a[semconv.K8S_POD_NAME] == "web-5d4f-x"
    assert semconv.K8S_CONTAINER_NAME not in a
    assert _dropped("container_not_found") == before + 1


def test_hold_is_bounded(src: InMemorySource, clock: Clock) -> None:
    e = _enricher(src, clock, hold_seconds=30.0, max_held_batches=3)
    before = _dropped("hold_full")
    passed = []
    for i in range(5):
        out = e.process(o.logs(({semconv.CONTAINER_ID: f"{i:064x}"}, [{}])))
        passed += [_res(out, j)[semconv.CONTAINER_ID] for j in range(len(out.resource_logs))]
        assert e.held_count <= 4  # at most one over the limit until the next release point
    # The oldest left early, in arrival order, unenriched and counted.
    assert passed == [f"{0:064x}"]
    out = e.drain(final=False)
    assert [_res(b, j)[semconv.CONTAINER_ID] for b in out for j in range(len(b.resource_logs))] \
        == [f"{1:064x}"]
    assert e.held_count == 3
    assert _dropped("hold_full") == before + 2
    final = e.drain(final=True)
    assert sum(len(b.resource_logs) for b in final) == 3
    assert e.held_count == 0


def test_hold_disabled_passes_at_once(src: InMemorySource, clock: Clock) -> None:
    e = _enricher(src, clock, hold_seconds=0)
    out = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}])))
    assert len(out.resource_logs) == 1 and e.held_count == 0


def test_deleted_pod_resolves_for_the_grace_period(src: InMemorySource, clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock, deleted_grace_seconds=120, hold_seconds=0)
    src.remove(Kind.POD, NS, "web-5d4f-x")
    clock.t += 100
    assert _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))[
        semconv.K8S_POD_NAME] == "web-5d4f-x"
    clock.t += 30
    assert semconv.K8S_POD_NAME not in _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))
    assert e.cache.sizes()["pods"] == 0


def test_relist_without_a_pod_counts_as_its_delete(src: InMemorySource, clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock, deleted_grace_seconds=10, hold_seconds=0)
    src._objects[Kind.POD].clear()  # gone while the watch was down
    src.relist()
    assert e.cache.sizes()["pods_deleted"] == 1
    assert _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))[
        semconv.K8S_POD_NAME] == "web-5d4f-x"
    clock.t += 11
    assert semconv.K8S_POD_NAME not in _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))


def test_restarted_container_previous_id_still_resolves(src: InMemorySource, clock: Clock) -> None:
    p = o.running(o.pod(NS, "p", uid=str(uuid.uuid4())), "10.1.0.4", {"main": CID2})
    p["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"containerID": f"containerd://{CID}", "exitCode": 1}}
    src.put(Kind.POD, p)
    e = _enricher(src, clock)
    for cid in (CID, CID2):
        a = _res(e.process(o.logs(({semconv.CONTAINER_ID: cid}, [{}]))))
        assert a[semconv.K8S_CONTAINER_NAME] == "main"


def test_peers_pod_service_clusterip_and_endpoint(src: InMemorySource, clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock)
    hits = _metric("peer", "hit")
    batch = e.process(o.logs(({semconv.CONTAINER_ID: CID}, [
        {semconv.NETWORK_PEER_ADDRESS: "10.96.0.10", semconv.NETWORK_PEER_PORT: 80},
        {semconv.NETWORK_PEER_ADDRESS: "10.1.0.5"},
        {semconv.NETWORK_PEER_ADDRESS: "93.184.216.34"},
        {semconv.FILE_PATH: "/etc/passwd"},
    ])))
    recs = [attrs_dict(r.attributes) for r in batch.resource_logs[0].scope_logs[0].log_records]
    assert recs[0][semconv.PEER_K8S_SERVICE_NAME] == "web-svc"
    assert recs[0][semconv.PEER_K8S_NAMESPACE_NAME] == NS
    assert semconv.PEER_K8S_POD_NAME not in recs[0]
    assert recs[1][semconv.PEER_K8S_POD_NAME] == "web-5d4f-x"
    assert recs[1][semconv.PEER_K8S_WORKLOAD_KIND] == "Deployment"
    assert recs[1][semconv.PEER_K8S_WORKLOAD_NAME] == "web"
    assert recs[1][semconv.PEER_K8S_SERVICE_NAME] == "web-svc"  # via the EndpointSlice
    assert not any(k.startswith("otelguard.peer.") for k in recs[2])
    assert not any(k.startswith("otelguard.peer.") for k in recs[3])
    assert _metric("peer", "hit") == hits + 2


def test_peers_on_spans_and_removed_service(src: InMemorySource, clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock)
    src.remove(Kind.SERVICE, NS, "web-svc")
    src.remove(Kind.ENDPOINTSLICE, NS, "web-svc-abc")
    batch = e.process(o.spans(({semconv.HOST_PROCESS: True}, [
        {semconv.NETWORK_PEER_ADDRESS: "10.96.0.10"}, {semconv.NETWORK_PEER_ADDRESS: "10.1.0.5"}])))
    s = [attrs_dict(sp.attributes) for sp in batch.resource_spans[0].scope_spans[0].spans]
    assert semconv.PEER_K8S_SERVICE_NAME not in s[0]
    assert s[1][semconv.PEER_K8S_POD_NAME] == "web-5d4f-x"
    assert semconv.PEER_K8S_SERVICE_NAME not in s[1]


def test_host_network_pods_are_not_indexed_by_ip(src: InMemorySource, clock: Clock) -> None:
    src.put(Kind.POD, o.running(o.pod("kube-system", "node-agent", uid=str(uuid.uuid4()),
                                      host_network=True, host_pid=True), "192.168.1.10",
                                {"main": CID}))
    e = _enricher(src, clock)
    a = _res(e.process(o.logs(({semconv.CONTAINER_ID: CID},
                               [{semconv.NETWORK_PEER_ADDRESS: "192.168.1.10"}]))))
    assert a[semconv.K8S_POD_HOST_NETWORK] is True and a[semconv.K8S_POD_HOST_PID] is True
    assert e.cache.peer("192.168.1.10") is None


def test_node_mode_sees_only_its_node(src: InMemorySource, clock: Clock) -> None:
    src.put(Kind.POD, o.running(o.pod(NS, "here", uid=str(uuid.uuid4()), node="n1"), "10.2.0.1",
                                {"main": CID}))
    src.put(Kind.POD, o.running(o.pod(NS, "there", uid=str(uuid.uuid4()), node="n2"), "10.2.0.2",
                                {"main": CID2}))
    e = _enricher(src, clock, mode="node", node_name="n1", hold_seconds=0)
    assert _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))[semconv.K8S_POD_NAME] == "here"
    assert semconv.K8S_POD_NAME not in _res(e.process(o.logs(({semconv.CONTAINER_ID: CID2}, [{}]))))


@pytest.mark.parametrize("ref,name,tags", [
    ("nginx", "nginx", ("latest",)),
    ("nginx:1.27", "nginx", ("1.27",)),
    ("registry.local:5000/team/app", "registry.local:5000/team/app", ("latest",)),
    ("registry.local:5000/team/app:v2", "registry.local:5000/team/app", ("v2",)),
    ("ghcr.io/x/y@sha256:" + "f" * 64, "ghcr.io/x/y", ()),
    ("ghcr.io/x/y:1.0@sha256:" + "f" * 64, "ghcr.io/x/y", ("1.0",)),
])
def test_parse_image(ref: str, name: str, tags: tuple[str, ...]) -> None:
    assert parse_image(ref) == (name, tags)


def test_strip_container_id() -> None:
    assert strip_container_id("containerd://" + CID) == CID
    assert strip_container_id("cri-o://" + CID) == CID
    assert strip_container_id("docker://" + CID) == CID
    assert strip_container_id(CID) == CID


def test_config_from_yaml_collects_every_error() -> None:
    cfg = k8s_config.load({"mode": "gateway", "hold_seconds": 0.5, "pod_labels": ["app", "x/*"]})
    assert cfg.hold_seconds == 0.5 and cfg.pod_labels == ("app", "x/*")
    with pytest.raises(ConfigError) as err:
        k8s_config.load({"hold_secs": 1, "peers": "maybe"}, path="processors[0].config")
    text = str(err.value)
    assert "processors[0].config.hold_secs" in text
    assert "processors[0].config.peers" in text
    with pytest.raises(ConfigError, match="node_name"):
        k8s_config.load({"mode": "node"})
    with pytest.raises(ConfigError, match="prefix"):
        k8s_config.load({"pod_labels": ["a*b"]})


def test_node_name_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELGUARD_K8S_NODE_NAME", "node-7")
    assert Config(mode="node").effective_node_name == "node-7"
    assert Config().effective_node_name is None


def test_peer_scan_skips_agent_events_that_cannot_have_peers(src: InMemorySource,
                                                             clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock)
    peer = {semconv.NETWORK_PEER_ADDRESS: "10.1.0.5"}

    def peers_of(batch: Any) -> list[bool]:
        return [semconv.PEER_K8S_POD_NAME in attrs_dict(r.attributes)
                for rl in batch.resource_logs for r in rl.scope_logs[0].log_records]

    assert peers_of(e.process(o.logs(({}, [peer]), event_name=semconv.EV_DNS_QUERY))) == [True]
    assert peers_of(e.process(o.logs(({}, [peer]), event_name="sdk.http.request"))) == [True]
    assert peers_of(e.process(o.logs(({}, [peer]), event_name=""))) == [True]
    assert peers_of(e.process(o.logs(({}, [peer]), event_name=semconv.EV_FILE_OPEN))) == [False]
    spans = o.spans(({}, [peer, peer]))
    spans.resource_spans[0].scope_spans[0].spans[1].kind = 1  # SPAN_KIND_INTERNAL
    out = e.process(spans)
    assert [semconv.PEER_K8S_POD_NAME in attrs_dict(s.attributes)
            for s in out.resource_spans[0].scope_spans[0].spans] == [True, False]


def test_empty_values_are_filled_and_preset_peer_keys_kept(src: InMemorySource,
                                                           clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock)
    for _ in range(2):  # second round: from the writer's memo
        batch = e.process(o.logs(
            ({semconv.CONTAINER_ID: CID, semconv.K8S_POD_NAME: "", semconv.SERVICE_NAME: "x"}, [
                {semconv.NETWORK_PEER_ADDRESS: "10.1.0.5", semconv.PEER_K8S_SERVICE_NAME: "mine"},
                {semconv.NETWORK_PEER_ADDRESS: "10.1.0.5"}])))
        rl = batch.resource_logs[0]
        keys = [kv.key for kv in rl.resource.attributes]
        assert len(keys) == len(set(keys))  # filled in place, never duplicated
        a = attrs_dict(rl.resource.attributes)
        assert a[semconv.K8S_POD_NAME] == "web-5d4f-x" and a[semconv.SERVICE_NAME] == "x"
        recs = rl.scope_logs[0].log_records
        first = attrs_dict(recs[0].attributes)
        assert first[semconv.PEER_K8S_SERVICE_NAME] == "mine"
        assert first[semconv.PEER_K8S_POD_NAME] == "web-5d4f-x"
        assert len(recs[0].attributes) == len({kv.key for kv in recs[0].attributes})
        assert attrs_dict(recs[1].attributes)[semconv.PEER_K8S_SERVICE_NAME] == "web-svc"


def test_pipeline_flush_releases_held_resources(src: InMemorySource, clock: Clock) -> None:
    """The pipeline's HoldsRecords hook (flush on a timer, drain at shutdown) reaches the hold."""
    from otelguard.processors.pipeline import HoldsRecords, Pipeline

    e = K8sEnricher(Config(wait_for_sync_seconds=0, hold_seconds=1.0), src, clock)
    assert isinstance(e, HoldsRecords)
    pipeline = Pipeline([("k8s", e)])
    pipeline.start()
    result = pipeline.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}, {}])))
    assert result.records_out == 0 and e.held_count == 1
    assert pipeline.flush() == []
    _world(src)  # the pod arrives
    (released,) = pipeline.flush()
    assert _res(released)[semconv.K8S_POD_NAME] == "web-5d4f-x"
    e.process(o.logs(({semconv.CONTAINER_ID: "e" * 64}, [{}])))
    (final,) = pipeline.shutdown()  # shutdown drains everything, due or not
    assert _res(final)[semconv.CONTAINER_ID] == "e" * 64


def test_rbac_role_grants_exactly_what_the_enricher_watches() -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[3] / "deploy" / "rbac" / "k8s-enricher.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"]}
    assert granted == {(k.group, k.plural) for k in Kind}
    assert {v for rule in role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_a_pod_seen_again_after_a_relist_dropped_it_is_live(src: InMemorySource,
                                                            clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock, deleted_grace_seconds=5, hold_seconds=0)
    saved = dict(src._objects[Kind.POD])
    src._objects[Kind.POD].clear()
    src.relist()
    assert e.cache.sizes()["pods_deleted"] == 1
    src._objects[Kind.POD].update(saved)
    src.relist()
    assert e.cache.sizes()["pods_deleted"] == 0
    clock.t += 10
    assert _res(e.process(o.logs(({semconv.CONTAINER_ID: CID}, [{}]))))[
        semconv.K8S_POD_NAME] == "web-5d4f-x"


def test_malformed_input_passes_through_untouched(src: InMemorySource, clock: Clock) -> None:
    _world(src)
    e = _enricher(src, clock, hold_seconds=0)
    batch = o.logs(({semconv.CONTAINER_ID: 12345, semconv.K8S_POD_UID: b"\x00\x01"}, [
        {semconv.NETWORK_PEER_ADDRESS: 10}, {semconv.NETWORK_PEER_ADDRESS: ["10.1.0.5"]}, {}]))
    before = batch.SerializeToString()
    out = e.process(batch)
    assert out.SerializeToString() == before  # nothing resolvable, nothing written, nothing lost


def test_unreachable_configuration_is_a_clear_error(tmp_path: Any) -> None:
    from otelguard.kube import KubeAccessError
    from otelguard.processors.errors import ProcessorsError

    missing = tmp_path / "nope.kubeconfig"
    e = K8sEnricher(Config(kubeconfig=str(missing), wait_for_sync_seconds=0))
    with pytest.raises(ProcessorsError, match="k8s_attributes: .*nope.kubeconfig") as info:
        e.start()
    assert isinstance(info.value.__cause__, KubeAccessError)
