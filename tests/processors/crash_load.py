"""A real ``otelguard processor`` restarted on one config, ports and state directory, and the
load that drives it through crashes: sender threads that retry each request until it is answered
OK, steps (kills, restarts, cluster changes) at points of progress, SIGTERM at the end. Used by
the crash reconciliation tests (tests/processors/test_crash_reconciliation.py,
tests/processors/k8s/test_hold_crash.py)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import grpc

from tests.support.endpoints import LOGS, free_port, listening
from tests.support.metrics import scrape, series
from tests.support.polling import wait_for
from tests.transport.receivers import GrpcReceiver

OTELGUARD = [sys.executable, "-m", "otelguard.cli"]  # as tests/processors/test_service_cli.py


class Service:
    """``otelguard processor`` restarted on the same config, ports and state directory
    (``processors``: the YAML list of its stages)."""

    def __init__(self, tmp: Path, downstream: str, processors: str,
                 flush_interval: float = 0.2) -> None:
        self.port, self.metrics = free_port(), free_port()
        self.config = tmp / "pipeline.yaml"
        self.config.write_text(
            f"service: {{state_dir: {tmp / 'state'}, flush_interval_seconds: {flush_interval},"
            " tls: {insecure: true}}\n"
            "forward: {tls: {insecure: true}}\n"
            f"exporters: ['otlp:{downstream}']\n"
            "processors:\n" + processors)
        self.tmp = tmp
        self.runs = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.dropped: list[float] = []  # per run: records dropped, scraped right before its stop

    def start(self) -> None:
        self.runs += 1
        log = (self.tmp / f"run{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            OTELGUARD + ["processor", "--config", str(self.config), "--listen",
                         f"127.0.0.1:{self.port}", "--metrics", f"127.0.0.1:{self.metrics}"],
            stdout=log, stderr=log)
        log.close()
        wait_for(lambda: listening(self.port) and listening(self.metrics), timeout=60,
                 what="processor listening")

    def stop(self, how: signal.Signals) -> None:
        assert self.proc is not None
        text = scrape(f"http://127.0.0.1:{self.metrics}/metrics")
        # journal_torn counts journal entries a crash cut short (never acknowledged), not records
        self.dropped.append(sum(v for labels, v in series("otelguard_dropped_total", text)
                                if labels["stage"] in ("noise_control", "forward")
                                and labels["reason"] != "journal_torn"))
        self.proc.send_signal(how)
        code = self.proc.wait(60)
        assert code == (0 if how == signal.SIGTERM else -signal.SIGKILL), self.log(self.runs)

    def log(self, run: int) -> str:
        return (self.tmp / f"run{run}.log").read_text()


def send_until_ok(endpoint: str, work: "queue.Queue[Optional[bytes]]", acked: list[int],
            lock: threading.Lock) -> None:
    """Sends each request until it is answered OK (a fresh channel after any failure)."""
    channel = grpc.insecure_channel(endpoint)
    while True:
        body = work.get()
        if body is None:
            channel.close()
            return
        while True:
            call = channel.unary_unary(LOGS, request_serializer=None,
                                       response_deserializer=None)
            try:
                call(body, timeout=15)
                break
            except grpc.RpcError:
                channel.close()
                time.sleep(0.05)
                channel = grpc.insecure_channel(endpoint)
        with lock:
            acked[0] += 1


def drive(service: Service, receiver: GrpcReceiver, bodies: list[bytes], senders: int,
          steps: list[tuple[int, Callable[[], None]]]) -> int:
    """Send ``bodies`` to the started ``service`` from ``senders`` threads, each request
    retried until OK; run each step once ``point`` requests were acknowledged (in order); end
    with SIGTERM (the last stop drains everything held). The process is killed and
    ``receiver`` stopped whatever happens. Returns the number of requests acknowledged."""
    work: queue.Queue[Optional[bytes]] = queue.Queue()
    for body in bodies:
        work.put(body)
    for _ in range(senders):
        work.put(None)
    acked, lock = [0], threading.Lock()
    threads = [threading.Thread(target=send_until_ok, args=(f"127.0.0.1:{service.port}", work, acked,
                                                      lock), daemon=True)
               for _ in range(senders)]
    try:
        for t in threads:
            t.start()
        for point, step in steps:
            wait_for(lambda: acked[0] >= point, timeout=180, what=f"{point} requests acked")
            step()
        for t in threads:
            t.join(300)
            assert not t.is_alive(), "a sender never got its request acknowledged"
        service.stop(signal.SIGTERM)
    finally:
        if service.proc is not None and service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)
        receiver.stop()
    return acked[0]
