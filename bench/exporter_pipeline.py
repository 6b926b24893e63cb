"""The agent's whole export path: events -> BatchExporter -> OTLP/gRPC (or spool), per CPU second.

Measured in one run against the build-only baseline (OtlpBuilder.logs_bytes on the same events):
- ``grpc``  : BatchExporter -> Delivery -> OtlpGrpcTransport -> a null OTLP/gRPC receiver in a
  separate process (returns an empty response without parsing, so only our side is measured);
- ``spool`` : the receiver is down: every batch goes to the on-disk spool;
- ``replay``: the spool is then replayed to the receiver.
Rates are events per CPU second of this process. Run: ``.venv/bin/python -m bench.exporter_pipeline``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import tempfile
import time
from concurrent import futures
from typing import Sequence

from bench.exporter_build import NODE, make_events
from otelguard.ebpf.events import Event
from otelguard.exporter.batch import BatchExporter
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.config import ExporterConfig
from otelguard.transport import Delivery, RetryPolicy, Spool
from otelguard.transport.otlp_grpc import LOGS_METHOD, TRACES_METHOD, OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT


def _null_receiver(port: int, ready: "multiprocessing.synchronize.Event") -> None:
    import grpc

    def handler(request: bytes, context: object) -> bytes:
        return b""  # an empty Export*ServiceResponse

    methods = {}
    for full in (LOGS_METHOD, TRACES_METHOD):
        service, method = full.strip("/").rsplit("/", 1)
        methods[service] = grpc.method_handlers_generic_handler(service, {
            method: grpc.unary_unary_rpc_method_handler(handler)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers(tuple(methods.values()))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ListSource:
    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.pos = 0

    def __call__(self, max_events: int, timeout_s: float) -> Sequence[Event]:
        out = self.events[self.pos:self.pos + max_events]
        self.pos += len(out)
        if not out and timeout_s:
            time.sleep(min(timeout_s, 0.001))
        return out


def run_exporter(events: Sequence[Event], delivery: Delivery) -> float:
    src = ListSource(events)
    exp = BatchExporter(src, delivery, ExporterConfig(max_batch=512, flush_interval_s=0.2),
                        OtlpBuilder(NODE))
    t = time.process_time()
    exp.start()
    while src.pos < len(events):
        time.sleep(0.01)
    exp.stop()
    return len(events) / (time.process_time() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--quick", action="store_true", help="10k events (make bench --quick)")
    args = ap.parse_args()
    if args.quick:
        args.events = 10_000
    events = make_events(args.events)

    b = OtlpBuilder(NODE)
    b.logs_bytes(events[:2000])
    t = time.process_time()
    for i in range(0, len(events), 512):
        b.logs_bytes(events[i:i + 512])
    base = len(events) / (time.process_time() - t)

    port = free_port()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_null_receiver, args=(port, ready), daemon=True)
    proc.start()
    ready.wait(30)
    try:
        grpc_rate = run_exporter(events, Delivery(OtlpGrpcTransport(f"127.0.0.1:{port}",
                                                                    tls=INSECURE_CLIENT)))
        with tempfile.TemporaryDirectory() as tmp:
            down = free_port()
            spool = Spool(tmp, 1 << 30)
            policy = RetryPolicy(max_attempts=1, down_max_s=60.0)
            spool_rate = run_exporter(events, Delivery(OtlpGrpcTransport(f"127.0.0.1:{down}",
                                                                         tls=INSECURE_CLIENT), spool, policy))
            size = spool.bytes_used
            d = Delivery(OtlpGrpcTransport(f"127.0.0.1:{port}",
                                           tls=INSECURE_CLIENT), spool, replay_budget_s=600)
            t = time.process_time()
            replayed = d.replay()
            replay_rate = replayed / (time.process_time() - t)
    finally:
        proc.terminate()
    print(f"events={args.events} (records/s per CPU second of the exporter process)")
    print(f"  build only   {base:12,.0f}  x1.00")
    print(f"  grpc         {grpc_rate:12,.0f}  x{grpc_rate / base:.2f}")
    print(f"  spool        {spool_rate:12,.0f}  x{spool_rate / base:.2f}  ({size / args.events:.0f} bytes/record on disk)")
    print(f"  replay       {replay_rate:12,.0f}  x{replay_rate / base:.2f}  ({replayed} records)")
    from bench.common import summary_line

    print(summary_line("exporter_pipeline", {
        "events": args.events, "build_events_per_cpu_s": round(base),
        "grpc_events_per_cpu_s": round(grpc_rate), "spool_events_per_cpu_s": round(spool_rate),
        "replay_records_per_cpu_s": round(replay_rate), "grpc_vs_build": round(grpc_rate / base, 2),
    }))


if __name__ == "__main__":
    main()
