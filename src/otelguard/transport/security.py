"""TLS and bearer-token settings of every network hop, and the files behind them.

One shape for the two sides (see docs/architecture.md, "Security"): :class:`ClientTls` is what an
OTLP client (the agent's exporter, the processor's forwarder) presents and trusts;
:class:`ServerTls` is what a listener (the processor's receivers) presents and requires. Plaintext
is never a default: a hop without certificates must say ``insecure: true``, and is then reported
loudly at startup (:func:`warn_insecure`) and by ``otelguard doctor``.

Certificates, keys and tokens are files (cert-manager / projected-volume style) that are re-read
when they change: :class:`WatchedFiles` compares each file's (mtime, size, inode) -- one stat per
file per check, ~2 µs -- so callers check on every new connection or request.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TypeVar

from otelguard.config import Checks
from otelguard.transport.contract import SpecError

log = logging.getLogger("otelguard.security")


@dataclass(frozen=True)
class ClientTls:
    """``tls:`` of a client hop: the CA that signs the server, an optional client certificate
    (mTLS), and the bearer token sent as ``Authorization: Bearer <token>``."""

    insecure: bool = False  # plaintext: only when set explicitly
    ca_file: Optional[str] = None  # PEM bundle trusted for the server certificate
    cert_file: Optional[str] = None  # client certificate (PEM) for mTLS
    key_file: Optional[str] = None  # its private key (PEM)
    server_name: Optional[str] = None  # name checked against the server certificate
    bearer_token_file: Optional[str] = None  # first non-empty line is the token

    def __post_init__(self) -> None:
        checks = Checks()
        if (self.cert_file is None) != (self.key_file is None):
            checks.add("cert_file" if self.cert_file is None else "key_file",
                       "cert_file and key_file go together")
        if self.insecure and (self.ca_file or self.cert_file or self.server_name):
            checks.add("insecure", "insecure: true together with TLS files; choose one")
        checks.done()

    def require(self, where: str) -> None:
        """Refuse a client that is neither TLS nor explicitly insecure (one line, naming the key)."""
        if not self.insecure and not self.ca_file:
            raise SpecError(f"{where}: no TLS configured: set {where}.tls.ca_file "
                            f"(or {where}.tls.insecure: true for plaintext)")


@dataclass(frozen=True)
class ServerTls:
    """``tls:`` of a listener: its certificate and key, the CA that signs client certificates
    (set: mTLS, a client without a certificate from it is refused), the bearer tokens accepted."""

    insecure: bool = False  # plaintext: only when set explicitly
    cert_file: Optional[str] = None  # server certificate chain (PEM)
    key_file: Optional[str] = None  # its private key (PEM)
    client_ca_file: Optional[str] = None  # set: clients must present a certificate it signed
    bearer_token_file: Optional[str] = None  # accepted tokens, one per line; set: required

    def __post_init__(self) -> None:
        checks = Checks()
        if (self.cert_file is None) != (self.key_file is None):
            checks.add("cert_file" if self.cert_file is None else "key_file",
                       "cert_file and key_file go together")
        if self.insecure and (self.cert_file or self.client_ca_file):
            checks.add("insecure", "insecure: true together with TLS files; choose one")
        if self.client_ca_file and not self.cert_file:
            checks.add("client_ca_file", "mTLS needs the server's cert_file and key_file")
        checks.done()

    def require(self, where: str) -> None:
        if not self.insecure and not self.cert_file:
            raise SpecError(f"{where}: no TLS configured: set {where}.tls.cert_file and "
                            f"key_file (or {where}.tls.insecure: true for plaintext)")


INSECURE_CLIENT = ClientTls(insecure=True)
INSECURE_SERVER = ServerTls(insecure=True)

TlsT = TypeVar("TlsT", ClientTls, ServerTls)


def overridden(tls: TlsT, **values: Any) -> TlsT:
    """``tls`` with the command line's values laid over it (None or False leave a key as is)."""
    changes = {key: value for key, value in values.items() if value}
    return dataclasses.replace(tls, **changes) if changes else tls


def client_tls_flags(tls: ClientTls, args: Any, prefix: str) -> ClientTls:
    """``tls`` with the ``--PREFIX-ca/-cert/-key/-token-file/-insecure`` flags laid over it."""
    def flag(name: str) -> Any:
        return getattr(args, f"{prefix}_{name}", None)

    return overridden(tls, ca_file=flag("ca"), cert_file=flag("cert"), key_file=flag("key"),
                      bearer_token_file=flag("token_file"), insecure=flag("insecure"))


def insecure_notes(hops: Sequence[tuple[str, bool]]) -> list[str]:
    """One line per hop configured as plaintext: ``(where, insecure)`` pairs."""
    return [f"{where}: plaintext (tls.insecure: true): anyone on the network can read and "
            "forge this traffic" for where, insecure in hops if insecure]


def warn_insecure(where: str, tls: ClientTls | ServerTls) -> None:
    """The loud startup warning for a hop running without TLS (and without a token)."""
    for line in insecure_notes([(where, tls.insecure)]):
        log.warning("INSECURE %s%s", line,
                    "" if tls.bearer_token_file else "; no bearer token either")


class WatchedFiles:
    """Tells whether any of ``paths`` changed since the last :meth:`changed` that returned True
    (mtime, size and inode: a rewrite, a rename over it, a symlink swap all count)."""

    def __init__(self, paths: Sequence[Optional[str]]) -> None:
        self.paths = tuple(p for p in paths if p)
        self._seen: Optional[tuple[object, ...]] = None
        self._lock = threading.Lock()

    def _signature(self) -> tuple[object, ...]:
        out: list[object] = []
        for path in self.paths:
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> bool:
        sig = self._signature()
        with self._lock:
            if sig == self._seen:
                return False
            self._seen = sig
            return True

    def forget(self) -> None:
        """Make the next :meth:`changed` True (a reload failed half-way: try again)."""
        with self._lock:
            self._seen = None


def read_tokens(path: str) -> tuple[str, ...]:
    """The tokens of a token file: every non-empty line, stripped."""
    with open(path, encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


class TokenFile:
    """The bearer tokens in a file, re-read when it changes. A file that cannot be read keeps
    the last tokens read (a rotation caught half-way); one never read means no token."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._watch = WatchedFiles([path])
        self._tokens: tuple[bytes, ...] = ()
        self._lock = threading.Lock()

    def tokens(self) -> tuple[bytes, ...]:
        if self._watch.changed():
            try:
                fresh = tuple(t.encode() for t in read_tokens(self.path))
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read bearer token file %s: %s", self.path, exc)
                self._watch.forget()
            else:
                with self._lock:
                    self._tokens = fresh
        with self._lock:
            return self._tokens

    def first(self) -> Optional[str]:
        tokens = self.tokens()
        return tokens[0].decode() if tokens else None

    def accepts(self, authorization: Optional[str]) -> bool:
        """Whether an ``Authorization`` value carries one of the tokens (constant-time compare)."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return False
        given = value.strip().encode()
        ok = False
        for token in self.tokens():
            ok |= hmac.compare_digest(given, token)
        return ok


def read_bytes(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def client_ssl_context(tls: ClientTls) -> ssl.SSLContext:
    """The stdlib context of a TLS client (OTLP/HTTP): the CA, the optional client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx
