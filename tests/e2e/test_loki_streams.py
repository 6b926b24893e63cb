"""Loki's stream count stays bounded by workloads, not by pods or runs (docs/architecture.md#streams).

Resources are built by the real code that sets the indexed attributes: the exporter's mapping
for the host Resource, ``K8sEnricher`` (in-memory source) for pods of every workload kind. They
go through the real Collector (backends.yaml) into the real Loki (loki.yaml's label policy), and
the test counts Loki's series: N runs of a CronJob, N bare pods and N pods of one Deployment
must each stay one stream per otelguard.stream.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, Optional

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otelguard import semconv as S
from otelguard.exporter.mapping import HOST_RESOURCE, resource_attrs
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import attrs_dict, set_attr, set_attrs
from otelguard.processors.k8s import Config, K8sEnricher
from otelguard.processors.k8s.source import InMemorySource, Kind
from tests.support.polling import wait_until
from tests.support.stack import Collector, Loki

pytestmark = pytest.mark.e2e

RUNS = 6  # CronJob runs, bare pods, Deployment pods: streams must not grow with this


def _owner(kind: str, name: str, api: str) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "name": name, "uid": str(uuid.uuid4()),
            "controller": True}


def _pod(ns: str, name: str, cid: str, owner: Optional[dict[str, Any]] = None,
         labels: Optional[dict[str, str]] = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": str(uuid.uuid4()),
                            "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "node-a", "containers": [{"name": "main", "image": "busybox"}]},
            "status": {"podIP": "10.1.0.1", "containerStatuses": [
                {"name": "main", "containerID": f"containerd://{cid}"}]}}


def _workloads(src: InMemorySource, ns: str) -> list[str]:
    """Pods of every kind in ``ns``; their container ids. The CronJob's last run's Job is not in
    the cache yet (a pod is often seen before its Job)."""
    cids: list[str] = []

    def pod(name: str, owner: Optional[dict[str, Any]] = None,
            labels: Optional[dict[str, str]] = None) -> None:
        cid = secrets.token_hex(32)
        src.put(Kind.POD, _pod(ns, name, cid, owner, labels))
        cids.append(cid)

    minute = int(time.time() // 60)
    for run in range(RUNS):
        job = f"backup-{minute + run}"
        if run < RUNS - 1:
            src.put(Kind.JOB, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
                "name": job, "namespace": ns,
                "ownerReferences": [_owner("CronJob", "backup", "batch/v1")]}})
        pod(f"{job}-{secrets.token_hex(3)}", _owner("Job", job, "batch/v1"))
        pod(f"debug-{secrets.token_hex(3)}")                                   # bare pod
        pod(f"web-5d4f-{secrets.token_hex(3)}", _owner("ReplicaSet", "web-5d4f", "apps/v1"))
    src.put(Kind.REPLICASET, {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
        "name": "web-5d4f", "namespace": ns,
        "ownerReferences": [_owner("Deployment", "web", "apps/v1")]}})
    pod("db-0", _owner("StatefulSet", "db", "apps/v1"))
    pod(f"agent-{secrets.token_hex(3)}", _owner("DaemonSet", "agent", "apps/v1"))
    pod("static-node-a", labels={"k8s-app": "kube-proxy"})
    return cids


def _request(ns: str) -> ExportLogsServiceRequest:
    """One event record per pod Resource (enriched by the real K8sEnricher), one per stream kind
    for the host Resource (the exporter's mapping), all in namespace ``ns``'s cluster."""
    src = InMemorySource()
    cids = _workloads(src, ns)
    req = ExportLogsServiceRequest()
    now = time.time_ns()
    for cid in cids:
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {S.CONTAINER_ID: cid, S.STREAM: S.STREAM_EVENT})
        rl.scope_logs.add().log_records.add(time_unix_nano=now).body.string_value = cid
    enricher = K8sEnricher(Config(wait_for_sync_seconds=0), src)
    enricher.start()
    try:
        out = enricher.process(req)
    finally:
        enricher.shutdown()
    node = NodeIdentity("node-a", "node-a", "", extra=((S.K8S_CLUSTER_NAME, ns),))
    for stream in (S.STREAM_EVENT, S.STREAM_DETECTION):
        for i in range(RUNS):
            rl = out.resource_logs.add()
            for key, value in resource_attrs(HOST_RESOURCE, node):
                set_attr(rl.resource.attributes, key, value)  # type: ignore[arg-type]  # list invariance
            set_attr(rl.resource.attributes, S.STREAM, stream, overwrite=True)
            rec = rl.scope_logs.add().log_records.add(time_unix_nano=now + i)
            rec.body.string_value = f"host {stream} {i}"
    for rl in out.resource_logs:  # pods: the namespace is the cluster, to find them apart
        if S.K8S_CLUSTER_NAME not in attrs_dict(rl.resource.attributes):
            set_attrs(rl.resource.attributes, {S.K8S_CLUSTER_NAME: ns})
    return out


def test_streams_are_one_per_workload_whatever_the_runs(loki: Loki,
                                                        backends_collector: Collector) -> None:
    ns = f"streams-{secrets.token_hex(4)}"
    req = _request(ns)
    with grpc.insecure_channel(backends_collector.otlp_grpc) as channel:
        LogsServiceStub(channel).Export(req, timeout=10)  # type: ignore[no-untyped-call]
    selector = f'{{k8s_cluster_name="{ns}"}}'
    sent = sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    assert wait_until(lambda: sum(len(s["values"]) for s in loki.query_range(
        selector, limit=5000)["result"]) == sent, 60), "not every record reached Loki"
    series = loki.series(selector)
    streams = sorted((s.get("service_name", ""), s.get("otelguard_stream", ""),
                      s.get("k8s_cronjob_name", ""), s.get("k8s_deployment_name", ""))
                     for s in series)
    # one stream per workload (the host: one per otelguard.stream), none per pod, job or run
    assert streams == sorted([
        ("agent", "event", "", ""), ("backup", "event", "", ""), ("backup", "event", "backup", ""),
        ("bare-pod", "event", "", ""), ("db", "event", "", ""), ("host", "detection", "", ""),
        ("host", "event", "", ""), ("kube-proxy", "event", "", ""), ("web", "event", "", "web"),
    ]), streams
    for s in series:
        assert "k8s_job_name" not in s and "k8s_pod_name" not in s, s
        assert set(s) <= {"service_name", "k8s_cluster_name", "k8s_namespace_name",
                          "k8s_deployment_name", "k8s_statefulset_name", "k8s_daemonset_name",
                          "k8s_cronjob_name", "otelguard_stream"}, s
    # the job and pod stay queryable as structured metadata
    backup = loki.query_range(f'{selector} | k8s_job_name=~"backup-.+"', limit=5000)["result"]
    assert sum(len(s["values"]) for s in backup) == RUNS
