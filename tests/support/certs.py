"""Test PKI made with the ``cryptography`` library: a CA, server certificates for
127.0.0.1/localhost, client certificates, and the files the services read them from."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from otelguard.transport.security import ClientTls, ServerTls


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Ca:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "otelguard test CA") -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                             False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, server: bool) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a server (127.0.0.1, localhost) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False)
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server
                        else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def write(path: Path, data: bytes) -> Path:
    """Replace ``path`` the way a Secret volume does: write beside it, rename over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


@dataclass
class Pki:
    """Files in ``root``: ``ca.crt``, ``server.crt/key``, ``client.crt/key``, ``tokens``."""

    root: Path
    ca: Ca

    @classmethod
    def create(cls, root: Path, tokens: tuple[str, ...] = ("s3cret-token",)) -> Pki:
        root.mkdir(parents=True, exist_ok=True)
        pki = cls(root, Ca.create())
        pki.write_ca(pki.ca)
        pki.issue_server(pki.ca)
        cert, key = pki.ca.issue("agent-node-1", server=False)
        write(root / "client.crt", cert)
        write(root / "client.key", key)
        pki.write_tokens(*tokens)
        return pki

    def path(self, name: str) -> str:
        return str(self.root / name)

    def write_ca(self, ca: Ca, name: str = "ca.crt") -> None:
        write(self.root / name, ca.pem)

    def issue_server(self, ca: Ca) -> None:
        cert, key = ca.issue("otelguard-processor", server=True)
        write(self.root / "server.key", key)
        write(self.root / "server.crt", cert)

    def write_tokens(self, *tokens: str) -> None:
        write(self.root / "tokens", "".join(t + "\n" for t in tokens).encode())

    def server_tls(self, mtls: bool = True, tokens: bool = True) -> ServerTls:
        return ServerTls(cert_file=self.path("server.crt"), key_file=self.path("server.key"),
                         client_ca_file=self.path("ca.crt") if mtls else None,
                         bearer_token_file=self.path("tokens") if tokens else None)

    def client_tls(self, ca: Optional[str] = "ca.crt", cert: bool = True,
                   token_file: Optional[str] = "tokens") -> ClientTls:
        return ClientTls(ca_file=self.path(ca) if ca else None,
                         cert_file=self.path("client.crt") if cert else None,
                         key_file=self.path("client.key") if cert else None,
                         bearer_token_file=self.path(token_file) if token_file else None)


@dataclass
class GatewayTls:
    """The files of pipeline (a)'s authenticated hops (otel-config/collector/gateway.yaml):
    agents -> the Collector's agents receiver (TLS, agents' bearer token), the Collector ->
    the processor service (TLS checked against the CA, the processor's bearer token)."""

    pki: Pki

    @classmethod
    def create(cls, root: Path) -> GatewayTls:
        pki = Pki.create(root, tokens=("processor-token",))
        write(root / "agent-tokens", b"agent-token-1\nagent-token-2\n")
        write(root / "agent-token", b"agent-token-2\n")
        return cls(pki)

    def collector_env(self) -> dict[str, str]:
        """The gateway Collector's variables: its certificate (the server one: 127.0.0.1)."""
        p = self.pki.path
        return {"OTELGUARD_COLLECTOR_TLS_CERT": p("server.crt"),
                "OTELGUARD_COLLECTOR_TLS_KEY": p("server.key"),
                "OTELGUARD_AGENT_TOKENS_FILE": p("agent-tokens"),
                "OTELGUARD_PROCESSOR_CA_FILE": p("ca.crt"),
                "OTELGUARD_PROCESSOR_TOKEN_FILE": p("tokens")}

    def processor_args(self) -> list[str]:
        """``otelguard processor`` listener flags: TLS with the same certificate, the processor
        hop's token."""
        p = self.pki.path
        return ["--tls-cert", p("server.crt"), "--tls-key", p("server.key"),
                "--token-file", p("tokens")]

    def processor_export_args(self) -> list[str]:
        """``otelguard processor`` flags for its output to the gateway's backends receiver."""
        return ["--export-ca", self.pki.path("ca.crt"),
                "--export-token-file", self.pki.path("tokens")]

    def agent_args(self) -> list[str]:
        return ["--otlp-ca", self.pki.path("ca.crt"),
                "--otlp-token-file", self.pki.path("agent-token")]

    def agent_channel(self, endpoint: str) -> tuple[grpc.Channel, tuple[tuple[str, str], ...]]:
        """A gRPC channel to the agents receiver as an agent opens it, and the call metadata."""
        creds = grpc.ssl_channel_credentials((self.pki.root / "ca.crt").read_bytes())
        return (grpc.secure_channel(endpoint, creds),
                (("authorization", "Bearer agent-token-2"),))
