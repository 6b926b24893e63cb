"""The shipped Collector configs lose nothing they acknowledged when the gateway Collector dies.

Pipeline (a) for real: a sender -> Collector (backends.yaml + gateway.yaml) -> ``otelguard
processor`` -> the same Collector -> Loki. The sender pushes a bounded stream of detection
records (each with its own ``log.record.uid``) and retries each request until it is
acknowledged, as the agent's ``Delivery`` does; the Collector is SIGKILLed and started again on
the same queue directory. Then Loki is reconciled against the sender: every acknowledged uid is
in Loki, nothing else is, and duplicates (at-least-once) are counted by uid.

The processor service runs with no stages (``processors: []``): it forwards what it gets, so
the reconciliation is exact and about the Collector hop alone (the stages' own loss accounting
is tested in tests/processors/).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs

from otelguard import semconv as sc
from tests.support.certs import GatewayTls
from tests.support.metrics import scrape, series, total
from tests.support.polling import wait_until
from tests.support.stack import (
    BACKENDS_CONFIG, GATEWAY_CONFIG, Collector, Loki, ProcessorService, backends_env,
)

pytestmark = pytest.mark.e2e

PER_REQUEST = 50
GATEWAY_EXPORTER = "otlp_grpc/processor"
LOKI_EXPORTER = "otlp_http/loki_detections"
LOKI_QUERY_LIMIT = 5000   # Loki's default max_entries_limit_per_query: every stream below stays under it


@dataclass
class DetectionStream:
    """``requests`` requests of PER_REQUEST detection records, one namespace per run (Loki's
    index label), one uid per record."""

    requests: int
    run: str = field(default_factory=lambda: f"{time.time_ns():x}"[-10:])

    @property
    def namespace(self) -> str:
        return f"restart-{self.run}"

    def uid(self, i: int, j: int) -> str:
        return f"{self.run}-{i:04d}-{j:03d}"

    def request(self, i: int) -> ExportLogsServiceRequest:
        rl = ResourceLogs()
        for key, value in ((sc.SERVICE_NAME, "otelguard"), (sc.K8S_CLUSTER_NAME, "e2e"),
                           (sc.K8S_NAMESPACE_NAME, self.namespace), (sc.STREAM, sc.STREAM_DETECTION)):
            rl.resource.attributes.add(key=key, value={"string_value": value})
        sl = rl.scope_logs.add()
        for j in range(PER_REQUEST):
            rec = sl.log_records.add(time_unix_nano=time.time_ns(), severity_number=13,
                                     event_name=sc.EV_DETECTION)
            rec.body.string_value = f"restart test detection {i}/{j}"
            rec.attributes.add(key=sc.LOG_RECORD_UID, value={"string_value": self.uid(i, j)})
            rec.attributes.add(key=sc.SECURITY_RULE_NAME, value={"string_value": f"Restart {self.run}"})
        return ExportLogsServiceRequest(resource_logs=[rl])

    def all_uids(self) -> set[str]:
        return {self.uid(i, j) for i in range(self.requests) for j in range(PER_REQUEST)}


class Sender(threading.Thread):
    """Sends the stream in order; a request is retried (0.2 s apart) until acknowledged or
    ``deadline_s`` has passed. ``after_ack(i)`` runs in this thread right after request i's OK,
    so a kill it triggers lands while that request is surely still in the Collector's queue."""

    def __init__(self, collector: Collector, stream: DetectionStream, pace_s: float = 0.0,
                 after_ack: Optional[Callable[[int], None]] = None, deadline_s: float = 90.0) -> None:
        super().__init__(daemon=True)
        self.collector, self.stream, self.pace_s = collector, stream, pace_s
        self.after_ack = after_ack or (lambda i: None)
        self.deadline = time.monotonic() + deadline_s
        self.acked: list[str] = []
        self.failed_attempts = 0
        self.errors: Counter[str] = Counter()

    def run(self) -> None:
        assert self.collector.tls is not None
        # as an agent connects: TLS and an agent token (gateway.yaml's agents receiver)
        ch, metadata = self.collector.tls.agent_channel(self.collector.agents_grpc)
        with ch:
            stub = LogsServiceStub(ch)  # type: ignore[no-untyped-call]
            for i in range(self.stream.requests):
                req = self.stream.request(i)
                while time.monotonic() < self.deadline:
                    try:
                        stub.Export(req, timeout=5, metadata=metadata)
                    except grpc.RpcError as exc:
                        self.failed_attempts += 1
                        self.errors[str(exc.code())] += 1
                        time.sleep(0.2)
                        continue
                    self.acked += [self.stream.uid(i, j) for j in range(PER_REQUEST)]
                    self.after_ack(i)
                    break
                else:
                    return
                time.sleep(self.pace_s)


def loki_uids(loki: Loki, stream: DetectionStream) -> Counter[str]:
    """How many times Loki holds each uid of the run (structured metadata log_record_uid)."""
    data = loki.query_range(f'{{k8s_namespace_name="{stream.namespace}", otelguard_stream="detection"}}',
                            since_s=900, limit=LOKI_QUERY_LIMIT)
    held: Counter[str] = Counter()
    for s in data["result"]:
        held[s["stream"].get(sc.LOG_RECORD_UID.replace(".", "_"), "")] += len(s["values"])
    assert sum(held.values()) < LOKI_QUERY_LIMIT, "the query hit Loki's entry limit: split the run"
    return held


def loaded_queues(col: Collector, log_offset: int) -> dict[str, dict[str, int]]:
    """What each persistent queue found on disk at the Collector's start after ``log_offset``
    (its "Loaded queue metadata" log line): exporter/signal -> itemsSize, dispatchedItems, ..."""
    out: dict[str, dict[str, int]] = {}
    with open(col.log_path, "rb") as f:
        f.seek(log_offset)
        for line in f.read().decode(errors="replace").splitlines():
            if "Loaded queue metadata" in line:
                fields = json.loads(line[line.index("{"):])
                key = f'{fields["otelcol.component.id"]}/{fields["otelcol.signal"]}'
                out[key] = {k: int(v) for k, v in fields.items() if isinstance(v, int)}
    return out


def queue_size(col: Collector, exporter: str) -> float:
    """otelcol_exporter_queue_size of one logs exporter (items: the queues use the items sizer)."""
    text = scrape(f"http://{col.telemetry}/metrics")
    return sum(v for labels, v in series("otelcol_exporter_queue_size", text)
               if labels == {"exporter": exporter, "data_type": "logs"})


def restart(col: Collector) -> int:
    """SIGKILL (unless already dead) and start again on the same queue directory; the log offset
    where the new process' lines begin."""
    col.kill()
    offset = col.log_path.stat().st_size
    col.start()
    return offset


def reconcile(loki: Loki, stream: DetectionStream, sender: Sender, timeout: float = 60.0) -> Counter[str]:
    """Wait until Loki holds every acknowledged uid; assert nothing is missing or foreign."""
    acked = set(sender.acked)
    assert wait_until(lambda: acked <= set(loki_uids(loki, stream)), timeout, 1.0), \
        f"missing in Loki: {len(acked - set(loki_uids(loki, stream)))} of {len(acked)} acknowledged"
    time.sleep(1.0)   # a redelivery still on its way shows as a duplicate, not after the test
    held = loki_uids(loki, stream)
    assert acked <= set(held)
    assert set(held) <= stream.all_uids(), set(held) - stream.all_uids()
    return held


@pytest.fixture
def pass_through(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text("processors: []\n")
    return path


def pipeline_a(workdir: Path, loki: Loki, pass_through: Path) -> tuple[Collector, ProcessorService]:
    """The gateway Collector and the pass-through processor service wired to each other and to
    ``loki``; neither started."""
    tls = GatewayTls.create(workdir / "pki")
    col = Collector(workdir / "otelcol", [BACKENDS_CONFIG, GATEWAY_CONFIG], backends_env(loki), tap=False,
                    tls=tls)
    proc = ProcessorService(workdir / "processor", export=col.otlp_grpc, extra_args=["--config", str(pass_through)],
                            listen_tls=tls.processor_args(), export_tls=tls.processor_export_args())
    col.env["OTELGUARD_PROCESSOR_ENDPOINT"] = proc.endpoint
    return col, proc


@pytest.fixture
def gateway(tmp_path: Path, loki: Loki, pass_through: Path) -> Iterator[tuple[Collector, ProcessorService]]:
    col, proc = pipeline_a(tmp_path, loki, pass_through)
    try:
        yield col, proc
    finally:
        col.stop()
        proc.stop()


def test_sigkill_mid_stream_loses_nothing_acknowledged(loki: Loki,
                                                       gateway: tuple[Collector, ProcessorService]) -> None:
    """3000 detections at ~1000/s; right after request 20's OK the Collector is SIGKILLed (so that
    request is still in a queue) and started again; the sender retries what failed meanwhile."""
    col, proc = gateway
    proc.start()
    col.start()
    stream = DetectionStream(requests=60)
    killed = threading.Event()

    def kill_after(i: int) -> None:
        if i == 20:
            col.kill()
            killed.set()
    sender = Sender(col, stream, pace_s=0.05, after_ack=kill_after)
    sender.start()
    assert killed.wait(60), "the sender never got 21 acknowledgements"
    offset = restart(col)
    sender.join(120)
    assert not sender.is_alive() and len(sender.acked) == 60 * PER_REQUEST, \
        (len(sender.acked), sender.errors, col.log_tail())

    recovered = loaded_queues(col, offset)
    pending = {q: v.get("itemsSize", 0) for q, v in recovered.items() if v.get("itemsSize")}
    assert pending, f"the kill found nothing queued, so nothing was tested: {recovered}"
    held = reconcile(loki, stream, sender)
    received = total("otelguard_processor_records_received_total", scrape(f"http://{proc.metrics}/metrics"),
                     signal="logs")
    dups = sum(n - 1 for n in held.values())
    print(f"\nSIGKILL mid-stream: sent {len(stream.all_uids())}, acknowledged {len(sender.acked)} "
          f"({sender.failed_attempts} failed attempts retried: {dict(sender.errors)}); queued at the "
          f"kill, found on restart (records): {pending}; processor received {received:.0f}; "
          f"Loki holds {len(held)} uids, {dups} duplicates, 0 missing")


@pytest.mark.parametrize("down", ["processor", "loki"])
def test_queue_on_disk_survives_a_kill_while_the_next_hop_is_down(
        tmp_path: Path, loki: Loki, pass_through: Path, down: str) -> None:
    """The next hop (the processor service, or Loki) is down: all 2000 acknowledged detections
    wait in that exporter's persistent queue; the Collector is SIGKILLed and started again while
    the hop is still down, finds them on disk, and delivers them once the hop is back."""
    target = Loki(tmp_path / "loki") if down == "loki" else loki
    col, proc = pipeline_a(tmp_path, target, pass_through)
    exporter = GATEWAY_EXPORTER if down == "processor" else LOKI_EXPORTER
    stream = DetectionStream(requests=40)
    n = stream.requests * PER_REQUEST
    try:
        if down == "loki":
            proc.start()
        col.start()
        sender = Sender(col, stream)
        sender.start()
        sender.join(120)
        assert len(sender.acked) == n, (len(sender.acked), sender.errors)
        assert wait_until(lambda: queue_size(col, exporter) == n, 60), queue_size(col, exporter)
        on_disk = sum(p.stat().st_size for p in col.queue_dir.iterdir())

        offset = restart(col)
        loaded = loaded_queues(col, offset)[f"{exporter}/logs"]
        assert loaded["itemsSize"] == n, loaded
        (proc if down == "processor" else target).start()
        held = reconcile(target, stream, sender)
    finally:
        col.stop()
        proc.stop()
        if down == "loki":
            target.stop()
    print(f"\n{down} down: {n} acknowledged, all in {exporter}'s queue ({on_disk} bytes in "
          f"{col.queue_dir.name}/); after SIGKILL and restart it loaded {loaded['itemsSize']} records "
          f"({loaded.get('dispatchedItems', 0)} requests were being dispatched); Loki holds {len(held)} "
          f"uids, {sum(v - 1 for v in held.values())} duplicates, 0 missing")
