"""The OTLP/HTTP receiver: an aiohttp app serving POST ``/v1/logs`` and ``/v1/traces`` in
binary protobuf or JSON, gzip/deflate or plain, into the shared request path.

HTTP-only refusals: an unknown Content-Type or Content-Encoding is 415; a body over
``max_request_bytes`` (by Content-Length, while reading, or after inflating) is 413. Error bodies
are a google.rpc.Status in the request's encoding; retryable ones add Retry-After.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any, Callable, Optional

import grpc
from aiohttp import web

from otelguard.otlp import jsoncodec
from otelguard.processors import errors
from otelguard.processors.errors import RequestError
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


async def start_http_server(listen: str, max_request_bytes: int, handle: Handle,
                            register: Optional[Callable[[web.Application], None]] = None,
                            ) -> tuple[web.AppRunner, int]:
    """Bind ``listen`` (port 0 picks a free one) and start serving; returns the runner and port."""
    app = web.Application(client_max_size=max_request_bytes)
    app.router.add_post("/v1/logs", _export_handler(LOGS, max_request_bytes, handle))
    app.router.add_post("/v1/traces", _export_handler(TRACES, max_request_bytes, handle))
    if register is not None:  # more routes on the port (receiver/health.py)
        register(app)
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    host, port = split_hostport(listen)
    site = web.TCPSite(runner, host, port)
    await site.start()
    addresses = runner.addresses  # (host, port, ...) per bound socket
    return runner, int(addresses[0][1]) if addresses else port


def _export_handler(sig: Signal, limit: int, handle: Handle) -> Callable[[web.Request], Any]:
    async def export(request: web.Request) -> web.Response:
        ctype = request.content_type
        as_json = ctype == JSON
        try:
            if ctype not in (PROTOBUF, JSON):
                raise errors.unsupported_media_type(
                    f"unsupported Content-Type {ctype!r}; use {PROTOBUF} or {JSON}")
            length = request.content_length
            if length is not None and length > limit:
                raise errors.too_large(f"request of {length} bytes exceeds "
                                       f"max_request_bytes={limit}")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise errors.too_large(
                    f"request exceeds max_request_bytes={limit}"
                ) from None
            body = decompress(body, request.headers.get("Content-Encoding", ""), limit)
            decode: Callable[[bytes], Batch] = sig.json_decode if as_json \
                else sig.request.FromString
            response = await handle(sig, "http", body, decode)
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


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate a gzip/deflate body, refusing to produce more than ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise errors.unsupported_media_type(
            f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise errors.invalid_argument("malformed", f"cannot decompress body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise errors.too_large(f"decompressed body exceeds max_request_bytes={limit}")
    if not inflater.eof:
        raise errors.invalid_argument("malformed", "truncated compressed body")
    return out


def _error_response(exc: RequestError, as_json: bool) -> web.Response:
    from google.rpc import status_pb2

    status = status_pb2.Status()
    status.ParseFromString(status_details(exc.code, exc.message, exc.retry_after))
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    if as_json:
        return web.Response(status=exc.http_status, body=jsoncodec.encode(status).encode(),
                            content_type=JSON, headers=headers)
    return web.Response(status=exc.http_status, body=status.SerializeToString(),
                        content_type=PROTOBUF, headers=headers)
