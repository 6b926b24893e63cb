"""Kubernetes enrichment side by side: the otelguard processor service vs the OTel Collector.

Issue 3: records per second per core through receive -> k8s enrich (1,000 pods cached) -> forward,
with batches as a Collector sends them, against the real Collector doing ``k8s_attributes`` +
``transform`` on the same input, in the same run. Aim: at least the Collector's per-core rate.

Parts, all real and on 127.0.0.1:

- etcd + kube-apiserver (``tests/support/kube.py``), populated by :mod:`bench.cluster_objects`
  with ``--pods`` running pods (Deployment -> ReplicaSet chains for 4 apps in 5, bare pods for the
  rest, two containers each, Services + EndpointSlices);
- **ours**: ``otelguard processor`` in its own process (the CLI, a pipeline file with only the
  ``k8s_attributes`` stage reading the admin kubeconfig, default service settings), forwarding
  over OTLP/gRPC to the sink;
- **Collector**: ``otelcol-otelguard`` with ``bench/configs/collector-k8s-transform.yaml``
  (``k8s_attributes`` with ``auth_type: kubeConfig``, association by container.id then
  k8s.pod.uid, the same Resource keys ours writes where the contrib processor has them, plus a
  ``transform`` checking every record's ``network.peer.address``), exporting over OTLP/gRPC
  (queue off, like ours: the caller is answered after the next hop took the batch);
- the **sink**: a grpc.aio OTLP receiver in a third process that parses every request and counts
  records, enriched Resources (``k8s.pod.name`` present) and records with a peer attribute.

Input: ``--distinct`` pre-serialized ExportLogsServiceRequests of 32 container Resources x 32
records (1,024, a Collector batch), otelguard's record shape (~22-28 attributes: process, file,
connect and exec events; 20 % carry ``network.peer.address``, half of them cluster addresses).
Every Resource has ``container.id`` and ``k8s.pod.uid`` of a created pod. Both servers get the
identical sequence of ``--batches`` requests from ``--inflight`` client threads.

Per-core rate = records / CPU seconds of the server process (utime + stime of all its threads,
/proc/<pid>/stat), read after the sink has received every record, so forwarding is included and
the client, the sink and the other processes on the shared cores are not. Rounds alternate
ours, Collector, ours, Collector ...; medians are reported with the ratio ours/Collector.

Memory: RSS of each server after sync and warm-up with ``--pods`` pods, then, after the cluster
grew to ``--mem-pods``, of fresh servers of both kinds; the difference per added pod is the cache
cost. If creating those pods takes more than 5 minutes the 10,000-pod figure comes from the
in-memory source instead (``bench.k8s_enrich``, tracemalloc of the cache), and says so.

Run: ``.venv/bin/python -m bench.service_vs_collector`` (``--quick``: 1 round, fewer batches, no
10,000-pod step; under 2 minutes). Needs ``bash scripts/stack/build.sh otelcol kubernetes``.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import grpc
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from bench import cluster_objects
from bench.common import machine_line, median, summary_line
from otelguard import semconv as S
from otelguard.otlp.messages import set_attrs

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR_CONFIG = ROOT / "bench" / "configs" / "collector-k8s-transform.yaml"
PASSTHROUGH_CONFIG = ROOT / "bench" / "configs" / "collector-passthrough.yaml"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
STATS_METHOD = "/otelguard.bench.Sink/Stats"
RESOURCES_PER_BATCH = 32
RECORDS_PER_RESOURCE = 32
BATCH_RECORDS = RESOURCES_PER_BATCH * RECORDS_PER_RESOURCE
# Keys both sides write on a record with a cluster peer share this prefix (ours: the resolved
# pod/Service; the Collector's transform: a marker).
PEER_PREFIX = os.path.commonprefix([S.PEER_K8S_POD_NAME, S.PEER_K8S_SERVICE_NAME])


# --- the record stream --------------------------------------------------------------------------

def make_batch(rng: random.Random, pop: cluster_objects.Population) -> bytes:
    """One 1,024-record request: 32 containers of the cluster, 32 records each."""
    req = ExportLogsServiceRequest()
    now = time.time_ns()
    for _ in range(RESOURCES_PER_BATCH):
        c = rng.choice(pop.containers)
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {
            S.CONTAINER_ID: c.container_id, S.K8S_POD_UID: c.pod_uid,
            S.HOST_NAME: cluster_objects.NODE, S.OS_TYPE: "linux",
            S.CONTAINER_RUNTIME_NAME: "containerd"})
        sl = rl.scope_logs.add()
        sl.scope.name = S.SCOPE_AGENT
        pid = rng.randint(100, 60000)
        for k in range(RECORDS_PER_RESOURCE):
            rec = sl.log_records.add()
            rec.time_unix_nano = rec.observed_time_unix_nano = now + k
            rec.severity_number = 9
            attrs: dict[str, Any] = {
                S.PROCESS_PID: pid, S.PROCESS_VPID: pid % 300, S.PROCESS_PARENT_PID: 1,
                S.PROCESS_EXECUTABLE_NAME: "python3",
                S.PROCESS_EXECUTABLE_PATH: "/usr/local/bin/python3",
                S.PROCESS_COMMAND_LINE: "python3 -m gunicorn app:wsgi --workers 4",
                S.PROCESS_USER_ID: 1000, S.PROCESS_USER_NAME: "app",
                S.PROCESS_WORKING_DIRECTORY: "/srv/app",
                S.PROCESS_CREATION_TIME: "2026-11-23T10:00:01.123456Z",
                S.PROCESS_ANCESTORS: ["gunicorn", "containerd-shim"],
                S.PROCESS_ANCESTOR_PIDS: [pid - 1, 1],
                S.PROCESS_PARENT_EXECUTABLE_NAME: "gunicorn", S.PROCESS_TTY: 0,
                S.PROCESS_LOGIN_UID: 4294967295, S.PROCESS_DURATION_NS: rng.randint(1, 10**9),
                S.LOG_RECORD_UID: uuid.UUID(int=rng.getrandbits(128)).hex,
            }
            r = rng.random()
            if r < 0.2:
                rec.event_name = S.EV_NETWORK_CONNECT
                if r < 0.05:
                    peer = rng.choice(pop.pod_ips)
                elif r < 0.1:
                    peer = rng.choice(pop.service_ips)
                else:
                    peer = f"93.184.{rng.randrange(256)}.{rng.randrange(256)}"
                attrs.update({S.SYSCALL_NAME: "connect", S.SYSCALL_RET: 0,
                              S.NETWORK_TRANSPORT: "tcp", S.NETWORK_TYPE: "ipv4",
                              S.NETWORK_PEER_ADDRESS: peer, S.NETWORK_PEER_PORT: 80,
                              S.NETWORK_LOCAL_ADDRESS: "10.244.0.1",
                              S.NETWORK_LOCAL_PORT: rng.randint(32768, 60999),
                              S.SOCKET_FAMILY: "AF_INET"})
            elif r < 0.85:
                rec.event_name = S.EV_FILE_OPEN
                attrs.update({S.SYSCALL_NAME: "openat", S.SYSCALL_RET: 7,
                              S.FILE_PATH: f"/srv/app/static/{rng.randrange(500)}.css",
                              S.FILE_OPEN_FLAGS: "O_RDONLY|O_CLOEXEC", S.FILE_FD: 7})
            else:
                rec.event_name = S.EV_PROCESS_EXEC
                attrs.update({S.SYSCALL_NAME: "execve", S.SYSCALL_RET: 0,
                              S.PROCESS_COMMAND_ARGS: ["sh", "-c", "date"],
                              S.PROCESS_ARGS_COUNT: 3})
            set_attrs(rec.attributes, attrs)
    data: bytes = req.SerializeToString()
    return data


# --- the sink (child process) --------------------------------------------------------------------

class SinkCounts:
    """What the sink saw since the last reset; read and reset through the Stats method."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.records = 0
        self.resources = 0
        self.enriched = 0
        self.peer_records = 0
        self.with_deployment = 0
        self.keys: set[str] = set()  # union over the enriched Resources

    def take(self, req: ExportLogsServiceRequest) -> None:
        self.requests += 1
        for rl in req.resource_logs:
            self.resources += 1
            keys = [kv.key for kv in rl.resource.attributes]
            if S.K8S_POD_NAME in keys:
                self.enriched += 1
                self.with_deployment += S.K8S_DEPLOYMENT_NAME in keys
                self.keys.update(keys)
            for sl in rl.scope_logs:
                self.records += len(sl.log_records)
                for rec in sl.log_records:
                    if rec.event_name == S.EV_NETWORK_CONNECT and any(
                            kv.key.startswith(PEER_PREFIX) for kv in rec.attributes):
                        self.peer_records += 1


async def _sink() -> None:
    counts = SinkCounts()

    async def export(request: bytes, context: Any) -> bytes:
        counts.take(ExportLogsServiceRequest.FromString(request))
        data: bytes = ExportLogsServiceResponse().SerializeToString()
        return data

    async def stats(request: bytes, context: Any) -> bytes:
        doc = dict(vars(counts), keys=sorted(counts.keys))
        if request == b"reset":
            counts.reset()
        return json.dumps(doc).encode()

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(LOGS_METHOD.split("/")[1], {
            "Export": grpc.unary_unary_rpc_method_handler(export)}),
        grpc.method_handlers_generic_handler(STATS_METHOD.split("/")[1], {
            "Stats": grpc.unary_unary_rpc_method_handler(stats)})))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


# --- the servers under test ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Server:
    """A server process under test and the port it receives OTLP/gRPC on."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    enriches: bool = True

    def wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout_s:.0f}s; "
                           f"log tail:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_ours(workdir: Path, kubeconfig: Path, sink_port: int, tag: str,
               restore_on_failure: bool = True, enrich: bool = True) -> Server:
    """``otelguard processor`` with the k8s_attributes stage only (none: ``enrich`` False);
    ``restore_on_failure`` off skips the per-stage snapshot of each batch (default on)."""
    port = free_port()
    name = ("ours" if restore_on_failure else "ours-nosnap") if enrich else "ours-nostage"
    stages = [{"type": "k8s_attributes", "config": {
        "kubeconfig": str(kubeconfig), "wait_for_sync_seconds": 120}}] if enrich else []
    cfg = workdir / f"{name}-{tag}.yaml"
    cfg.write_text(yaml.safe_dump({
        "service": {"listen": f"127.0.0.1:{port}", "metrics": None,
                    "restore_on_failure": restore_on_failure, "tls": {"insecure": True}},
        "forward": {"tls": {"insecure": True}},
        "exporters": [f"otlp:127.0.0.1:{sink_port}"],
        "processors": stages,
    }))
    log = workdir / f"{name}-{tag}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "otelguard.cli", "processor",
                                 "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    return Server(name, proc, port, log, enrich)


def start_collector(workdir: Path, kubeconfig: Path, sink_port: int, tag: str,
                    enrich: bool = True) -> Server:
    """The Collector with k8s_attributes + transform (``enrich``) or with no processor."""
    from tests.support.stack import collector_binary

    port = free_port()
    name = "collector" if enrich else "collector-noproc"
    env = dict(os.environ, KUBECONFIG=str(kubeconfig),
               OTELGUARD_BENCH_COLLECTOR_GRPC=f"127.0.0.1:{port}",
               OTELGUARD_BENCH_SINK=f"127.0.0.1:{sink_port}")
    log = workdir / f"{name}-{tag}.log"
    config = COLLECTOR_CONFIG if enrich else PASSTHROUGH_CONFIG
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(collector_binary()), "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    return Server(name, proc, port, log, enrich)


# --- the client ------------------------------------------------------------------------------------

class Client:
    """Sends pre-serialized requests over one channel per thread; asks the sink for counts."""

    def __init__(self, sink_port: int) -> None:
        self._local = threading.local()
        self._sink = grpc.insecure_channel(f"127.0.0.1:{sink_port}")
        self._stats = self._sink.unary_unary(STATS_METHOD, request_serializer=None,
                                             response_deserializer=None)
        self._channels: list[grpc.Channel] = []

    def _call(self, port: int) -> Any:
        calls = getattr(self._local, "calls", None)
        if calls is None:
            calls = self._local.calls = {}
        if port not in calls:
            ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
                ("grpc.max_send_message_length", 64 << 20)])
            self._channels.append(ch)
            calls[port] = ch.unary_unary(LOGS_METHOD, request_serializer=None,
                                         response_deserializer=None)
        return calls[port]

    def send(self, port: int, bodies: Sequence[bytes], inflight: int) -> None:
        """Every body once, ``inflight`` at a time; any failed call raises."""
        def worker(k: int) -> None:
            call = self._call(port)
            for i in range(k, len(bodies), inflight):
                resp = ExportLogsServiceResponse.FromString(call(bodies[i], timeout=60))
                if resp.partial_success.rejected_log_records:
                    raise RuntimeError(f"port {port} rejected records: {resp.partial_success}")

        with concurrent.futures.ThreadPoolExecutor(inflight) as pool:
            for fut in [pool.submit(worker, k) for k in range(inflight)]:
                fut.result()

    def sink_stats(self, reset: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self._stats(b"reset" if reset else b"", timeout=10))
        return doc

    def wait_sink(self, records: int, timeout_s: float = 60.0) -> dict[str, Any]:
        """Until the sink has ``records`` records (bounded), then its counts."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.sink_stats()
            if st["records"] >= records or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
        self._sink.close()


def warm_up(client: Client, server: Server, bodies: Sequence[bytes], timeout_s: float,
            ) -> list[str]:
    """Send until every Resource arrives enriched (the cache is complete; for a server that does
    not enrich: until all arrived, none enriched), then reset the sink. Returns the Resource
    attribute keys seen on the enriched Resources."""
    deadline = time.monotonic() + timeout_s
    while True:
        client.sink_stats(reset=True)
        client.send(server.port, bodies, 2)
        st = client.wait_sink(len(bodies) * BATCH_RECORDS, 30)
        if not server.enriches and st["records"] == len(bodies) * BATCH_RECORDS:
            if st["enriched"]:
                raise RuntimeError(f"{server.name} enriched {st['enriched']} Resources")
            client.sink_stats(reset=True)
            return []
        if st["resources"] and st["enriched"] == st["resources"]:
            client.sink_stats(reset=True)
            return list(st["keys"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: only {st['enriched']}/{st['resources']} Resources "
                               f"enriched after {timeout_s:.0f}s of warm-up; log {server.log}")
        time.sleep(1.0)


@dataclass
class Run:
    server: str
    records: int
    cpu_s: float
    wall_s: float
    enriched: float  # fraction of Resources with k8s.pod.name at the sink
    with_deployment: float  # fraction with k8s.deployment.name (4 pods in 5 have one)
    peer_records: int

    @property
    def per_core(self) -> float:
        return self.records / self.cpu_s if self.cpu_s > 0 else float("nan")


def measure(client: Client, server: Server, bodies: Sequence[bytes], inflight: int) -> Run:
    client.sink_stats(reset=True)
    records = len(bodies) * BATCH_RECORDS
    cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    client.send(server.port, bodies, inflight)
    st = client.wait_sink(records)
    wall, cpu = time.monotonic() - t0, cpu_seconds(server.proc.pid) - cpu0
    if st["records"] != records:
        raise RuntimeError(f"{server.name}: sink got {st['records']} of {records} records")
    return Run(server.name, records, cpu, wall, st["enriched"] / max(1, st["resources"]),
               st["with_deployment"] / max(1, st["resources"]), st["peer_records"])


# --- main ------------------------------------------------------------------------------------------

def _spawn_sink() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.service_vs_collector", "--role", "sink"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        raise RuntimeError("the sink did not start")
    return proc, int(line)


def _memory_in_memory(pods: int) -> float:
    """Fallback: MB of the enricher cache for ``pods`` pods (in-memory source, tracemalloc)."""
    from bench.k8s_enrich import _cache_bytes

    used, _sizes = _cache_bytes(pods)
    return used / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--mem-pods", type=int, default=10000,
                    help="cluster size of the second memory point (0: skip)")
    ap.add_argument("--batches", type=int, default=200, help="requests per measured run")
    ap.add_argument("--distinct", type=int, default=50, help="distinct requests built")
    ap.add_argument("--rounds", type=int, default=3, help="ours+Collector pairs (A B A B ...)")
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--quick", action="store_true",
                    help="1 round of 40 requests, no second memory point (< 2 min)")
    ap.add_argument("--role", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "sink":
        asyncio.run(_sink())
        return 0
    if args.quick:
        args.rounds, args.batches, args.distinct, args.mem_pods = 1, 100, 20, 0

    from tests.support.kube import start_cluster
    from tests.support.stack import collector_binary

    collector_binary()  # a clear error before anything starts
    t_start = time.monotonic()
    print(machine_line(), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="otelguard-bench-k8s-"))
    cluster = start_cluster(workdir / "kube")
    servers: list[Server] = []
    sink: Optional[subprocess.Popen[str]] = None
    client: Optional[Client] = None
    try:
        api = cluster_objects.api_client(cluster.kubeconfig)
        cluster_objects.create_namespaces(api)
        pop = cluster_objects.Population()
        cluster_objects.populate(api, pop, args.pods, deadline_s=600)
        print(f"cluster: {pop.pods} pods ({len(pop.containers)} containers, "
              f"{len(pop.service_ips)} Services) created in {pop.seconds:.1f} s "
              f"({pop.api_calls} API calls)", flush=True)
        rng = random.Random(3)
        distinct = [make_batch(rng, pop) for _ in range(args.distinct)]
        bodies = [distinct[i % len(distinct)] for i in range(args.batches)]
        print(f"input: {args.batches} requests of {BATCH_RECORDS} records "
              f"({RESOURCES_PER_BATCH} Resources x {RECORDS_PER_RESOURCE}), "
              f"{len(distinct[0]) / 1024:.0f} KiB each, {args.distinct} distinct; "
              f"{args.inflight} in flight", flush=True)

        sink, sink_port = _spawn_sink()
        client = Client(sink_port)
        ours = start_ours(workdir, cluster.kubeconfig, sink_port, "1")
        col = start_collector(workdir, cluster.kubeconfig, sink_port, "1")
        nosnap = start_ours(workdir, cluster.kubeconfig, sink_port, "1", restore_on_failure=False)
        contenders = [ours, col, nosnap,
                      start_ours(workdir, cluster.kubeconfig, sink_port, "1", enrich=False),
                      start_collector(workdir, cluster.kubeconfig, sink_port, "1", enrich=False)]
        servers += contenders
        memory: dict[str, dict[int, float]] = {"ours": {}, "collector": {}}
        samples: dict[str, list[str]] = {}
        for s in contenders:
            s.wait_listening(180)
            samples[s.name] = warm_up(client, s, distinct[:8], 60)
            if s.name in memory:
                memory[s.name][pop.pods] = rss_mb(s.proc.pid)
        given = {kv.key for kv in ExportLogsServiceRequest.FromString(
            distinct[0]).resource_logs[0].resource.attributes}
        for name in ("ours", "collector"):
            added = sorted(set(samples[name]) - given)
            print(f"{name} adds {len(added)} Resource attributes: {', '.join(added)}")
        only = sorted(set(samples["ours"]) - set(samples["collector"]))
        print(f"  only ours: {', '.join(only) or '-'}; only the Collector: "
              f"{', '.join(sorted(set(samples['collector']) - set(samples['ours']))) or '-'}",
              flush=True)

        runs: list[Run] = []
        for r in range(args.rounds):
            for s in contenders:
                run = measure(client, s, bodies, args.inflight)
                runs.append(run)
                print(f"  round {r + 1} {s.name:16s}: {run.records:,} records, CPU {run.cpu_s:6.2f} s"
                      f", wall {run.wall_s:6.2f} s -> {run.per_core:>9,.0f} records/s/core; "
                      f"enriched {run.enriched:.0%} of Resources ({run.with_deployment:.0%} with a "
                      f"Deployment), {run.peer_records:,} records with a peer attribute", flush=True)
        for s in contenders:
            s.stop()
        load_after = os.getloadavg()[0]

        mem_note = ""
        if args.mem_pods > pop.pods:
            more = args.mem_pods - pop.pods
            done = cluster_objects.populate(api, pop, more, deadline_s=300.0)
            print(f"cluster grown to {pop.pods} pods in {pop.seconds:.0f} s in all", flush=True)
            if done:
                rng2 = random.Random(5)
                grown = [make_batch(rng2, pop) for _ in range(8)]
                for start in (start_ours, start_collector):
                    s = start(workdir, cluster.kubeconfig, sink_port, "2")
                    servers.append(s)
                    s.wait_listening(300)
                    warm_up(client, s, grown, 120)
                    memory[s.name][pop.pods] = rss_mb(s.proc.pid)
                    s.stop()
            else:
                mem_note = (f"creating {args.mem_pods} pods took > 5 min; "
                            "ours measured with the in-memory source")
                memory["ours"][-args.mem_pods] = _memory_in_memory(args.mem_pods)

        rate = {s.name: median([r.per_core for r in runs if r.server == s.name])
                for s in contenders}
        ratio = rate["ours"] / rate["collector"]
        labels = {
            "ours": "ours: otelguard processor, k8s_attributes (default service config)",
            "collector": "Collector: k8s_attributes + transform",
            "ours-nosnap": "ours, restore_on_failure: false (no per-stage snapshot)",
            "ours-nostage": "baseline: ours with no stage (receive + forward)",
            "collector-noproc": "baseline: Collector with no processor (receive + forward)",
        }
        print(f"\nmedians over {args.rounds} round(s), {args.pods} pods cached "
              f"(CPU µs per record of the server process):")
        for name, value in rate.items():
            print(f"  {labels[name]:66s} {value:>9,.0f} records/s/core  "
                  f"{1e6 / value:5.2f} µs  x{value / rate['collector']:.2f} of the Collector")
        enrich_cost = {side: 1e6 / rate[side] - 1e6 / rate[base] for side, base in
                       (("ours", "ours-nostage"), ("collector", "collector-noproc"))}
        print(f"  ratio ours/Collector: x{ratio:.2f}   (aim: >= x1.00)")
        print(f"  enrichment alone (minus its own baseline): ours {enrich_cost['ours']:.2f} µs, "
              f"Collector {enrich_cost['collector']:.2f} µs per record")
        print("memory (RSS of the server process after sync and warm-up, MB):")
        for name, points in memory.items():
            text = ", ".join(f"{abs(n):,} pods {mb:.0f}" + (" (in-memory source, cache only)"
                                                             if n < 0 else "")
                             for n, mb in points.items())
            print(f"  {name:9s}: {text}")
            pos = sorted((n, mb) for n, mb in points.items() if n > 0)
            if len(pos) == 2:
                (n1, m1), (n2, m2) = pos
                print(f"  {'':9s}  per added pod: {(m2 - m1) * 1e3 / (n2 - n1):.1f} kB")
        if mem_note:
            print(f"  note: {mem_note}")
        print(f"load average after the rate runs: {load_after:.2f}; "
              f"total {time.monotonic() - t_start:.0f} s")
        print(summary_line("service_vs_collector", {
            "pods": args.pods, "records_per_run": args.batches * BATCH_RECORDS,
            "rounds": args.rounds, "ratio": round(ratio, 3),
            "records_per_core_s": {k: round(v) for k, v in rate.items()},
            "enrich_us_per_record": {k: round(v, 3) for k, v in enrich_cost.items()},
            "runs": [vars(r) | {"per_core": round(r.per_core)} for r in runs],
            "rss_mb": {k: {str(n): round(v, 1) for n, v in p.items()} for k, p in memory.items()},
            "memory_note": mem_note,
        }))
        return 0
    finally:
        if client is not None:
            client.close()
        for s in servers:
            s.stop()
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
