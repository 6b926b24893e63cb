"""k8s_attributes' held Resources survive a crash through the journal (``service.state_dir``).

A "crash" is the stage and pipeline dropped without drain or shutdown, as a SIGKILL would; a new
stage on the same state directory re-releases exactly what was held (enriched if the pod is known
by then, else unenriched and counted), what was settled is not sent again, a released but
unsettled Resource is sent again (a duplicate, never a loss), a torn tail is ignored and
counted, and only requests that held something ask for a persist. Clocks injected; no sleeps.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Optional

import grpc
import pytest

from otelguard import semconv
from otelguard.otlp.messages import PyValue, attrs_dict
from otelguard.processors.config import ServiceSection
from otelguard.processors.forward import Forwarder
from otelguard.processors.journal import Journal
from otelguard.processors.k8s import Config, K8sEnricher
from otelguard.processors.k8s.processor import DROP_STAGE, TYPE_NAME
from otelguard.processors.k8s.source import InMemorySource, Kind
from otelguard.processors.pipeline import Pipeline, PipelineResult
from otelguard.processors.receiver import ProcessorService, ServiceThread
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Batch
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.security import INSECURE_SERVER

from tests.processors.k8s import objects as o
from tests.processors.service_fixtures import FAST_FORWARD
from tests.support.endpoints import grpc_call
from tests.support.metrics import sample

NS = "shop"
LATE = "c" * 64  # its pod appears only after the crash
OTHER = "d" * 64  # a container of a known pod that the pod's status never lists
COMPACT = 1 << 20


class Clocks:
    """Monotonic and wall clock, moved together."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def _pod(src: InMemorySource, name: str, cid: str, uid: Optional[str] = None) -> str:
    uid = uid or str(uuid.uuid4())
    src.put(Kind.POD, o.running(o.pod(NS, name, uid=uid), "10.1.0.9", {"main": cid}))
    return uid


def _stage(state: Path, src: InMemorySource, clocks: Clocks,
           hold: float = 2.0) -> tuple[Pipeline, K8sEnricher]:
    e = K8sEnricher(Config(wait_for_sync_seconds=0, hold_seconds=hold, peers=False), src,
                    lambda: clocks.mono, lambda: clocks.wall)
    pipeline = Pipeline([(TYPE_NAME, e)])
    pipeline.open_state(state, COMPACT)
    pipeline.start()
    return pipeline, e


def _batch(res: dict[str, PyValue], uids: list[str]) -> Batch:
    return o.logs((res, [{semconv.LOG_RECORD_UID: u} for u in uids]))


def _out(batches: list[Batch]) -> list[tuple[Any, Any, Any]]:
    """(record uid, pod name, container name) of every record in ``batches``."""
    got = []
    for b in batches:
        for rl in b.resource_logs:  # type: ignore[union-attr]
            res = attrs_dict(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    got.append((attrs_dict(rec.attributes)[semconv.LOG_RECORD_UID],
                                res.get(semconv.K8S_POD_NAME), res.get(semconv.K8S_CONTAINER_NAME)))
    return got


def _dropped(reason: str, stage: str = DROP_STAGE) -> float:
    return sample("otelguard_dropped_total", stage=stage, reason=reason)


def _forwarded(pipeline: Pipeline, result: PipelineResult) -> None:
    """What the service does once a request's batch was forwarded."""
    pipeline.settle_request(result)
    pipeline.persist()


def test_a_crash_loses_no_held_resource_and_the_next_start_releases_exactly_those(
        tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    pipeline, e = _stage(tmp_path, src, clocks)
    known = _pod(src, "known", "a" * 64)
    result = pipeline.process(_batch({semconv.CONTAINER_ID: LATE}, ["l1", "l2"]))
    assert result.state_changed and result.records_out == 0 and e.held_count == 1
    pipeline.persist()  # before the OK
    result = pipeline.process(_batch({semconv.CONTAINER_ID: OTHER, semconv.K8S_POD_UID: known},
                                     ["o1"]))
    assert result.state_changed
    pipeline.persist()
    clocks.advance(0.5)
    # SIGKILL: no drain, no shutdown. The late pod appears while the service is down.
    _pod(src, "late", LATE)
    clocks.advance(5)
    before = _dropped("container_not_found")
    again, e2 = _stage(tmp_path, src, clocks)
    assert e2.held_count == 2
    released = _out(again.flush())
    assert sorted(released) == [("l1", "late", "main"), ("l2", "late", "main"),
                                ("o1", "known", None)]
    assert _dropped("container_not_found") == before + 1  # o1: pod known, container not
    again.persist()
    again.settle(again.flushes)  # forwarded
    again.persist()
    third, e3 = _stage(tmp_path, src, clocks)
    assert e3.held_count == 0 and third.flush() == []


def test_only_requests_that_hold_something_ask_for_a_persist(tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    pipeline, _ = _stage(tmp_path, src, clocks)
    _pod(src, "known", "a" * 64)
    assert not pipeline.process(_batch({semconv.CONTAINER_ID: "a" * 64}, ["k"])).state_changed
    assert not pipeline.process(_batch({semconv.HOST_PROCESS: True}, ["h"])).state_changed
    assert pipeline.process(_batch({semconv.CONTAINER_ID: LATE}, ["l"])).state_changed


def test_a_resource_released_into_a_request_stays_until_that_forward_finished(
        tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    pipeline, _ = _stage(tmp_path, src, clocks)
    pipeline.process(_batch({semconv.CONTAINER_ID: LATE}, ["l1"]))
    pipeline.persist()
    _pod(src, "late", LATE)
    # The next request of the same signal carries it, first; the service has not forwarded it
    # yet when the process dies: the next start sends it again (a duplicate, by uid).
    result = pipeline.process(_batch({semconv.HOST_PROCESS: True}, ["h1"]))
    assert [u for u, _, _ in _out([result.batch])] == ["l1", "h1"]
    assert result.request_releases and not result.state_changed
    pipeline.persist()
    again, _ = _stage(tmp_path, src, clocks)
    assert _out(again.flush()) == [("l1", "late", "main")]
    # This time the request's forward finishes before the crash: nothing comes back.
    result = again.process(_batch({semconv.CONTAINER_ID: LATE + "0"}, ["x"]))  # held, unknown
    again.persist()
    again.settle(again.flushes)
    _pod(src, "later", LATE + "0")
    result = again.process(_batch({semconv.HOST_PROCESS: True}, ["h2"]))
    assert [u for u, _, _ in _out([result.batch])] == ["x", "h2"]
    _forwarded(again, result)
    third, e3 = _stage(tmp_path, src, clocks)
    assert e3.held_count == 0 and third.flush() == []


def test_recovered_holds_wait_at_most_their_remaining_time(tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    pipeline, _ = _stage(tmp_path, src, clocks, hold=10.0)
    pipeline.process(_batch({semconv.CONTAINER_ID: LATE}, ["l1"]))
    pipeline.persist()
    clocks.advance(4)  # a quick restart: 6 s of its hold are left
    again, e2 = _stage(tmp_path, src, clocks, hold=10.0)
    assert again.flush() == [] and e2.held_count == 1
    clocks.advance(5)
    assert again.flush() == []
    clocks.advance(1.5)
    before = _dropped("pod_not_found")
    assert _out(again.flush()) == [("l1", None, None)]  # never known: unenriched, counted
    assert _dropped("pod_not_found") == before + 1
    # a restart with a shorter hold_seconds caps what is left
    pipeline3, _ = _stage(tmp_path / "b", src, clocks, hold=60.0)
    pipeline3.process(_batch({semconv.CONTAINER_ID: OTHER}, ["o1"]))
    pipeline3.persist()
    again3, _ = _stage(tmp_path / "b", src, clocks, hold=1.0)
    assert again3.flush() == []
    clocks.advance(1.01)
    assert _out(again3.flush()) == [("o1", None, None)]


def test_a_torn_tail_is_ignored_and_counted(tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    pipeline, _ = _stage(tmp_path, src, clocks)
    pipeline.process(_batch({semconv.CONTAINER_ID: LATE}, ["l1"]))
    pipeline.persist()
    journal = tmp_path / f"{TYPE_NAME}.journal"
    good = journal.stat().st_size
    pipeline.process(_batch({semconv.CONTAINER_ID: OTHER}, ["o1", "o2"]))
    pipeline.persist()
    data = journal.read_bytes()
    journal.write_bytes(data[:good + (len(data) - good) // 2])  # the last write torn
    before = _dropped("journal_torn", TYPE_NAME)
    again, e2 = _stage(tmp_path, src, clocks)
    assert _dropped("journal_torn", TYPE_NAME) == before + 1
    assert e2.held_count == 1
    clocks.advance(3)
    assert [u for u, _, _ in _out(again.flush())] == ["l1"]
    journal.write_bytes(b"\x01" * 11)  # garbage only: an empty start, counted, no crash
    third, e3 = _stage(tmp_path, src, clocks)
    assert e3.held_count == 0 and _dropped("journal_torn", TYPE_NAME) == before + 2


def test_spans_and_compaction(tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    e = K8sEnricher(Config(wait_for_sync_seconds=0, hold_seconds=2.0, peers=False), src,
                    lambda: clocks.mono, lambda: clocks.wall)
    pipeline = Pipeline([(TYPE_NAME, e)])
    pipeline.open_state(tmp_path, 8 * 1024)
    pipeline.start()
    journal = tmp_path / f"{TYPE_NAME}.journal"
    sizes = []
    for i in range(150):  # each held, then released by the flush timer and forwarded
        pipeline.process(o.spans(({semconv.CONTAINER_ID: f"{i:064x}"}, [{"i": i}])))
        pipeline.persist()
        clocks.advance(3)
        assert len(pipeline.flush()) == 1
        pipeline.settle(pipeline.flushes)
        pipeline.persist()
        sizes.append(journal.stat().st_size)
    assert max(sizes) < 32 * 1024 < sum(sizes) // 10  # rewritten, not grown without bound
    pipeline.process(o.spans(({semconv.CONTAINER_ID: LATE}, [{"i": -1}])))
    pipeline.persist()
    again, e2 = _stage(tmp_path, src, clocks)
    clocks.advance(3)
    (batch,) = again.flush()
    assert [attrs_dict(rs.resource.attributes)[semconv.CONTAINER_ID]
            for rs in batch.resource_spans] == [LATE]  # type: ignore[union-attr]


def test_without_a_journal_nothing_changes(tmp_path: Path) -> None:
    src, clocks = InMemorySource(), Clocks()
    e = K8sEnricher(Config(wait_for_sync_seconds=0, hold_seconds=2.0, peers=False), src,
                    lambda: clocks.mono, lambda: clocks.wall)
    pipeline = Pipeline([(TYPE_NAME, e)])
    pipeline.start()
    result = pipeline.process(_batch({semconv.CONTAINER_ID: LATE}, ["l1"]))
    assert not result.state_changed and e.held_count == 1 and not pipeline.journaled
    _pod(src, "late", LATE)
    result = pipeline.process(_batch({semconv.HOST_PROCESS: True}, ["h1"]))
    assert result.request_releases == () and result.records_released == 1
    assert list(tmp_path.iterdir()) == []


# --- in the service -----------------------------------------------------------------------------


def test_in_the_service_a_hold_is_on_disk_before_the_ok_and_a_lost_release_is_settled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    appends: list[int] = []
    real = Journal.append
    monkeypatch.setattr(Journal, "append",
                        lambda self, payloads: (appends.append(1), real(self, payloads))[1])
    src, clocks = InMemorySource(), Clocks()
    _pod(src, "known", "a" * 64)
    sink = InMemoryTransport()
    e = K8sEnricher(Config(wait_for_sync_seconds=0, hold_seconds=60, peers=False), src,
                    lambda: clocks.mono, lambda: clocks.wall)
    service = ProcessorService(
        Pipeline([(TYPE_NAME, e)]),
        Forwarder([("memory#0", sink)], FAST_FORWARD, sleep=lambda _: None),
        ServiceSection(listen="127.0.0.1:0", metrics=None, flush_interval_seconds=3600,
                       state_dir=str(tmp_path), tls=INSECURE_SERVER),
        Settings(grace_seconds=1.0))
    with ServiceThread(service) as running:
        endpoint = f"127.0.0.1:{service.grpc_port}"
        known = _batch({semconv.CONTAINER_ID: "a" * 64}, ["k1"]).SerializeToString()
        assert grpc_call(endpoint, known)[0] == grpc.StatusCode.OK
        assert appends == []  # nothing held: no fsync
        late = _batch({semconv.CONTAINER_ID: LATE}, ["l1", "l2"]).SerializeToString()
        assert grpc_call(endpoint, late)[0] == grpc.StatusCode.OK
        assert appends == [1] and e.held_count == 1  # on disk before the answer
        # The pod arrives; the next request carries the held Resource and its forward fails:
        # the caller retries its own record, the held ones are counted and settled.
        _pod(src, "late", LATE)
        sink.fail()
        before = sample("otelguard_dropped_total", stage="forward",
                        reason="held_next_hop_unavailable")
        code = grpc_call(endpoint, known)[0]
        assert code == grpc.StatusCode.UNAVAILABLE
        assert sample("otelguard_dropped_total", stage="forward",
                      reason="held_next_hop_unavailable") == before + 2
        sink.recover()
        running.call(service.flush_once())  # writes the settlement
    again, e2 = _stage(tmp_path, src, clocks)
    assert e2.held_count == 0 and again.flush() == []
