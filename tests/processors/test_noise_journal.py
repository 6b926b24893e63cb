"""noise_control's journal: held state survives a crash (the object is dropped without shutdown,
as a SIGKILL would), a torn tail is ignored and counted, the journal is compacted, retried
detections are remembered by uid across a restart, settled records are not re-emitted, and only
batches that changed held state ask for a persist. In the service: only those requests pay the
fsync, a journal that cannot be written is not acknowledged, and SIGTERM with the next hop down
keeps held records for the next start. Clock injected; no sleeps."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records, set_attrs
from otelguard.processors.config import ServiceSection
from otelguard.processors.forward import Forwarder
from otelguard.processors.journal import Journal
from otelguard.processors.noise import Config, NoiseControl
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver import ProcessorService, ServiceThread
from otelguard.processors.settings import Settings
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.security import INSECURE_SERVER

from tests.support.endpoints import grpc_call
from tests.support.metrics import sample

from . import samples
from .service_fixtures import FAST_FORWARD

COMPACT = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _journaled(state: Path, compact: int = COMPACT, burst: int = 1) -> tuple[Pipeline, NoiseControl]:
    stage = NoiseControl(Config(window_seconds=60, burst=burst), Clock())
    pipeline = Pipeline([("noise_control", stage)])
    pipeline.open_state(state, compact)
    pipeline.start()
    return pipeline, stage


def _with_uids(batch: ExportLogsServiceRequest, prefix: str) -> ExportLogsServiceRequest:
    for i, (_, _, rec) in enumerate(iter_log_records(batch)):
        if rec.event_name == semconv.EV_DETECTION:
            set_attrs(rec.attributes, {semconv.LOG_RECORD_UID: f"{prefix}-{i}"})
    return batch


def _held(pipeline: Pipeline) -> list[dict[str, PyValue]]:
    return [attrs_dict(rec.attributes) for batch in pipeline.flush(final=False)
            for _, _, rec in iter_log_records(batch)]


def _states(records: list[dict[str, PyValue]]) -> list[tuple[PyValue, PyValue]]:
    return sorted(((d.get(semconv.NOISE_THROTTLE), d.get(semconv.DETECTION_COUNT))
                   for d in records), key=str)


def _torn() -> float:
    return sample("otelguard_dropped_total", stage="noise_control", reason="journal_torn")


def test_a_crash_loses_nothing_that_was_persisted(tmp_path: Path) -> None:
    pipeline, _ = _journaled(tmp_path)
    result = pipeline.process(_with_uids(samples.logs(2, 6), "a"))
    assert result.state_changed and result.records_out == 2 + 1  # events + the one that passed
    pipeline.persist()  # what the service does before answering OK
    # SIGKILL: no drain, no shutdown. The next process re-emits the start record and a stop
    # record with the exact count of the open throttle.
    again, _ = _journaled(tmp_path)
    held = _held(again)
    assert _states(held) == [(semconv.NOISE_THROTTLE_START, 0), (semconv.NOISE_THROTTLE_STOP, 5)]
    assert len({d[semconv.LOG_RECORD_UID] for d in held}) == 2


def test_events_only_batches_change_no_held_state(tmp_path: Path) -> None:
    pipeline, _ = _journaled(tmp_path)
    assert not pipeline.process(samples.logs(5)).state_changed
    assert pipeline.process(_with_uids(samples.logs(0, 1), "b")).state_changed


def test_a_retried_detection_is_not_counted_twice_across_a_restart(tmp_path: Path) -> None:
    pipeline, _ = _journaled(tmp_path)
    batch = _with_uids(samples.logs(0, 4), "c")
    retry = ExportLogsServiceRequest()
    retry.CopyFrom(batch)
    pipeline.process(batch)
    pipeline.persist()  # the process dies before its caller got OK; the caller retries
    again, _ = _journaled(tmp_path)
    out = again.process(retry)
    # the one that passed passes again (a duplicate by uid); the three counted ones stay counted
    assert [attrs_dict(r.attributes)[semconv.LOG_RECORD_UID]
            for _, _, r in iter_log_records(out.batch)] == ["c-0"]
    assert _states(_held(again)) == [(semconv.NOISE_THROTTLE_START, 0),
                                     (semconv.NOISE_THROTTLE_STOP, 3)]


def test_settled_records_are_not_emitted_again(tmp_path: Path) -> None:
    pipeline, stage = _journaled(tmp_path)
    pipeline.process(_with_uids(samples.logs(0, 3), "d"))
    assert len(_held(pipeline)) == 1  # the start record left...
    pipeline.persist()
    pipeline.settle(pipeline.flushes)  # ...and was forwarded
    pipeline.persist()
    again, _ = _journaled(tmp_path)
    assert _states(_held(again)) == [(semconv.NOISE_THROTTLE_STOP, 2)]


def test_a_torn_tail_is_ignored_and_counted(tmp_path: Path) -> None:
    pipeline, _ = _journaled(tmp_path)
    pipeline.process(_with_uids(samples.logs(0, 3), "e"))
    pipeline.persist()
    journal = tmp_path / "noise_control.journal"
    good = journal.stat().st_size
    pipeline.process(_with_uids(samples.logs(0, 2, detection_attrs={
        semconv.FILE_PATH: "/x"}), "f"))
    pipeline.persist()
    data = journal.read_bytes()
    journal.write_bytes(data[:good + (len(data) - good) // 2])  # the last write torn
    before = _torn()
    again, _ = _journaled(tmp_path)
    assert _torn() == before + 1
    assert _states(_held(again)) == [(semconv.NOISE_THROTTLE_START, 0),
                                     (semconv.NOISE_THROTTLE_STOP, 2)]
    journal.write_bytes(b"\xff" * 7)  # garbage only: an empty start, counted, no crash
    third, _ = _journaled(tmp_path)
    assert _held(third) == [] and _torn() == before + 2


def test_the_journal_is_compacted_and_stays_exact(tmp_path: Path) -> None:
    pipeline, _ = _journaled(tmp_path, compact=16 * 1024)
    journal = tmp_path / "noise_control.journal"
    sizes = []
    for i in range(200):
        pipeline.process(_with_uids(samples.logs(0, 2), f"g{i}"))
        pipeline.persist()
        sizes.append(journal.stat().st_size)
    assert max(sizes) < 64 * 1024 < sum(sizes) // 10  # rewritten, not grown without bound
    again, _ = _journaled(tmp_path)
    # 400 sightings of one key, burst 1: 399 counted in one stop record
    assert _states(_held(again)) == [(semconv.NOISE_THROTTLE_START, 0),
                                     (semconv.NOISE_THROTTLE_STOP, 399)]


# --- in the service -----------------------------------------------------------------------------


def _service(state: Path, sink: InMemoryTransport) -> ProcessorService:
    forwarder = Forwarder([("memory#0", sink)], FAST_FORWARD, sleep=lambda _: None)
    return ProcessorService(
        Pipeline([("noise_control", NoiseControl(Config(window_seconds=3600, burst=1)))]),
        forwarder,
        ServiceSection(listen="127.0.0.1:0", metrics=None, flush_interval_seconds=3600,
                       state_dir=str(state), tls=INSECURE_SERVER),
        Settings(grace_seconds=1.0))


def test_only_requests_that_change_held_state_pay_the_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    appends: list[int] = []
    real = Journal.append
    monkeypatch.setattr(Journal, "append",
                        lambda self, payloads: (appends.append(1), real(self, payloads))[1])
    service = _service(tmp_path, InMemoryTransport())
    with ServiceThread(service):
        endpoint = f"127.0.0.1:{service.grpc_port}"
        assert grpc_call(endpoint, samples.logs(5).SerializeToString())[0] == grpc.StatusCode.OK
        assert appends == []  # raw events only: nothing held changed
        body = _with_uids(samples.logs(1, 3), "h").SerializeToString()
        assert grpc_call(endpoint, body)[0] == grpc.StatusCode.OK
        assert appends == [1]  # on disk before the answer


def test_a_journal_that_cannot_be_written_answers_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: Journal, payloads: list[bytes]) -> None:
        raise OSError(28, "No space left on device")

    service = _service(tmp_path, InMemoryTransport())
    with ServiceThread(service):
        monkeypatch.setattr(Journal, "append", fail)
        body = _with_uids(samples.logs(1, 3), "i").SerializeToString()
        code, _, _ = grpc_call(f"127.0.0.1:{service.grpc_port}", body)
        assert code == grpc.StatusCode.UNAVAILABLE  # not acknowledged: the caller retries
        monkeypatch.undo()


def test_sigterm_with_the_next_hop_down_keeps_held_records_for_the_next_start(
        tmp_path: Path) -> None:
    down = InMemoryTransport()
    service = _service(tmp_path, down)
    thread = ServiceThread(service).start()
    body = _with_uids(samples.logs(0, 4), "j").SerializeToString()
    assert grpc_call(f"127.0.0.1:{service.grpc_port}", body)[0] == grpc.StatusCode.OK
    down.fail()
    before = sample("otelguard_dropped_total", stage="forward",
                    reason="shutdown_next_hop_unavailable")
    thread.stop()  # cannot forward the start and stop records: they stay in the journal
    assert sample("otelguard_dropped_total", stage="forward",
                  reason="shutdown_next_hop_unavailable") == before
    up = InMemoryTransport()
    service = _service(tmp_path, up)
    with ServiceThread(service) as running:
        running.call(service.flush_once())  # the first flush re-emits them
        assert len(up.logs) == 1
    held = [attrs_dict(rec.attributes) for req in up.logs for _, _, rec in iter_log_records(req)]
    assert _states(held) == [(semconv.NOISE_THROTTLE_START, 0), (semconv.NOISE_THROTTLE_STOP, 3)]
