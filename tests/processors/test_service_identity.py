"""Sender identity at the real in-process service: the agent's builder signs each Resource with
its node token; the receiver marks it verified, strips the MAC, and with ``require`` refuses
unsigned and forged Resources (per Resource, counted; a request with none valid is 401)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import attrs_dict, set_attr
from otelguard.processors import metrics
from otelguard.processors.config import IdentitySection, ServiceSection
from otelguard.transport.identity import ResourceSigner
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.security import INSECURE_CLIENT, INSECURE_SERVER

from tests.exporter.scenario import shell_session
from tests.support.metrics import sample
from .service_fixtures import Running, running_service

NODE_A = NodeIdentity("node-a", "node-a", "")


def _signed(tmp_path: Path, node: NodeIdentity = NODE_A, token: str = "token-a") -> bytes:
    path = tmp_path / f"token-{node.node_name}-{token}"
    path.write_text(token + "\n")
    builder = OtlpBuilder(node, signer=ResourceSigner(node.node_name, str(path)))
    return builder.logs_bytes(shell_session())


def _request(raw: bytes) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    req.ParseFromString(raw)
    return req


@pytest.fixture
def node_tokens(tmp_path: Path) -> Path:
    path = tmp_path / "node-tokens"
    path.write_text("node-a token-a\nnode-b token-b\n")
    return path


def _service(node_tokens: Path, require: bool) -> ServiceSection:
    return ServiceSection(listen="127.0.0.1:0", metrics=None, flush_interval_seconds=0.2,
                          tls=INSECURE_SERVER,
                          identity=IdentitySection(node_token_file=str(node_tokens),
                                                   require=require))


@pytest.fixture
def marking(node_tokens: Path) -> Iterator[Running]:
    with running_service(service=_service(node_tokens, require=False)) as running:
        yield running


@pytest.fixture
def requiring(node_tokens: Path) -> Iterator[Running]:
    with running_service(service=_service(node_tokens, require=True)) as running:
        yield running


def _send(running: Running, req: ExportLogsServiceRequest) -> tuple[bool, str, int]:
    t = OtlpGrpcTransport(running.grpc_endpoint, timeout_s=10, tls=INSECURE_CLIENT)
    try:
        r = t.export_logs(req)
    finally:
        t.shutdown()
    return r.ok, r.reason, r.rejected


def _forwarded(running: Running) -> list[dict[str, object]]:
    return [attrs_dict(rl.resource.attributes) for req in running.sink.logs
            for rl in req.resource_logs]


def test_signed_resources_are_verified_and_the_mac_stripped(marking: Running,
                                                            tmp_path: Path) -> None:
    req = _request(_signed(tmp_path))
    assert all(semconv.SENDER_MAC in attrs_dict(rl.resource.attributes)
               for rl in req.resource_logs)
    assert _send(marking, req)[0]
    out = _forwarded(marking)
    assert len(out) == len(req.resource_logs) >= 2  # a container and the host
    for attrs in out:
        assert attrs[semconv.SENDER_VERIFIED] is True
        assert attrs[semconv.SENDER_NODE] == "node-a"
        assert semconv.SENDER_MAC not in attrs and semconv.SENDER_NONCE not in attrs


def test_unsigned_and_forged_are_marked_unverified(marking: Running, tmp_path: Path) -> None:
    unsigned = _request(OtlpBuilder(NODE_A).logs_bytes(shell_session()))
    for rl in unsigned.resource_logs:  # a sender cannot mark itself verified
        set_attr(rl.resource.attributes, semconv.SENDER_VERIFIED, True)
    forged = _request(_signed(tmp_path))
    for rl in forged.resource_logs:  # node-a's stamp, another container claimed
        set_attr(rl.resource.attributes, semconv.CONTAINER_ID, "f" * 64, overwrite=True)
    wrong_token = _request(_signed(tmp_path, token="not-node-a"))
    for req in (unsigned, forged, wrong_token):
        assert _send(marking, req)[0]
    out = _forwarded(marking)
    assert out and all(attrs[semconv.SENDER_VERIFIED] is False for attrs in out)


def test_require_refuses_unverified_resources(requiring: Running, tmp_path: Path) -> None:
    refused_before = float(metrics.requests.labels("logs", "grpc",
                                                   "unverified_sender")._value.get())
    unsigned = _request(OtlpBuilder(NODE_A).logs_bytes(shell_session()))
    ok, reason, _ = _send(requiring, unsigned)
    assert not ok and reason == grpc.StatusCode.UNAUTHENTICATED.name.lower()
    assert float(metrics.requests.labels("logs", "grpc", "unverified_sender")._value.get()) \
        == refused_before + 1
    assert not requiring.sink.logs

    before = sample("otelguard_dropped_total", stage="receive", reason="unverified_sender")
    # One signed and one forged Resource in one request (a Collector batching two agents):
    # the signed one goes on, the forged one is refused and counted, the caller told.
    mixed = _request(_signed(tmp_path))
    forged = mixed.resource_logs[0]
    n_forged = len(forged.scope_logs[0].log_records)
    set_attr(forged.resource.attributes, semconv.K8S_POD_UID, "another-pod", overwrite=True)
    ok, _, rejected = _send(requiring, mixed)
    assert ok and rejected == n_forged
    out = _forwarded(requiring)
    assert len(out) == len(mixed.resource_logs) - 1
    assert all(attrs[semconv.SENDER_VERIFIED] is True for attrs in out)
    assert sample("otelguard_dropped_total", stage="receive",
                  reason="unverified_sender") == before + n_forged


def test_without_node_tokens_nothing_is_added(tmp_path: Path) -> None:
    cfg = ServiceSection(listen="127.0.0.1:0", metrics=None, tls=INSECURE_SERVER)
    with running_service(service=cfg) as running:
        plain = _request(OtlpBuilder(NODE_A).logs_bytes(shell_session()))
        assert _send(running, plain)[0]
        assert all(semconv.SENDER_VERIFIED not in a for a in _forwarded(running))
        signed = _request(_signed(tmp_path))
        running.sink.logs.clear()
        assert _send(running, signed)[0]
        out = _forwarded(running)
        assert out and all(a[semconv.SENDER_VERIFIED] is False and semconv.SENDER_MAC not in a
                           for a in out)


def test_require_needs_a_token_file() -> None:
    from otelguard.config import InvalidFields
    with pytest.raises(InvalidFields):
        dataclasses.replace(IdentitySection(), require=True)
