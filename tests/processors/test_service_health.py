"""The processor service's health, over the real wire: the gRPC health service with grpc's own
client, ``/healthz`` and ``/readyz`` on the OTLP/HTTP port and on the metrics port
(docs/architecture.md#health)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2

from otelguard import telemetry
from otelguard.processors.config import ForwardSection, ServiceSection
from otelguard.processors.forward import Forwarder
from otelguard.processors.k8s.config import Config as K8sConfig
from otelguard.processors.k8s.processor import K8sEnricher
from otelguard.processors.k8s.source import ApiServerSource, InMemorySource
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver import ProcessorService, ServiceThread
from otelguard.processors.settings import Settings
from otelguard.transport.memory import InMemoryTransport
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT
from otelguard.transport.security import INSECURE_SERVER

from . import samples
from tests.support.endpoints import free_port
from tests.support.health import NAMES, grpc_health, http_get_json, readyz_detail
from tests.support.polling import wait_for

from .service_fixtures import running_service

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def test_grpc_health_serving_after_start_not_serving_once_stop_begins() -> None:
    pipeline = Pipeline([])
    cfg = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                         tls=INSECURE_SERVER)
    svc = ProcessorService(pipeline, Forwarder([("memory#0", InMemoryTransport())]), cfg,
                           Settings(grace_seconds=5.0))
    thread = ServiceThread(svc).start()
    try:
        endpoint = f"127.0.0.1:{svc.grpc_port}"
        for name in NAMES:
            assert grpc_health(endpoint, name) == health_pb2.HealthCheckResponse.SERVING, name
        assert grpc_health(endpoint, "no.such.Service") == grpc.StatusCode.NOT_FOUND
        status, body = http_get_json(svc.http_port or 0, "/readyz")
        assert status == 200 and body["status"] == "ready" and body["failing"] == []
        # stop() begins by draining: NOT_SERVING while the listeners still answer.
        thread.call(svc.health.draining())
        for name in NAMES:
            assert grpc_health(endpoint, name) == health_pb2.HealthCheckResponse.NOT_SERVING, name
        status, body = http_get_json(svc.http_port or 0, "/readyz")
        assert status == 503 and body["failing"] == ["pipeline"]
        assert http_get_json(svc.http_port or 0, "/healthz") == (200, {"status": "alive"})
    finally:
        thread.stop()


def test_grpc_health_not_serving_before_the_pipeline_started() -> None:
    """The servicer registered before start() flips it: never the library's default SERVING."""
    svc = ProcessorService(Pipeline([]), Forwarder([("memory#0", InMemoryTransport())]),
                           ServiceSection(tls=INSECURE_SERVER))

    async def fresh() -> list[int]:
        await svc.health.starting()
        return [(await svc.health.servicer.Check(
            health_pb2.HealthCheckRequest(service=n), None)).status for n in NAMES]

    assert asyncio.run(fresh()) == [health_pb2.HealthCheckResponse.NOT_SERVING] * 3
    assert [c.name for c in svc.health.checks() if not c.ok] == ["pipeline"]


def test_readyz_503_while_the_next_hop_is_down_and_200_once_it_is_up() -> None:
    hop_port = free_port()  # closed: nothing listens there yet
    target = OtlpGrpcTransport(f"127.0.0.1:{hop_port}", timeout_s=2, tls=INSECURE_CLIENT)
    forward = ForwardSection(timeout_seconds=1.0, max_attempts=1, down_seconds=0.5)
    with running_service(exporters=[("otlp#0", target)], forward=forward) as run:
        port = run.service.http_port or 0
        status, body = http_get_json(port, "/readyz")
        assert status == 200, body  # nothing tried yet: no reason to think the hop is down
        with grpc.insecure_channel(run.grpc_endpoint) as channel:
            call = channel.unary_unary(LOGS)
            with pytest.raises(grpc.RpcError) as err:
                call(samples.logs(3).SerializeToString(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        status, body = http_get_json(port, "/readyz")
        assert status == 503 and body["failing"] == ["next_hop:otlp#0"], body
        detail = {c["name"]: c for c in body["checks"]}["next_hop:otlp#0"]["detail"]
        assert "down after" in detail and "UNAVAILABLE" in detail
        # Still down after the fail-fast window: the service's probe finds nothing there.
        wait_for(lambda: "down after 2 failed" in readyz_detail(port, "next_hop:otlp#0"), timeout=10,
                 what="a failed probe")
        assert http_get_json(port, "/readyz")[0] == 503
        with running_service(grpc_port=hop_port) as hop:
            # No traffic to the service: its probe sees the hop back.
            wait_for(lambda: http_get_json(port, "/readyz")[0] == 200, timeout=30, what="/readyz 200")
            assert grpc_health(run.grpc_endpoint, "") == health_pb2.HealthCheckResponse.SERVING
            assert hop.sink.log_record_count() == 0  # the probe carries no records


def test_readyz_on_the_metrics_port_without_an_http_listener() -> None:
    """The checks beside /metrics, as processors/cli.py registers them (the only HTTP port
    without ``listen_http``)."""
    port = telemetry.serve("127.0.0.1", 0)
    cfg = ServiceSection(listen="127.0.0.1:0", listen_http=None, metrics=None, tls=INSECURE_SERVER)
    with running_service(service=cfg) as run:
        telemetry.set_readiness(run.service.health.checks)
        try:
            status, body = http_get_json(port, "/readyz")
            assert status == 200 and [c["name"] for c in body["checks"]] == [
                "pipeline", "next_hop:memory#0"]
            assert http_get_json(port, "/healthz") == (200, {"status": "alive"})
        finally:
            telemetry.set_readiness(None)
    status, body = http_get_json(port, "/readyz")
    assert status == 503 and body["failing"] == ["started"]


def test_k8s_stage_readiness_synced_or_given_up_with_a_reason() -> None:
    synced = K8sEnricher(K8sConfig(wait_for_sync_seconds=1), InMemorySource())
    with running_service(stages=[("k8s_attributes", synced)]) as run:
        status, body = http_get_json(run.service.http_port or 0, "/readyz")
        checks = {c["name"]: c for c in body["checks"]}
        assert status == 200 and checks["stage:k8s_attributes"]["detail"] == "cache synced"

    # A real API server client pointed at a closed port: the start-up wait gives up.
    from kubernetes import client

    conf = client.Configuration()
    conf.host = f"https://127.0.0.1:{free_port()}"
    source = ApiServerSource(client.ApiClient(conf), max_backoff_seconds=0.2)
    lost = K8sEnricher(K8sConfig(wait_for_sync_seconds=1), source)
    assert lost.readiness() == (False, "cache not synced yet")  # before start: not synced
    with running_service(stages=[("k8s_attributes", lost)]) as run:
        status, body = http_get_json(run.service.http_port or 0, "/readyz")
        check = {c["name"]: c for c in body["checks"]}["stage:k8s_attributes"]
        assert status == 200 and check["ok"], body
        assert check["detail"].startswith("gave up waiting: cache not synced after 1s")

