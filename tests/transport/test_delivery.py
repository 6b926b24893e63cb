"""Retry, spool and replay: nothing lost below the spool limit, drops counted beyond it."""

from __future__ import annotations

import time
from pathlib import Path

from otelguard.transport import Delivery, ExportResult, InMemoryTransport, Spool
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT
from tests.support.polling import wait_until
from tests.transport.batches import FAST, batches as _batches, dropped as _dropped
from tests.transport.receivers import GrpcReceiver

def test_retries_then_succeeds_without_spooling(tmp_path: Path) -> None:
    t = InMemoryTransport()
    t.fail(count=2)
    sleeps: list[float] = []
    d = Delivery(t, Spool(str(tmp_path), 10**6), FAST, sleep=sleeps.append)
    data, n = _batches(1)[0]
    assert d.send_logs(data, n)
    assert t.attempts == 3 and t.log_record_count() == n and len(d.spool or []) == 0
    assert sleeps == [0.01, 0.02]  # exponential backoff


def test_non_retryable_failure_is_dropped_and_counted(tmp_path: Path) -> None:
    t = InMemoryTransport()
    t.fail(ExportResult.failure("bad request", "invalid_argument", False), count=1)
    d = Delivery(t, Spool(str(tmp_path), 10**6), FAST, sleep=lambda s: None)
    before = _dropped("export", "invalid_argument")
    data, n = _batches(1)[0]
    assert not d.send_logs(data, n)
    assert t.attempts == 1 and _dropped("export", "invalid_argument") == before + n


def test_refused_credentials_spool_and_count_a_failure_then_replay(tmp_path: Path) -> None:
    """UNAUTHENTICATED is final for the request as sent, but a rotated token fixes it: the
    records wait in the spool (no retry, no drop) and go out once the endpoint takes them."""
    from otelguard import telemetry

    t = InMemoryTransport()
    t.fail(ExportResult.failure("no token", "unauthenticated", False, hold=True), count=1)
    d = Delivery(t, Spool(str(tmp_path), 10**6), FAST, sleep=lambda s: None)
    failures = telemetry.export_failures.labels("export", "unauthenticated")
    before_failures = failures._value.get()
    before_drops = _dropped("export", "unauthenticated")
    data, n = _batches(1)[0]
    assert d.send_logs(data, n)
    assert t.attempts == 1 and d.backlog == 1 and t.log_record_count() == 0
    assert failures._value.get() == before_failures + 1
    assert _dropped("export", "unauthenticated") == before_drops
    assert wait_until(lambda: d.replay() == n, timeout=5)  # after the down window
    assert t.log_record_count() == n and d.backlog == 0


def test_partial_success_rejections_are_counted(tmp_path: Path) -> None:
    class Rejecting(InMemoryTransport):
        def export_logs(self, req):  # type: ignore[no-untyped-def]
            super().export_logs(req)
            return ExportResult.success(rejected=2, error="too old")

    before = _dropped("export", "rejected")
    d = Delivery(Rejecting(), None, FAST)
    assert d.send_logs(*_batches(1)[0])
    assert _dropped("export", "rejected") == before + 2


def test_endpoint_down_spools_then_replays_everything_exactly_once(tmp_path: Path) -> None:
    """A real gRPC receiver goes away and comes back on the same port."""
    receiver = GrpcReceiver().start()
    spool = Spool(str(tmp_path / "spool"), 50 * 1024 * 1024)
    d = Delivery(OtlpGrpcTransport(receiver.endpoint, timeout_s=2,
                                   tls=INSECURE_CLIENT), spool, FAST, sleep=time.sleep)
    batches = _batches(30)
    total = sum(n for _, n in batches)
    for data, n in batches[:5]:
        assert d.send_logs(data, n)
    assert receiver.log_records() == sum(n for _, n in batches[:5])
    receiver.stop()
    for data, n in batches[5:20]:
        assert d.send_logs(data, n)  # spooled, not lost
    assert len(spool) == 15 and spool.records == sum(n for _, n in batches[5:20])
    receiver = GrpcReceiver(receiver.port).start()
    try:
        time.sleep(0.1)  # past the down window
        for data, n in batches[20:]:
            assert d.send_logs(data, n)
        assert wait_until(lambda: d.replay() >= 0 and len(spool) == 0, 10.0, interval=0.05)
        assert receiver.log_records() == total - sum(n for _, n in batches[:5])
        # order kept: the spooled batches arrived before the new ones
        pids = [r.log_records[0].attributes[0].value.int_value
                for req in receiver.logs for r in [req.resource_logs[0].scope_logs[0]]]
        assert pids == sorted(pids)
    finally:
        receiver.stop()
        d.shutdown()
    assert list((tmp_path / "spool").iterdir()) == []


def test_spool_limit_drops_and_counts_and_survives_restart(tmp_path: Path) -> None:
    batches = _batches(10)
    size = len(batches[0][0])
    t = InMemoryTransport()
    t.fail()  # down until recover()
    spool = Spool(str(tmp_path), max_bytes=size * 4 + size // 2)
    d = Delivery(t, spool, FAST, sleep=lambda s: None)
    before = _dropped("spool", "full")
    accepted = [d.send_logs(data, n) for data, n in batches]
    assert accepted == [True] * 4 + [False] * 6
    assert _dropped("spool", "full") == before + sum(n for _, n in batches[4:])
    # a restarted agent finds the spool as it was
    spool2 = Spool(str(tmp_path), max_bytes=size * 10)
    assert len(spool2) == 4 and spool2.records == sum(n for _, n in batches[:4])
    t.recover()
    d2 = Delivery(t, spool2, FAST)
    assert d2.replay() == sum(n for _, n in batches[:4])
    assert t.log_record_count() == sum(n for _, n in batches[:4]) and len(spool2) == 0


def test_without_spool_a_down_endpoint_drops_and_counts() -> None:
    t = InMemoryTransport()
    t.fail(ExportResult.failure("down", "unavailable", True))
    before = _dropped("export", "unavailable")
    d = Delivery(t, None, FAST, sleep=lambda s: None)
    data, n = _batches(1)[0]
    assert not d.send_logs(data, n)
    assert _dropped("export", "unavailable") == before + n


def test_long_retry_after_spools_immediately(tmp_path: Path) -> None:
    t = InMemoryTransport()
    t.fail(ExportResult.failure("slow down", "resource_exhausted", True, retry_after_s=60), count=1)
    sleeps: list[float] = []
    d = Delivery(t, Spool(str(tmp_path), 10**6), FAST, sleep=sleeps.append)
    assert d.send_logs(*_batches(1)[0])
    assert sleeps == [] and t.attempts == 1 and len(d.spool or []) == 1


def test_a_spool_file_removed_behind_our_back_is_counted_not_fatal(tmp_path: Path) -> None:
    t = InMemoryTransport()
    t.fail()
    spool = Spool(str(tmp_path), 10**7)
    d = Delivery(t, spool, FAST, sleep=lambda s: None)
    batches = _batches(3)
    for data, n in batches:
        d.send_logs(data, n)
    assert len(spool) == 3
    first = spool.oldest()
    assert first is not None
    Path(first.path).unlink()
    t.recover()
    before = _dropped("export", "spool_read")
    time.sleep(0.06)  # past the down window
    d.replay()
    assert len(spool) == 0 and t.log_record_count() == batches[1][1] + batches[2][1]
    assert _dropped("export", "spool_read") == before + batches[0][1]
