"""Forwarder: retries with backoff, hop marked down, fast failure while down, permanent refusals."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otelguard.processors.config import ForwardSection
from otelguard.processors.errors import RequestError
from otelguard.processors.forward import Forwarder
from otelguard.transport.contract import ExportResult
from otelguard.transport.memory import InMemoryTransport
from tests.support.fake_time import FakeTime

from tests.support.endpoints import grpc_call
from tests.support.metrics import sample
from . import samples
from .service_fixtures import running_service


SETTINGS = ForwardSection(timeout_seconds=10, max_attempts=4, initial_backoff_seconds=0.1,
                          max_backoff_seconds=0.3, down_seconds=5)


def _forwarder(hop: InMemoryTransport, t: FakeTime, name: str = "m#0") -> Forwarder:
    return Forwarder([(name, hop)], SETTINGS, clock=t.clock, sleep=t.sleep)


def _retries(exporter: str) -> float:
    return sample("otelguard_processor_forward_retries_total", exporter=exporter)


def _rejected() -> float:
    return sample("otelguard_dropped_total", stage="forward", reason="rejected_by_next_hop")


def test_transient_failures_are_retried_with_growing_backoff() -> None:
    hop, t = InMemoryTransport(), FakeTime()
    hop.fail(count=3)
    before = _retries("fw1")
    report = _forwarder(hop, t, "fw1").forward(samples.logs(4))
    assert report.rejected == 0 and hop.log_record_count() == 4 and hop.attempts == 4
    assert len(t.sleeps) == 3
    # jittered between half and all of 0.1, 0.2, 0.3 (capped)
    for wait, base in zip(t.sleeps, (0.1, 0.2, 0.3)):
        assert base / 2 <= wait <= base
    assert _retries("fw1") == before + 3


def test_hop_down_fails_fast_until_the_window_passes() -> None:
    hop, t = InMemoryTransport(), FakeTime()
    hop.fail()
    fw = _forwarder(hop, t, "fw2")
    with pytest.raises(RequestError) as info:
        fw.forward(samples.logs(2))
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.http_status == 503
    assert info.value.retry_after and info.value.retry_after >= 1
    attempts = hop.attempts
    assert attempts == SETTINGS.max_attempts
    t.now += 1
    with pytest.raises(RequestError, match="is down"):
        fw.forward(samples.logs(2))
    assert hop.attempts == attempts  # not touched while down
    hop.recover()
    t.now += 5
    assert fw.forward(samples.logs(2)).rejected == 0
    assert hop.log_record_count() == 2  # only the accepted batch, once


def test_permanent_refusal_is_dropped_counted_and_reported() -> None:
    hop, t = InMemoryTransport(), FakeTime()
    hop.fail(ExportResult.failure("bad data", "invalid_argument", retryable=False), count=1)
    before = _rejected()
    report = _forwarder(hop, t).forward(samples.logs(3))
    assert report.rejected == 3 and "bad data" in report.message
    assert hop.attempts == 1 and t.sleeps == []
    assert _rejected() == before + 3


def test_refused_credentials_answer_unavailable_so_the_caller_keeps_the_data() -> None:
    """The next hop refuses this service's token: not retried (it cannot help as is), not
    dropped (a rotated token fixes it): the caller hears UNAVAILABLE and keeps the records."""
    hop, t = InMemoryTransport(), FakeTime()
    hop.fail(ExportResult.failure("bad token", "unauthenticated", False, hold=True), count=1)
    before_rejected = _rejected()
    before = sample("otelguard_processor_forward_failures_total", exporter="m#0",
                    reason="credentials")
    forwarder = _forwarder(hop, t)
    with pytest.raises(RequestError) as refused:
        forwarder.forward(samples.logs(3))
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE and "bad token" in str(refused.value)
    assert hop.attempts == 1 and _rejected() == before_rejected
    assert sample("otelguard_processor_forward_failures_total", exporter="m#0",
                  reason="credentials") == before + 1
    t.sleep(SETTINGS.down_seconds + 1)
    assert forwarder.forward(samples.logs(3)).rejected == 0  # the token was rotated meanwhile
    assert hop.log_record_count() == 3


def test_next_hop_partial_success_reaches_the_caller() -> None:
    hop = InMemoryTransport()
    hop.fail(ExportResult.success(rejected=2, error="2 too old"), count=1)
    with running_service(exporters=[("memory#0", hop)]) as run:
        code, resp, _ = grpc_call(run.grpc_endpoint, samples.logs(5).SerializeToString())
        assert code == grpc.StatusCode.OK
        partial = ExportLogsServiceResponse.FromString(resp).partial_success
        assert partial.rejected_log_records == 2 and "2 too old" in partial.error_message


def test_empty_batch_is_not_sent() -> None:
    hop, t = InMemoryTransport(), FakeTime()
    assert _forwarder(hop, t).forward(samples.logs(0)).rejected == 0
    assert hop.attempts == 0
