"""The OTLP/HTTP receiver: an aiohttp app serving POST ``/v1/logs`` and ``/v1/traces`` in
binary protobuf or JSON, gzip/deflate or plain, into the shared request path.

A request is admitted before its body is read, by Content-Length (``max_request_bytes`` when
unknown), so stalled uploads cannot hold more than ``max_inflight_bytes``; a body not read in
full within ``body_read_timeout_seconds`` is 408. Inflating (gzip, every member; deflate) grows
the request's admitted bytes as it goes: past ``max_request_bytes`` it is 413, past the in-flight
budget 429, and nothing more is inflated either way.

HTTP-only refusals: an unknown Content-Type or Content-Encoding is 415; a body over
``max_request_bytes`` (by Content-Length, while reading, or while inflating) is 413; a slow body
408; a client gone mid-body is counted as ``client_disconnected``. Error bodies are a google.rpc.Status in the request's encoding; retryable ones add
Retry-After. TLS and the bearer token (``service.tls``) come from :mod:`.security`; a request
without an accepted ``Authorization: Bearer`` token is 401 before its body is read.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any, Callable, Optional

import grpc
from aiohttp import web

from otelguard.otlp import jsoncodec
from otelguard.processors import errors
from otelguard.processors.config import ServiceSection
from otelguard.processors.errors import RequestError
from otelguard.processors.receiver.admission import Admission, Ticket
from otelguard.processors.receiver.security import (
    UNAUTHENTICATED_MESSAGE,
    BearerAuth,
    ListenerSecurity,
)
from otelguard.processors.receiver.protocol import (
    JSON,
    LOGS,
    PROTOBUF,
    TRACES,
    Handle,
    Signal,
    count_request,
    split_hostport,
    status_details,
)
from otelguard.processors.stage import Batch

log = logging.getLogger(__name__)


async def start_http_server(cfg: ServiceSection, security: ListenerSecurity,
                            admission: Admission, handle: Handle,
                            register: Optional[Callable[[web.Application], None]] = None,
                            ) -> tuple[web.AppRunner, int]:
    """Bind ``cfg.listen_http`` (port 0 picks a free one) and start serving; returns the runner
    and port."""
    assert cfg.listen_http
    app = web.Application(client_max_size=cfg.max_request_bytes)
    for path, sig in (("/v1/logs", LOGS), ("/v1/traces", TRACES)):
        app.router.add_post(path, _export_handler(sig, cfg, admission, handle, security.auth))
    if register is not None:  # more routes on the port (receiver/health.py)
        register(app)
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    host, port = split_hostport(cfg.listen_http)
    site = web.TCPSite(runner, host, port, ssl_context=(
        security.certs.http_context() if security.certs is not None else None))
    await site.start()
    addresses = runner.addresses  # (host, port, ...) per bound socket
    return runner, int(addresses[0][1]) if addresses else port


def _export_handler(sig: Signal, cfg: ServiceSection, admission: Admission,
                    handle: Handle, auth: Optional[BearerAuth]) -> Callable[[web.Request], Any]:
    limit = cfg.max_request_bytes
    decode: Callable[[bytes], Batch] = sig.request.FromString

    def decode_json(body: bytes) -> Batch:
        return sig.json_decode(body, cfg.max_json_depth)

    async def export(request: web.Request) -> web.Response:
        ctype = request.content_type
        as_json = ctype == JSON
        if auth is not None and not auth.accepts(request.headers.get("Authorization")):
            count_request(sig, "http", "unauthenticated")
            return _error_response(RequestError(grpc.StatusCode.UNAUTHENTICATED, 401,
                                                "unauthenticated", UNAUTHENTICATED_MESSAGE),
                                   as_json, {"WWW-Authenticate": "Bearer"})
        try:
            if ctype not in (PROTOBUF, JSON):
                raise errors.unsupported_media_type(
                    f"unsupported Content-Type {ctype!r}; use {PROTOBUF} or {JSON}")
            length = request.content_length
            with admission.admit(limit if length is None else length) as ticket:
                try:
                    body = await asyncio.wait_for(request.read(), cfg.body_read_timeout_seconds)
                except web.HTTPRequestEntityTooLarge:
                    raise errors.too_large(
                        f"request exceeds max_request_bytes={limit}"
                    ) from None
                except ConnectionResetError:  # the client went away mid-body
                    raise errors.invalid_argument(
                        "client_disconnected", "connection lost while reading the body") from None
                except asyncio.TimeoutError:
                    raise errors.body_timeout(
                        f"request body not read within body_read_timeout_seconds="
                        f"{cfg.body_read_timeout_seconds}") from None
                ticket.resize(len(body))
                body = decompress(body, request.headers.get("Content-Encoding", ""), limit,
                                  ticket)
                ticket.resize(len(body))
                response = await handle(sig, "http", body, decode_json if as_json else decode)
        except RequestError as exc:
            count_request(sig, "http", exc.reason, 0 if exc.retryable else 1)
            return _error_response(exc, as_json)
        except Exception as exc:
            log.exception("internal error handling a %s export", sig.name)
            count_request(sig, "http", "internal", 1)
            return _error_response(RequestError(grpc.StatusCode.INTERNAL, 500, "internal",
                                                f"internal error: {exc}"), as_json)
        count_request(sig, "http", sig.outcome(response))
        if as_json:
            return web.Response(body=jsoncodec.encode(response).encode(), content_type=JSON)
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)

    return export


_INFLATE_CHUNK = 1 << 20  # admission is checked after each inflated MiB


def decompress(body: bytes, encoding: str, limit: int, ticket: Ticket) -> bytes:
    """Inflate a gzip (every member, as RFC 1952 allows) or deflate body, refusing to produce
    more than ``limit`` bytes (413) or to grow ``ticket`` past the in-flight budget (429)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise errors.unsupported_media_type(
            f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    held = len(body)
    pieces: list[bytes] = []
    size = 0
    data = body
    while True:  # one gzip member per round
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            try:
                piece = inflater.decompress(data, _INFLATE_CHUNK)
            except zlib.error as exc:
                raise errors.invalid_argument("malformed",
                                              f"cannot decompress body: {exc}") from None
            if not piece and len(inflater.unconsumed_tail) == len(data) and not inflater.eof:
                raise errors.invalid_argument("malformed", "truncated compressed body")
            data = inflater.unconsumed_tail
            size += len(piece)
            if size > limit:
                raise errors.too_large(f"decompressed body exceeds max_request_bytes={limit}")
            ticket.resize(held + size)
            pieces.append(piece)
        data = inflater.unused_data
        if not data.strip(b"\0"):  # gzip allows zero padding after the last member
            return b"".join(pieces)
        if encoding == "deflate":
            raise errors.invalid_argument("malformed", "data after the end of the deflate body")


def _error_response(exc: RequestError, as_json: bool,
                    headers: Optional[dict[str, str]] = None) -> web.Response:
    from google.rpc import status_pb2

    status = status_pb2.Status()
    status.ParseFromString(status_details(exc.code, exc.message, exc.retry_after))
    headers = dict(headers or {})
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    if as_json:
        return web.Response(status=exc.http_status, body=jsoncodec.encode(status).encode(),
                            content_type=JSON, headers=headers)
    return web.Response(status=exc.http_status, body=status.SerializeToString(),
                        content_type=PROTOBUF, headers=headers)
