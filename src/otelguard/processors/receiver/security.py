"""TLS and bearer tokens on the receivers (``service.tls``, see docs/architecture.md "Security").

The certificate, key and client CA are re-read when their files change, checked on every new
connection (three stats, ~5 µs per handshake), so a cert-manager rotation needs no restart:

- gRPC: ``grpc.dynamic_ssl_server_credentials`` asks :meth:`ServerCertificates.grpc_fetch` for a
  new configuration at each handshake; None keeps the current one.
- HTTP: the listening SSLContext's SNI callback (called at every ClientHello, with or without a
  server name) switches the connection to the current context, rebuilt when the files changed.

A rotation caught half-way (a key that does not match the certificate yet) keeps the last good
configuration and is tried again on the next connection. The bearer token file is re-read when
it changes; a request without one of its tokens is refused before its body is read
(UNAUTHENTICATED / 401) and counted as ``outcome="unauthenticated"``. Health checks stay open.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any, Optional

import grpc

from otelguard.processors.errors import ProcessorsError
from otelguard.transport.security import (
    ServerTls, TokenFile, WatchedFiles, read_bytes, warn_insecure,
)

log = logging.getLogger(__name__)

UNAUTHENTICATED_MESSAGE = "missing or wrong bearer token (Authorization: Bearer <token>)"


class ServerCertificates:
    """The listener's certificate, key and client CA, reloaded when their files change."""

    def __init__(self, tls: ServerTls) -> None:
        assert tls.cert_file and tls.key_file
        self.tls = tls
        self._files = WatchedFiles([tls.cert_file, tls.key_file, tls.client_ca_file])
        self._lock = threading.Lock()
        self._files.changed()
        try:
            self._context = self._build_context()
            self._pem = self._read_pem()
        except (OSError, ssl.SSLError) as exc:
            raise ProcessorsError(f"service.tls: cannot load the certificate: {exc}") from None
        self.reloads = 0

    def _read_pem(self) -> tuple[bytes, bytes, Optional[bytes]]:
        cert, key = read_bytes(self.tls.cert_file), read_bytes(self.tls.key_file)
        assert cert is not None and key is not None
        return cert, key, read_bytes(self.tls.client_ca_file)

    def _build_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert self.tls.cert_file
        ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        if self.tls.client_ca_file:
            ctx.load_verify_locations(cafile=self.tls.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _reload_if_changed(self) -> bool:
        """Rebuild from the files if they changed; whether a new configuration was loaded."""
        with self._lock:
            if not self._files.changed():
                return False
            try:
                # a context that loads is the proof the key matches the certificate
                context, pem = self._build_context(), self._read_pem()
            except (OSError, ssl.SSLError) as exc:
                log.warning("service.tls: keeping the current certificate, cannot load the "
                            "changed files: %s", exc)
                self._files.forget()
                return False
            self._context, self._pem = context, pem
            self.reloads += 1
            log.info("service.tls: certificate files changed, reloaded")
            return True

    # --- gRPC -------------------------------------------------------------------------------

    def _grpc_configuration(self) -> Any:
        cert, key, client_ca = self._pem
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=client_ca)

    def grpc_fetch(self) -> Any:
        """The fetcher grpc calls at each handshake: a new configuration, or None."""
        try:
            return self._grpc_configuration() if self._reload_if_changed() else None
        except Exception:  # never raise into grpc's handshake thread
            log.exception("service.tls: reload for gRPC failed")
            return None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._grpc_configuration(), self.grpc_fetch,
            require_client_authentication=bool(self.tls.client_ca_file))

    # --- HTTP -------------------------------------------------------------------------------

    def http_context(self) -> ssl.SSLContext:
        """The context to listen with: each handshake moves to the current context."""
        listening = self._build_context()

        def switch(sslobj: Any, _server_name: Optional[str], _ctx: ssl.SSLContext) -> None:
            self._reload_if_changed()
            sslobj.context = self._context

        listening.sni_callback = switch
        return listening


class BearerAuth:
    """Checks the ``authorization`` of a request against the token file."""

    def __init__(self, path: str) -> None:
        self._tokens = TokenFile(path)
        if not self._tokens.tokens():
            raise ProcessorsError(f"service.tls.bearer_token_file: no token in {path}")

    def accepts(self, authorization: Optional[str]) -> bool:
        return self._tokens.accepts(authorization)


def grpc_authorization(context: Any) -> Optional[str]:
    """The ``authorization`` metadata of a gRPC call, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


class ListenerSecurity:
    """What both listeners need from ``service.tls``: certificates (None: plaintext) and the
    token check (None: no token required)."""

    def __init__(self, tls: ServerTls) -> None:
        if not tls.insecure and not tls.cert_file:
            raise ProcessorsError("service.tls: no TLS configured: set service.tls.cert_file and "
                                  "key_file (or service.tls.insecure: true for plaintext)")
        self.certs = ServerCertificates(tls) if tls.cert_file else None
        self.auth = BearerAuth(tls.bearer_token_file) if tls.bearer_token_file else None
        if tls.insecure:
            warn_insecure("service", tls)
