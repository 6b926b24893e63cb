"""AgentHealth's ``exporter`` check against a real BatchExporter and a real OTLP/gRPC transport:
a next hop that accepts TCP but never answers holds a send, the check fails with the reason,
and passes again once the Delivery gave up on that send (docs/architecture.md#health). The
probe and ring-buffer checks need the loaded sensor: tests/exporter/test_agent_health.py."""

from __future__ import annotations

import socket
from pathlib import Path

from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from otelguard.exporter.batch import BatchExporter
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.config import ExporterConfig
from otelguard.exporter.health import AgentHealth
from otelguard.exporter.settings import NodeIdentity
from otelguard.telemetry import Check
from otelguard.transport import Delivery, RetryPolicy, Spool
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT
from tests.exporter.scenario import shell_session
from tests.exporter.scenario import QueueSource
from tests.support.polling import wait_until


def _exporter(src: QueueSource, delivery: Delivery) -> BatchExporter:
    return BatchExporter(src, delivery, ExporterConfig(flush_interval_s=0.1, drain_timeout_s=0.05),
                         OtlpBuilder(NodeIdentity("n", "h", "i")))


def _exporter_check(health: AgentHealth) -> Check:
    (check,) = [c for c in health.checks() if c.name == "exporter"]
    return check


def test_exporter_check_fails_while_a_send_is_stuck_and_recovers() -> None:
    with socket.socket() as blackhole:  # the kernel completes the handshake; nobody answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        transport = OtlpGrpcTransport(f"127.0.0.1:{blackhole.getsockname()[1]}", timeout_s=5,
                                      tls=INSECURE_CLIENT)
        delivery = Delivery(transport, None, RetryPolicy(max_attempts=1, down_min_s=60,
                                                         down_max_s=60))
        src = QueueSource()
        exporter = _exporter(src, delivery)
        sensor = Sensor(SensorConfig())  # not started: its checks fail, this one is the subject
        health = AgentHealth(sensor, exporter, export_max_age_s=1.0)
        assert _exporter_check(health) == Check("exporter", False, "not started yet")
        exporter.start()
        try:
            assert wait_until(lambda: _exporter_check(health).ok, 10), _exporter_check(health)
            for event in shell_session():
                src.q.put(event)
            assert wait_until(lambda: not _exporter_check(health).ok, 10), "never seen stuck"
            assert "a send to the next hop is stuck" in _exporter_check(health).detail
            # The gRPC deadline ends the send, the Delivery marks the hop down and drops (no
            # spool): the loop cycles again, now failing fast.
            assert wait_until(lambda: _exporter_check(health).ok, 20), _exporter_check(health)
            assert delivery.stats.dropped_records > 0
            assert [c.name for c in health.checks() if not c.ok] == ["probes", "ring_buffer"]
        finally:
            exporter.stop(timeout_s=10)


def test_exporter_check_warns_while_records_wait_in_the_spool(tmp_path: Path) -> None:
    """Nothing listens on the next hop's port: the records spool, the agent stays ready (a
    restart would not help) and the check says so with the backlog and the hop's error."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        transport = OtlpGrpcTransport(f"127.0.0.1:{port}", timeout_s=2, tls=INSECURE_CLIENT)
        delivery = Delivery(transport, Spool(str(tmp_path / "spool"), 1 << 24),
                            RetryPolicy(max_attempts=1, down_min_s=60, down_max_s=60))
        src = QueueSource()
        exporter = _exporter(src, delivery)
        health = AgentHealth(Sensor(SensorConfig()), exporter)
        exporter.start()
        try:
            assert wait_until(lambda: _exporter_check(health).ok, 10), _exporter_check(health)
            assert not _exporter_check(health).warn
            for event in shell_session():
                src.q.put(event)
            assert wait_until(lambda: _exporter_check(health).warn, 15), _exporter_check(health)
            check = _exporter_check(health)
            assert check.ok and "requests wait in the spool" in check.detail
            assert "UNAVAILABLE" in check.detail, check.detail
            assert delivery.stats.dropped_records == 0 and delivery.backlog > 0
        finally:
            exporter.stop(timeout_s=10)
