"""Processor service throughput: records/s per core through receive -> pipeline -> forward.

Each variant runs as a server in its own process; a client in this process keeps ``--inflight``
requests of 512 pre-serialized records (20 attributes, 1 % detections) in flight for
``--seconds``. Per-core figures divide the records by the server process's CPU time (all its
threads, from /proc/<pid>/stat), so client cost and the shared 2 cores do not blur them. The
next hop of the forwarding variants is a parse-only sink in a third process.

Variants (printed as ratios against ``parse-only``, measured in the same run):

- ``parse-only``   : grpc.aio server that parses each request and answers (the floor);
- ``svc-empty``    : ProcessorService, no stage, forwarding over OTLP/gRPC to the sink;
- ``svc-noise``    : + noise_control (snapshot before each stage for failure isolation);
- ``svc-noise-nocopy``: same without the snapshot (``restore_on_failure=False``);
- ``svc-http``     : svc-noise, received over OTLP/HTTP protobuf instead of gRPC;
- ``svc-default``  : the default pipeline, falco_rules (packaged rules) + noise_control.

Run: ``.venv/bin/python -m bench.processor_throughput`` (``--seconds 5 --inflight 4``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from otelguard import semconv as sc
from otelguard.otlp.messages import set_attrs
from otelguard.transport.security import INSECURE_CLIENT, INSECURE_SERVER

BATCH = 512
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def make_batch(seed: int) -> bytes:
    """512 records over 8 container Resources, ~20 attributes each, every 100th a detection."""
    req = ExportLogsServiceRequest()
    per = BATCH // 8
    for c in range(8):
        rl = req.resource_logs.add()
        set_attrs(rl.resource.attributes, {
            sc.CONTAINER_ID: f"{c:02x}" * 32, sc.K8S_POD_UID: f"pod-{c}", sc.K8S_NODE_NAME: "n1",
            sc.HOST_NAME: "n1", sc.K8S_NAMESPACE_NAME: "shop", sc.K8S_DEPLOYMENT_NAME: f"d{c}"})
        sl = rl.scope_logs.add()
        sl.scope.name = sc.SCOPE_AGENT
        for i in range(per):
            n = seed * BATCH + c * per + i
            rec = sl.log_records.add()
            rec.time_unix_nano = 1_763_900_000_000_000_000 + n
            rec.severity_number = 9
            detection = n % 100 == 0
            rec.event_name = sc.EV_DETECTION if detection else sc.EV_FILE_OPEN
            rec.body.string_value = f"open /srv/data/file-{n}.dat"
            set_attrs(rec.attributes, {
                sc.PROCESS_PID: 1000 + n % 200, sc.PROCESS_PARENT_PID: 999,
                sc.PROCESS_EXECUTABLE_NAME: "python3", sc.PROCESS_EXECUTABLE_PATH: "/usr/bin/python3",
                sc.PROCESS_COMMAND_LINE: "/usr/bin/python3 app.py --port 8080",
                sc.PROCESS_USER_ID: 1000, sc.PROCESS_USER_NAME: "app",
                sc.PROCESS_WORKING_DIRECTORY: "/srv", sc.PROCESS_ANCESTORS: ["sh", "containerd-shim"],
                sc.PROCESS_PARENT_EXECUTABLE_NAME: "sh", sc.FILE_PATH: f"/srv/data/file-{n % 300}.dat",
                sc.FILE_OPEN_FLAGS: "O_WRONLY|O_CREAT", sc.SYSCALL_NAME: "openat",
                sc.SYSCALL_RET: 3, sc.LOG_RECORD_UID: f"uid-{n}",
                sc.PROCESS_CREATION_TIME: "2026-11-23T12:00:00Z", sc.PROCESS_VPID: n % 200,
                sc.PROCESS_TTY: 0, sc.PROCESS_DURATION_NS: n,
                **({sc.SECURITY_RULE_NAME: f"rule-{n % 3}"} if detection else {}),
            })
    data: bytes = req.SerializeToString()
    return data


# --- server roles (child processes) ------------------------------------------------------------


async def _parse_only(port: int) -> None:
    async def export(request: bytes, context: Any) -> bytes:
        ExportLogsServiceRequest.FromString(request)
        data: bytes = ExportLogsServiceResponse().SerializeToString()
        return data

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService", {"Export": handler}),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(bound, flush=True)
    await server.wait_for_termination()


async def _service(variant: str, sink_port: int) -> None:
    from otelguard.processors.config import ServiceSection
    from otelguard.processors.forward import Forwarder
    from otelguard.processors.noise import Config as NoiseConfig
    from otelguard.processors.noise import NoiseControl
    from otelguard.processors.pipeline import Pipeline
    from otelguard.processors.receiver import ProcessorService
    from otelguard.processors.settings import Settings
    from otelguard.transport.otlp_grpc import OtlpGrpcTransport

    stages: list[tuple[str, Any]] = []
    if variant == "svc-default":
        from otelguard.processors import registry

        stages.append(("falco_rules", registry.create("falco_rules")))
    if variant != "svc-empty":
        stages.append(("noise_control", NoiseControl(NoiseConfig())))
    pipeline = Pipeline(stages, restore_on_failure=variant != "svc-noise-nocopy")
    forwarder = Forwarder([("otlp#0", OtlpGrpcTransport(f"127.0.0.1:{sink_port}",
                                                        tls=INSECURE_CLIENT))])
    svc = ProcessorService(pipeline, forwarder, ServiceSection(
        listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None, tls=INSECURE_SERVER),
        Settings())
    await svc.start()
    print(svc.http_port if variant == "svc-http" else svc.grpc_port, flush=True)
    await asyncio.Event().wait()


# --- driver ------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _spawn(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.processor_throughput", "--role", *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"server {args} did not start")
    return proc, int(line)


def _grpc_sender(port: int) -> Callable[[bytes], None]:
    local = threading.local()

    def send(body: bytes) -> None:
        call = getattr(local, "call", None)
        if call is None:
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            call = local.call = channel.unary_unary(LOGS_METHOD, request_serializer=None,
                                                    response_deserializer=None)
        call(body, timeout=30)

    return send


def _http_sender(port: int) -> Callable[[bytes], None]:
    local = threading.local()

    def send(body: bytes) -> None:
        conn: Optional[http.client.HTTPConnection] = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/logs", body=body,
                     headers={"Content-Type": "application/x-protobuf"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")

    return send


def measure(pid: int, send: Callable[[bytes], None], batches: list[bytes], seconds: float,
            inflight: int) -> tuple[float, float]:
    """(records per wall second, records per server CPU second)."""
    for body in batches[:4]:  # warm up connections and caches
        send(body)
    stop = time.monotonic() + seconds
    sent = [0] * inflight

    def worker(k: int) -> None:
        i = k
        while time.monotonic() < stop:
            send(batches[i % len(batches)])
            sent[k] += 1
            i += inflight

    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(inflight) as pool:
        list(pool.map(worker, range(inflight)))
    wall, cpu = time.monotonic() - t0, _cpu_seconds(pid) - cpu0
    records = sum(sent) * BATCH
    return records / wall, records / max(cpu, 1e-9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--role", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        if args.role[0] == "parse-only":
            asyncio.run(_parse_only(0))
        else:
            asyncio.run(_service(args.role[0], int(args.role[1])))
        return 0

    batches = [make_batch(s) for s in range(16)]
    print(f"batch: {BATCH} records, {len(batches[0]) / 1024:.0f} KiB; {args.inflight} in flight; "
          f"{args.seconds:.0f} s per variant; per-core = records / server CPU seconds")
    sink, sink_port = _spawn("parse-only")
    results: dict[str, tuple[float, float]] = {}
    try:
        for variant in ("parse-only", "svc-empty", "svc-noise", "svc-noise-nocopy", "svc-http",
                        "svc-default"):
            if variant == "parse-only":
                proc, port = _spawn("parse-only")
            else:
                proc, port = _spawn(variant, str(sink_port))
            try:
                send = _http_sender(port) if variant == "svc-http" else _grpc_sender(port)
                results[variant] = measure(proc.pid, send, batches, args.seconds, args.inflight)
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        sink.terminate()
        sink.wait(10)
    base_wall, base_core = results["parse-only"]
    print(f"{'variant':<18} {'records/s':>11} {'records/s/core':>15} {'vs parse-only (core)':>21}")
    for name, (wall, core) in results.items():
        print(f"{name:<18} {wall:>11,.0f} {core:>15,.0f} {core / base_core:>20.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
