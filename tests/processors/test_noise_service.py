"""Held records in the processor service. noise_control's leave on the flush timer or at
stop(), never on a caller's request; a flush that cannot forward keeps them for the next one,
and what finally cannot go out is counted; a stage that releases held records into a request
(k8s_attributes) has them counted when that request's forward fails. The flush is driven by hand (the timer is set to an
hour) and the stage's and forwarder's clocks are injected: no sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs

from otelguard import semconv
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records
from otelguard.processors.config import ServiceSection
from otelguard.processors.forward import Forwarder
from otelguard.processors.noise import Config, NoiseControl
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver import ProcessorService, ServiceThread
from otelguard.processors.receiver import service as service_module
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Batch
from otelguard.transport.contract import ExportResult, LogsPayload
from tests.support.endpoints import grpc_call
from tests.support.metrics import sample
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.security import INSECURE_SERVER

from tests.support.endpoints import grpc_call
from tests.support.metrics import sample

from . import samples
from .service_fixtures import FAST_FORWARD


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Setup:
    def __init__(self, sink: InMemoryTransport) -> None:
        self.clock = Clock()
        self.sink = sink
        self.noise = NoiseControl(Config(window_seconds=10, burst=1), self.clock)
        forwarder = Forwarder([("memory#0", sink)], FAST_FORWARD, clock=self.clock,
                              sleep=lambda _: None)
        self.service = ProcessorService(
            Pipeline([("noise_control", self.noise)]), forwarder,
            ServiceSection(listen="127.0.0.1:0", metrics=None, flush_interval_seconds=3600,
                           tls=INSECURE_SERVER),
            Settings(grace_seconds=1.0))
        self.thread = ServiceThread(self.service)

    def send(self, n_detections: int) -> None:
        body = samples.logs(1, n_detections).SerializeToString()
        code, _, _ = grpc_call(f"127.0.0.1:{self.service.grpc_port}", body)
        assert code == grpc.StatusCode.OK

    def flush(self) -> None:
        self.thread.call(self.service.flush_once())

    def detections(self) -> list[dict[str, PyValue]]:
        return [attrs_dict(rec.attributes) for req in self.sink.logs
                for _, _, rec in iter_log_records(req) if rec.event_name == semconv.EV_DETECTION]


@contextlib.contextmanager
def _setup(sink: InMemoryTransport) -> Iterator[Setup]:
    setup = Setup(sink)
    setup.thread.start()
    try:
        yield setup
    finally:
        setup.thread.stop()


def _dropped(reason: str) -> float:
    return sample("otelguard_dropped_total", stage="forward", reason=reason)


def test_held_records_never_ride_on_a_request_whose_forward_fails() -> None:
    """The measured loss: a summary attached to a request whose forward failed. Now the request
    carries only its own records; the held ones wait for the flush, which retries."""
    sink = InMemoryTransport()
    with _setup(sink) as s:
        s.send(4)  # 1 passes, 3 held (throttle start written)
        assert [d.get(semconv.NOISE_THROTTLE) for d in s.detections()] == [None]
        sink.fail()
        code, _, _ = grpc_call(f"127.0.0.1:{s.service.grpc_port}",
                                samples.logs(2).SerializeToString())
        assert code == grpc.StatusCode.UNAVAILABLE  # the caller keeps its own records
        before = _dropped("flush_next_hop_unavailable")
        s.clock.now += 11  # the window closes: the stop record is due as well
        s.flush()
        assert len(s.service._pending) == 1 and _dropped("flush_next_hop_unavailable") == before
        sink.recover()
        s.clock.now += FAST_FORWARD.down_seconds + 1  # the hop's down window is over
        s.flush()
        assert s.service._pending == []
        held = [d for d in s.detections() if semconv.NOISE_THROTTLE in d]
        assert [(d[semconv.NOISE_THROTTLE], d[semconv.DETECTION_COUNT]) for d in held] == [
            (semconv.NOISE_THROTTLE_START, 0), (semconv.NOISE_THROTTLE_STOP, 3)]


def test_flush_backlog_past_its_limit_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "_PENDING_FLUSH_LIMIT", 1)
    sink = InMemoryTransport()
    with _setup(sink) as s:
        s.send(3)
        sink.fail()
        before = _dropped("flush_next_hop_unavailable")
        s.flush()  # the start record: pending
        s.clock.now += 11
        s.flush()  # the stop record too: over the limit, the oldest goes, counted
        assert _dropped("flush_next_hop_unavailable") == before + 1
        assert len(s.service._pending) == 1
        sink.recover()
        s.clock.now += FAST_FORWARD.down_seconds + 1


def test_stop_flushes_held_records_and_counts_what_cannot_go_out() -> None:
    sink = InMemoryTransport()
    setup = Setup(sink)
    setup.thread.start()
    setup.send(5)
    setup.thread.stop()  # SIGTERM path: nothing due yet, everything held goes out
    stops = [d for d in setup.detections()
             if d.get(semconv.NOISE_THROTTLE) == semconv.NOISE_THROTTLE_STOP]
    assert [d[semconv.DETECTION_COUNT] for d in stops] == [4]

    down = InMemoryTransport()
    setup = Setup(down)
    setup.thread.start()
    setup.send(5)
    down.fail()
    before = _dropped("shutdown_next_hop_unavailable")
    setup.thread.stop()
    assert _dropped("shutdown_next_hop_unavailable") == before + 2  # the start and the stop record
    assert setup.noise.held_detections == 0


class _BlockingSink(InMemoryTransport):
    """The first logs export blocks until released, so a flush can be cancelled mid-forward."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def export_logs(self, req: LogsPayload) -> ExportResult:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().export_logs(req)


def test_a_flush_cancelled_mid_forward_leaves_its_batches_for_stop() -> None:
    sink = _BlockingSink()
    setup = Setup(sink)
    setup.noise.process(samples.logs(0, 3))  # held state without a request: 1 passed, 2 held
    setup.thread.start()

    async def cancel_mid_flush() -> int:
        loop = asyncio.get_running_loop()
        task = loop.create_task(setup.service.flush_once())
        assert await loop.run_in_executor(None, sink.entered.wait, 30)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return len(setup.service._pending)

    assert setup.thread.call(cancel_mid_flush()) == 1  # still pending, not lost
    sink.release.set()
    setup.thread.stop()  # forwards it again: at least once
    starts = [d for d in setup.detections()
              if d.get(semconv.NOISE_THROTTLE) == semconv.NOISE_THROTTLE_START]
    assert len(starts) >= 1
    assert [d[semconv.DETECTION_COUNT] for d in setup.detections()
            if d.get(semconv.NOISE_THROTTLE) == semconv.NOISE_THROTTLE_STOP] == [2]


class _HoldsIntoNextBatch:
    """Holds each logs batch's records and puts them into the next batch, as k8s_attributes
    does with a Resource whose pod has arrived (pipeline.ReleasesRecords)."""

    type_name = "holds_into_next"

    def __init__(self) -> None:
        self.held: list[ResourceLogs] = []
        self.released_records = 0

    def start(self) -> None:
        pass

    def process(self, batch: Batch) -> Batch:
        assert isinstance(batch, ExportLogsServiceRequest)
        released, self.held = self.held, [ResourceLogs()]
        self.held[0].CopyFrom(batch.resource_logs[0])
        del batch.resource_logs[0]
        for rl in released:
            self.released_records += sum(len(sl.log_records) for sl in rl.scope_logs)
            batch.resource_logs.add().CopyFrom(rl)
        return batch

    def shutdown(self) -> None:
        pass


def test_held_records_released_into_a_request_whose_forward_fails_are_counted() -> None:
    sink = InMemoryTransport()
    forwarder = Forwarder([("memory#0", sink)], FAST_FORWARD, clock=Clock(), sleep=lambda _: None)
    service = ProcessorService(
        Pipeline([("holds", _HoldsIntoNextBatch())]), forwarder,
        ServiceSection(listen="127.0.0.1:0", metrics=None, flush_interval_seconds=3600,
                       tls=INSECURE_SERVER),
        Settings(grace_seconds=1.0))
    with ServiceThread(service):
        endpoint = f"127.0.0.1:{service.grpc_port}"
        first = samples.logs(3)
        first.resource_logs.add().CopyFrom(samples.logs(1).resource_logs[0])
        assert grpc_call(endpoint, first.SerializeToString())[0] == grpc.StatusCode.OK
        sink.fail()
        before = _dropped("held_next_hop_unavailable")
        second = samples.logs(2)
        second.resource_logs.add().CopyFrom(samples.logs(1).resource_logs[0])
        assert grpc_call(endpoint, second.SerializeToString())[0] == \
            grpc.StatusCode.UNAVAILABLE
        assert _dropped("held_next_hop_unavailable") == before + 3  # first's 3, acknowledged
