"""Cost of the k8s_attributes stage per record, with 1,000 pods cached, and cache memory.

Stream: batches of 50 container Resources x 40 records (~15 attributes each, like the agent's
exec/open/connect records); 20% of records carry ``network.peer.address`` (half cluster
addresses: pod IPs and Service ClusterIPs, half external). Every Resource's ``container.id`` is
cached, so this is the steady state; the hold path only runs for containers the cache has not
seen yet.

Measured in the same run, CPU time of one core (``time.process_time``):

- ``parse``   : ``ParseFromString`` of the batch -- the baseline every processor pays anyway;
- ``scan``    : parse + one pass over every record's attribute keys (the floor of any per-record
  stage);
- ``enrich``  : parse + ``K8sEnricher.process`` (Resource lookup + attribute writes + peers);
- ``no-peers``: parse + ``process`` with ``peers: false``.

Memory: tracemalloc of the cache after loading 1,000 and 10,000 pods (each with a ReplicaSet,
two containers, labels), per pod.

Run: ``.venv/bin/python -m bench.k8s_enrich [--batches N]``.
"""

from __future__ import annotations

import argparse
import gc
import random
import time
import tracemalloc
import uuid
from typing import Any, Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.processors.k8s import Config, K8sEnricher
from otelguard.processors.k8s.cache import K8sCache
from otelguard.processors.k8s.source import InMemorySource, Kind
from otelguard.otlp.messages import set_attrs

RESOURCES_PER_BATCH = 50
RECORDS_PER_RESOURCE = 40


def _objects(n_pods: int, rng: random.Random) -> list[tuple[Kind, dict[str, Any]]]:
    """n pods in 20 namespaces, each owned by a ReplicaSet of a Deployment, 2 containers,
    one Service + EndpointSlice per 10 pods."""
    out: list[tuple[Kind, dict[str, Any]]] = []
    for i in range(n_pods):
        ns = f"ns-{i % 20}"
        app = f"app-{i // 10}"
        rs = f"{app}-{i:05x}"
        out.append((Kind.REPLICASET, {"metadata": {"name": rs, "namespace": ns, "ownerReferences": [
            {"kind": "Deployment", "name": app, "controller": True}]}}))
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        out.append((Kind.POD, {
            "metadata": {"name": f"{rs}-x", "namespace": ns, "uid": str(uuid.UUID(int=i + 1)),
                         "labels": {"app": app, "app.kubernetes.io/name": app, "team": "t",
                                    "pod-template-hash": "abc", "version": "1"},
                         "annotations": {"kubectl.kubernetes.io/restartedAt": "x" * 20},
                         "ownerReferences": [{"kind": "ReplicaSet", "name": rs,
                                              "controller": True}]},
            "spec": {"nodeName": "node-1", "serviceAccountName": "default", "containers": [
                {"name": "main", "image": f"registry.local/{app}:1.{i % 7}"},
                {"name": "sidecar", "image": "envoyproxy/envoy:v1.30",
                 "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "containerStatuses": [
                           {"name": "main", "containerID": f"containerd://{2 * i:064x}"},
                           {"name": "sidecar", "containerID": f"containerd://{2 * i + 1:064x}"}]},
        }))
        if i % 10 == 0:
            svc = f"svc-{i // 10}"
            out.append((Kind.SERVICE, {"metadata": {"name": svc, "namespace": ns},
                                       "spec": {"clusterIP": f"172.20.{(i >> 8) & 255}.{i & 255}"}}))
            out.append((Kind.ENDPOINTSLICE, {
                "metadata": {"name": f"{svc}-1", "namespace": ns,
                             "labels": {"kubernetes.io/service-name": svc}},
                "endpoints": [{"addresses": [ip]}]}))
    return out


def _batch(n_pods: int, rng: random.Random, per_resource: int) -> bytes:
    req = ExportLogsServiceRequest()
    for _ in range(RESOURCES_PER_BATCH):
        i = rng.randrange(n_pods)
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {
            S.CONTAINER_ID: f"{2 * i:064x}", S.K8S_POD_UID: str(uuid.UUID(int=i + 1)),
            S.HOST_NAME: "node-1", S.OS_TYPE: "linux"})
        sl = rl.scope_logs.add()
        sl.scope.name = S.SCOPE_AGENT
        for _ in range(per_resource):
            rec = sl.log_records.add()
            attrs: dict[str, Any] = {
                S.PROCESS_PID: rng.randint(100, 60000), S.PROCESS_PARENT_PID: 1,
                S.PROCESS_EXECUTABLE_NAME: "nginx", S.PROCESS_EXECUTABLE_PATH: "/usr/sbin/nginx",
                S.PROCESS_COMMAND_LINE: "nginx -g daemon off;", S.PROCESS_USER_ID: 101,
                S.PROCESS_USER_NAME: "nginx", S.PROCESS_WORKING_DIRECTORY: "/",
                S.PROCESS_ANCESTORS: ["containerd-shim"], S.SYSCALL_NAME: "openat",
                S.SYSCALL_RET: 3, S.LOG_RECORD_UID: uuid.uuid4().hex,
                S.FILE_PATH: "/etc/nginx/nginx.conf", S.FILE_OPEN_FLAGS: "O_RDONLY",
            }
            r = rng.random()
            rec.event_name = S.EV_NETWORK_CONNECT if r < 0.2 else (
                S.EV_FILE_OPEN if r < 0.9 else S.EV_PROCESS_EXEC)
            if r < 0.1:
                j = rng.randrange(n_pods)
                attrs[S.NETWORK_PEER_ADDRESS] = (
                    f"10.{(j >> 16) & 255}.{(j >> 8) & 255}.{j & 255}" if r < 0.05
                    else f"172.20.{(j // 10 * 10 >> 8) & 255}.{j // 10 * 10 & 255}")
                attrs[S.NETWORK_PEER_PORT] = 80
            elif r < 0.2:
                attrs[S.NETWORK_PEER_ADDRESS] = f"93.184.{rng.randrange(256)}.{rng.randrange(256)}"
                attrs[S.NETWORK_PEER_PORT] = 443
            set_attrs(rec.attributes, attrs)
    return req.SerializeToString()


def _enricher(n_pods: int, rng: random.Random, peers: bool) -> K8sEnricher:
    src = InMemorySource()
    for kind, obj in _objects(n_pods, rng):
        src.put(kind, obj)
    e = K8sEnricher(Config(wait_for_sync_seconds=0, peers=peers), src)
    e.start()
    return e


def _cpu(payloads: list[bytes], work: Callable[[ExportLogsServiceRequest], Any]) -> float:
    gc.collect()
    t0 = time.process_time()
    for data in payloads:
        req = ExportLogsServiceRequest()
        req.ParseFromString(data)
        work(req)
    return time.process_time() - t0


def _scan(req: ExportLogsServiceRequest) -> None:
    for rl in req.resource_logs:
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                for kv in rec.attributes:
                    if kv.key == S.NETWORK_PEER_ADDRESS:
                        break


def _cache_bytes(n_pods: int) -> tuple[int, dict[str, int]]:
    objects = _objects(n_pods, random.Random(1))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cache = K8sCache(Config())
    for kind in Kind:
        cache.replace(kind, [obj for k, obj in objects if k is kind])
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used, cache.sizes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--per-resource", type=int, default=RECORDS_PER_RESOURCE,
                    help="records per Resource (small = the per-Resource cost shows)")
    args = ap.parse_args()
    rng = random.Random(7)
    payloads = [_batch(args.pods, rng, args.per_resource) for _ in range(args.batches)]
    n = args.batches * RESOURCES_PER_BATCH * args.per_resource
    full = _enricher(args.pods, rng, peers=True)
    bare = _enricher(args.pods, rng, peers=False)
    results = {}
    for _round in range(2):  # the second round is reported (warm caches, memo filled)
        results = {
            "parse": _cpu(payloads, lambda r: None),
            "scan": _cpu(payloads, _scan),
            "enrich": _cpu(payloads, full.process),
            "no-peers": _cpu(payloads, bare.process),
        }
    print(f"k8s_attributes: {args.pods} pods cached, {n} records in {args.batches} batches of "
          f"{RESOURCES_PER_BATCH}x{args.per_resource}")
    base = results["parse"]
    for name, secs in results.items():
        stage = secs - base
        extra = (f"  stage alone {stage / n * 1e6:6.2f} µs/record, "
                 f"{n / stage:>10,.0f} records/s/core" if name != "parse" and stage > 0 else "")
        print(f"  {name:9s} {n / secs:>10,.0f} records/s/core  x{secs / base:5.2f} of parse{extra}")
    for pods in (1000, 10000):
        used, sizes = _cache_bytes(pods)
        print(f"  cache memory, {pods:>6} pods (+{sizes['replicasets']} ReplicaSets, "
              f"{sizes['services']} Services, {sizes['endpointslices']} EndpointSlices): "
              f"{used / 1e6:6.1f} MB, {used / pods / 1e3:4.1f} kB/pod")
    full.shutdown()
    bare.shutdown()


if __name__ == "__main__":
    main()
