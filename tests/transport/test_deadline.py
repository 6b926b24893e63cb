"""A hung endpoint (a real TCP server on 127.0.0.1 that accepts and never answers) cannot stall
the sender: every export call ends as a retryable failure at its deadline, the Delivery tries it
once, spools the request and keeps the next ones off the endpoint; nothing is lost.

Waits are bounded generously (a loaded 2-core machine); what is asserted exactly is the number
of calls the hung endpoint costs, not how fast they end."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import pytest

from otelguard.transport import Delivery, ExportResult, Spool
from otelguard.transport.contract import LogsPayload, TracesPayload, Transport
from otelguard.transport.delivery import DELIVERY_RETRY
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.otlp_http import OtlpHttpTransport
from otelguard.transport.security import INSECURE_CLIENT
from tests.transport.receivers import GrpcReceiver, HttpReceiver, HungServer
from tests.support.polling import wait_until
from tests.transport.batches import batches as _batches

DEADLINE_S = 1.0
BOUND_S = 30.0  # how long a test waits before it calls the call stuck


class Counting:
    """A Transport that counts the calls it passes on."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def export_logs(self, req: LogsPayload) -> ExportResult:
        self.calls += 1
        return self.inner.export_logs(req)

    def export_traces(self, req: TracesPayload) -> ExportResult:
        self.calls += 1
        return self.inner.export_traces(req)

    def shutdown(self) -> None:
        self.inner.shutdown()


def _bounded(call: Callable[[], object]) -> tuple[object, float]:
    """Run ``call`` in a thread; its result and duration, or a failure if still running after
    BOUND_S (a stuck call must fail the test, not hang the suite)."""
    out: list[object] = []
    start = time.monotonic()
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t.start()
    t.join(BOUND_S)
    assert not t.is_alive(), f"the call was still blocked after {BOUND_S} s"
    return out[0], time.monotonic() - start


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.stop()


def _transport(kind: str, server: Union[HungServer, GrpcReceiver, HttpReceiver]) -> Transport:
    if kind == "grpc":
        return OtlpGrpcTransport(f"127.0.0.1:{server.port}", timeout_s=DEADLINE_S,
                                 tls=INSECURE_CLIENT)
    return OtlpHttpTransport(f"http://127.0.0.1:{server.port}", timeout_s=DEADLINE_S,
                             tls=INSECURE_CLIENT)


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_an_export_to_a_hung_endpoint_fails_retryably_at_its_deadline(
        hung: HungServer, kind: str) -> None:
    t = _transport(kind, hung)
    data, _ = _batches(1)[0]
    try:
        result, took = _bounded(lambda: t.export_logs(data))
    finally:
        t.shutdown()
    assert isinstance(result, ExportResult)
    assert not result.ok and result.retryable and result.reason == "deadline_exceeded", result
    assert took >= DEADLINE_S * 0.9  # it did wait for an answer: the server accepted
    assert hung.accepted >= 1


def test_an_http_server_that_trickles_its_answer_is_cut_at_the_deadline() -> None:
    """A socket timeout bounds each recv, not the call: a byte every 0.1 s would hold it forever."""
    server = HungServer(trickle=True)
    t = OtlpHttpTransport(server.url, timeout_s=DEADLINE_S, tls=INSECURE_CLIENT)
    try:
        result, _ = _bounded(lambda: t.export_logs(_batches(1)[0][0]))
    finally:
        t.shutdown()
        server.stop()
    assert isinstance(result, ExportResult)
    assert not result.ok and result.retryable and result.reason == "deadline_exceeded", result


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_hung_endpoint_costs_one_call_then_spools_and_nothing_is_lost(
        tmp_path: Path, kind: str) -> None:
    hung = HungServer()
    port = hung.port
    transport = Counting(_transport(kind, hung))
    spool = Spool(str(tmp_path / "spool"), 10**7)
    d = Delivery(transport, spool, DELIVERY_RETRY, deadline_s=DEADLINE_S)
    batches = _batches(4)
    receiver: Optional[Union[GrpcReceiver, HttpReceiver]] = None
    try:
        accepted, _ = _bounded(lambda: [d.send_logs(data, n) for data, n in batches])
        assert accepted == [True] * 4  # spooled, not dropped
        # one call met the hung endpoint and was not retried past the deadline; the down window
        # kept the other three off it
        assert transport.calls == 1
        assert len(spool) == 4 and spool.records == sum(n for _, n in batches)
        hung.stop()
        receiver = GrpcReceiver(port).start() if kind == "grpc" else HttpReceiver(port)
        assert wait_until(lambda: d.replay() >= 0 and len(spool) == 0, BOUND_S)
    finally:
        d.shutdown()
        hung.stop()
        if receiver is not None:
            receiver.stop()
    if isinstance(receiver, GrpcReceiver):
        assert receiver.log_records() == sum(n for _, n in batches)
    else:
        assert receiver is not None and len(receiver.requests) == 4
        assert [body for _, _, body in receiver.requests] == [data for data, _ in batches]
    assert d.stats.replayed_records == sum(n for _, n in batches) and d.stats.dropped_records == 0
