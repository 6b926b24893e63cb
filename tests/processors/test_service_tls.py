"""TLS, mTLS and bearer tokens on both receivers, through the real OTLP transports: who is
refused, who is accepted, and certificate/token rotation picked up without a restart."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from pathlib import Path
from typing import Iterator, Union

import pytest

from otelguard.processors import metrics
from otelguard.processors.config import ServiceSection
from otelguard.processors.errors import ProcessorsError
from otelguard.processors.receiver.security import ListenerSecurity
from otelguard.transport.contract import ExportResult, SpecError
from otelguard.transport.otlp_grpc import OtlpGrpcTransport
from otelguard.transport.otlp_http import OtlpHttpTransport
from otelguard.transport.security import ClientTls, ServerTls

from . import samples
from .service_fixtures import Running, running_service
from tests.support.certs import Ca, Pki, write

Client = Union[OtlpGrpcTransport, OtlpHttpTransport]
PROTOCOLS = ("grpc", "http")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


@pytest.fixture
def service(pki: Pki) -> Iterator[Running]:
    cfg = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                         tls=pki.server_tls(mtls=True, tokens=True))
    with running_service(service=cfg) as running:
        yield running


def client(running: Running, protocol: str, tls: ClientTls) -> Client:
    if protocol == "grpc":
        return OtlpGrpcTransport(running.grpc_endpoint, timeout_s=10, tls=tls)
    return OtlpHttpTransport(f"https://127.0.0.1:{running.service.http_port}", timeout_s=10,
                             tls=tls)


def send(running: Running, protocol: str, tls: ClientTls) -> ExportResult:
    transport = client(running, protocol, tls)
    try:
        return transport.export_logs(samples.logs())
    finally:
        transport.shutdown()


def unauthenticated(protocol: str) -> float:
    return float(metrics.requests.labels("logs", protocol, "unauthenticated")._value.get())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_right_client_is_accepted(service: Running, pki: Pki, protocol: str) -> None:
    result = send(service, protocol, pki.client_tls())
    assert result.ok, result.error
    assert len(service.sink.logs) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_client_without_the_ca_is_refused(service: Running, pki: Pki, protocol: str) -> None:
    pki.write_ca(Ca.create("some other CA"), "other-ca.crt")
    result = send(service, protocol, pki.client_tls(ca="other-ca.crt"))
    assert not result.ok and result.retryable  # the handshake failed: nothing was sent
    assert result.reason == "unavailable", result.error
    assert service.sink.logs == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_client_without_a_certificate_is_refused_under_mtls(
        service: Running, pki: Pki, protocol: str) -> None:
    result = send(service, protocol, pki.client_tls(cert=False))
    assert not result.ok
    assert result.reason == "unavailable", result.error
    assert service.sink.logs == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("token", ["wrong-token", None])
def test_a_wrong_or_missing_token_is_refused_and_counted(
        service: Running, pki: Pki, protocol: str, token: str | None) -> None:
    if token is not None:
        write(pki.root / "client-token", token.encode() + b"\n")
    before = unauthenticated(protocol)
    result = send(service, protocol,
                  pki.client_tls(token_file="client-token" if token else None))
    assert not result.ok and not result.retryable
    assert result.reason == ("unauthenticated" if protocol == "grpc" else "http_401")
    assert unauthenticated(protocol) == before + 1
    assert service.sink.logs == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_token_file_rotation_is_picked_up(service: Running, pki: Pki, protocol: str) -> None:
    write(pki.root / "old-token", b"s3cret-token\n")
    assert send(service, protocol, pki.client_tls(token_file="old-token")).ok
    write(pki.root / "client-token", b"next-token\n")
    assert not send(service, protocol, pki.client_tls(token_file="client-token")).ok
    pki.write_tokens("next-token", "another-one")  # the server accepts the new tokens
    assert send(service, protocol, pki.client_tls(token_file="client-token")).ok
    # the old token is gone
    assert not send(service, protocol, pki.client_tls(token_file="old-token")).ok


def served_certificate(port: int, pki: Pki, ca: str, alpn: str) -> bytes:
    """The DER certificate a fresh TLS connection to ``port`` is shown."""
    ctx = ssl.create_default_context(cafile=pki.path(ca))
    ctx.load_cert_chain(pki.path("client.crt"), pki.path("client.key"))
    ctx.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(pki: Pki, name: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert((pki.root / name).read_text())


def test_rotated_server_certificates_are_served_without_a_restart(
        service: Running, pki: Pki) -> None:
    ports = {"grpc": (service.service.grpc_port, "h2"),
             "http": (service.service.http_port or 0, "http/1.1")}
    first = der_of(pki, "server.crt")
    for port, alpn in ports.values():
        assert served_certificate(port, pki, "ca.crt", alpn) == first

    pki.issue_server(pki.ca)  # cert-manager renews from the same CA
    renewed = der_of(pki, "server.crt")
    assert renewed != first
    for protocol, (port, alpn) in ports.items():
        assert served_certificate(port, pki, "ca.crt", alpn) == renewed, protocol
        assert send(service, protocol, pki.client_tls()).ok

    new_ca = Ca.create("otelguard rotated CA")  # then a new CA; clients get its certificate
    pki.write_ca(new_ca, "new-ca.crt")
    pki.issue_server(new_ca)
    for protocol, (port, alpn) in ports.items():
        assert served_certificate(port, pki, "new-ca.crt", alpn) == der_of(pki, "server.crt")
        assert send(service, protocol, pki.client_tls(ca="new-ca.crt")).ok, protocol
        refused = send(service, protocol, pki.client_tls(ca="ca.crt"))
        assert not refused.ok and refused.reason == "unavailable", protocol
    assert len(service.sink.logs) == 4


def test_a_half_written_rotation_keeps_the_last_good_certificate(
        service: Running, pki: Pki) -> None:
    other_cert, _ = pki.ca.issue("mismatched", server=True)
    write(pki.root / "server.crt", other_cert)  # the key does not match it (yet)
    for protocol in PROTOCOLS:
        assert send(service, protocol, pki.client_tls()).ok, protocol


def test_plaintext_needs_insecure_set_explicitly() -> None:
    with pytest.raises(ProcessorsError, match=r"service\.tls\.cert_file.*insecure: true"):
        ListenerSecurity(ServerTls())
    with pytest.raises(SpecError, match=r"exporter\.tls\.ca_file.*insecure: true"):
        OtlpGrpcTransport("127.0.0.1:4317", tls=ClientTls())
    with pytest.raises(SpecError, match=r"forward: http://127.0.0.1:4318 is plaintext"):
        OtlpHttpTransport("http://127.0.0.1:4318", tls=ClientTls(), where="forward")
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        dataclasses.replace(ServerTls(), cert_file="/x.crt")


def test_plaintext_listener_with_token_still_requires_the_token(pki: Pki) -> None:
    cfg = ServiceSection(listen="127.0.0.1:0", listen_http="127.0.0.1:0", metrics=None,
                         tls=ServerTls(insecure=True, bearer_token_file=pki.path("tokens")))
    with running_service(service=cfg) as running:
        good = ClientTls(insecure=True, bearer_token_file=pki.path("tokens"))
        grpc_client = OtlpGrpcTransport(running.grpc_endpoint, timeout_s=10, tls=good)
        http_client = OtlpHttpTransport(running.http_url, timeout_s=10, tls=good)
        anonymous = OtlpGrpcTransport(running.grpc_endpoint, timeout_s=10,
                                      tls=ClientTls(insecure=True))
        try:
            assert grpc_client.export_logs(samples.logs()).ok
            assert http_client.export_logs(samples.logs()).ok
            assert anonymous.export_logs(samples.logs()).reason == "unauthenticated"
        finally:
            for t in (grpc_client, http_client, anonymous):
                t.shutdown()


def test_agent_to_processor_over_mtls_with_a_token(service: Running, pki: Pki,
                                                   tmp_path: Path) -> None:
    """The agent's path as agent.py builds it: Delivery with its spool over OtlpGrpcTransport;
    refused while the token is wrong (UNAUTHENTICATED: not retried, but held in the spool and
    counted as an export failure, never dropped), and all delivered once the token file holds
    the right one."""
    from otelguard import telemetry
    from otelguard.transport.delivery import Delivery
    from otelguard.transport.retry import RetryPolicy
    from otelguard.transport.spool import Spool

    write(pki.root / "agent-token", b"not-yet\n")
    transport = OtlpGrpcTransport(service.grpc_endpoint, timeout_s=10,
                                  tls=pki.client_tls(token_file="agent-token"))
    delivery = Delivery(transport, Spool(str(tmp_path / "spool"), 1 << 20),
                        RetryPolicy(max_attempts=1, down_max_s=0.0),  # no down window: the
                        deadline_s=10)                                 # next send replays at once
    try:
        failures = telemetry.export_failures.labels("export", "unauthenticated")
        before = failures._value.get()
        batch = samples.logs(3)
        assert delivery.send_logs(batch.SerializeToString(), 3)  # spooled, not dropped
        assert service.sink.logs == [] and delivery.backlog == 1
        assert delivery.stats.dropped_records == 0 and delivery.stats.spooled_records == 3
        assert failures._value.get() == before + 1
        write(pki.root / "agent-token", b"s3cret-token\n")  # the token is rotated in
        assert delivery.send_logs(batch.SerializeToString(), 3)
        assert delivery.backlog == 0 and len(service.sink.logs) == 2
        assert delivery.stats.replayed_records == 3 and delivery.stats.sent_records == 3
    finally:
        delivery.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_server_name_is_checked_and_can_be_overridden(
        service: Running, pki: Pki, protocol: str) -> None:
    """The certificate names localhost and 127.0.0.1: another expected name is refused."""
    wrong = dataclasses.replace(pki.client_tls(), server_name="processor.example")
    refused = send(service, protocol, wrong)
    assert not refused.ok and refused.reason == "unavailable", refused.error
    right = dataclasses.replace(pki.client_tls(), server_name="localhost")
    assert send(service, protocol, right).ok


def test_clients_reread_their_ca_when_it_rotates(pki: Pki) -> None:
    """One long-lived transport per protocol: the server comes back with a certificate from a new
    CA, the client's CA file is rewritten, and the same transport trusts it (rebuilt channel,
    new HTTPS context) without being recreated."""
    from tests.support.endpoints import free_port

    grpc_port, http_port = free_port(), free_port()
    cfg = ServiceSection(listen=f"127.0.0.1:{grpc_port}", listen_http=f"127.0.0.1:{http_port}",
                         metrics=None, tls=pki.server_tls(mtls=True, tokens=True))
    pki.write_ca(pki.ca, "client-ca.crt")
    tls = pki.client_tls(ca="client-ca.crt")
    clients: dict[str, Client] = {
        "grpc": OtlpGrpcTransport(f"127.0.0.1:{grpc_port}", timeout_s=10, tls=tls),
        "http": OtlpHttpTransport(f"https://127.0.0.1:{http_port}", timeout_s=10, tls=tls)}
    try:
        with running_service(service=cfg):
            for protocol, transport in clients.items():
                assert transport.export_logs(samples.logs()).ok, protocol
        new_ca = Ca.create("otelguard rotated CA")
        pki.issue_server(new_ca)
        pki.write_ca(new_ca, "client-ca.crt")
        with running_service(service=cfg) as running:
            for protocol, transport in clients.items():
                result = transport.export_logs(samples.logs())
                assert result.ok, (protocol, result.error)
            assert len(running.sink.logs) == 2
    finally:
        for transport in clients.values():
            transport.shutdown()
