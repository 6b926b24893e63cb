"""Kubernetes objects as API JSON dicts, shaped like what a Deployment controller and kubelet
would write, for the in-memory source and for creating them on the real API server."""

from __future__ import annotations

import uuid
from typing import Any, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard import semconv
from otelguard.otlp.messages import PyValue, set_attrs

Obj = dict[str, Any]


def owner(kind: str, name: str, uid: Optional[str] = None, api: str = "apps/v1") -> Obj:
    return {"apiVersion": api, "kind": kind, "name": name, "uid": uid or str(uuid.uuid4()),
            "controller": True, "blockOwnerDeletion": True}


def namespace(name: str, labels: Optional[dict[str, str]] = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels or {}}}


def deployment(ns: str, name: str, app: str, image: str) -> Obj:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                         "spec": {"containers": [{"name": "main", "image": image}]}},
        },
    }


def replicaset(ns: str, name: str, app: str, image: str, owner_ref: Optional[Obj]) -> Obj:
    rs: Obj = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}},
                         "spec": {"containers": [{"name": "main", "image": image}]}},
        },
    }
    if owner_ref:
        rs["metadata"]["ownerReferences"] = [owner_ref]
    return rs


def job(ns: str, name: str, owner_ref: Optional[Obj] = None) -> Obj:
    j: Obj = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "main", "image": "busybox"}]}}},
    }
    if owner_ref:
        j["metadata"]["ownerReferences"] = [owner_ref]
    return j


def pod(
    ns: str,
    name: str,
    *,
    uid: Optional[str] = None,
    containers: Optional[list[Obj]] = None,
    labels: Optional[dict[str, str]] = None,
    annotations: Optional[dict[str, str]] = None,
    owner_ref: Optional[Obj] = None,
    node: str = "node-a",
    host_pid: bool = False,
    host_network: bool = False,
    service_account: str = "default",
) -> Obj:
    meta: Obj = {"name": name, "namespace": ns, "labels": labels or {},
                 "annotations": annotations or {}}
    if uid:
        meta["uid"] = uid
    if owner_ref:
        meta["ownerReferences"] = [owner_ref]
    spec: Obj = {
        "nodeName": node,
        "serviceAccountName": service_account,
        "containers": containers or [{"name": "main", "image": "nginx:1.27"}],
    }
    if host_pid:
        spec["hostPID"] = True
    if host_network:
        spec["hostNetwork"] = True
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def running(p: Obj, ip: str, ids: dict[str, str], runtime: str = "containerd") -> Obj:
    """``p`` with the status a kubelet would report: Running, podIP, one containerID per name."""
    p = dict(p)
    p["status"] = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "containerStatuses": [
            {"name": name, "containerID": f"{runtime}://{cid}", "ready": True,
             "restartCount": 0, "image": "x", "imageID": "",
             "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
            for name, cid in ids.items()
        ],
    }
    return p


def service(ns: str, name: str, cluster_ip: Optional[str], app: str) -> Obj:
    spec: Obj = {"selector": {"app": app}, "ports": [{"port": 80, "protocol": "TCP"}]}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpointslice(ns: str, name: str, service_name: str, addresses: list[str]) -> Obj:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"port": 80, "protocol": "TCP", "name": ""}],
    }


# --- OTLP ------------------------------------------------------------------------------------


def logs(*resources: tuple[dict[str, PyValue], list[dict[str, PyValue]]],
         event_name: str = "") -> ExportLogsServiceRequest:
    """A logs batch: one ResourceLogs per (resource attrs, [record attrs, ...]). Records are the
    agent's connect events if they have a peer address, else exec events (unless
    ``event_name`` says otherwise)."""
    req = ExportLogsServiceRequest()
    for res_attrs, records in resources:
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, res_attrs)
        sl = rl.scope_logs.add()
        sl.scope.name = semconv.SCOPE_AGENT
        for rec_attrs in records:
            rec = sl.log_records.add()
            rec.event_name = event_name or (
                semconv.EV_NETWORK_CONNECT if semconv.NETWORK_PEER_ADDRESS in rec_attrs
                else semconv.EV_PROCESS_EXEC)
            set_attrs(rec.attributes, rec_attrs)
    return req


def spans(*resources: tuple[dict[str, PyValue], list[dict[str, PyValue]]]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for res_attrs, records in resources:
        rs = req.resource_spans.add()
        set_attrs(rs.resource.attributes, res_attrs)
        ss = rs.scope_spans.add()
        for rec_attrs in records:
            span = ss.spans.add()
            span.name = "connect"
            set_attrs(span.attributes, rec_attrs)
    return req
