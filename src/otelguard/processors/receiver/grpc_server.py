"""The OTLP/gRPC receiver: a ``grpc.aio`` server with generic handlers for LogsService/Export and
TraceService/Export that hand the raw bytes to the shared request path.

``grpc.aio`` measured ~1.4-2x the sync server. Export is registered as stream-unary (the same
wire format as a unary call) so that admission takes a request slot *before* grpc reads the
message: a unary handler only runs once grpc holds the whole message, so refusing then does not
bound memory (12 concurrent 60 MiB requests, all refused, took the service to 1.3 GiB RSS). A
message over ``max_request_bytes`` is refused by grpc itself with RESOURCE_EXHAUSTED while it
is read; calls past twice ``max_inflight_requests`` are refused by grpc before any handler runs
(a backstop: admission refuses from ``max_inflight_requests`` on, with RetryInfo, which OTLP
clients need to retry). So grpc buffers at most ``max_inflight_requests`` messages of up to
``max_request_bytes``. Refusals from the handler carry ``grpc-status-details-bin`` (a
google.rpc.Status with RetryInfo when the caller should come back). A message not read within
``body_read_timeout_seconds`` is DEADLINE_EXCEEDED, as HTTP's 408.

TLS and the bearer token (``service.tls``) come from :mod:`.security`: the port is secure unless
the config says ``insecure: true``, and a call without an accepted token is UNAUTHENTICATED
before its message is read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Optional

import grpc

from otelguard.processors import errors
from otelguard.processors.config import ServiceSection
from otelguard.processors.errors import ProcessorsError, RequestError
from otelguard.processors.receiver.admission import Admission
from otelguard.processors.receiver.security import (
    UNAUTHENTICATED_MESSAGE,
    BearerAuth,
    ListenerSecurity,
    grpc_authorization,
)
from otelguard.processors.receiver.protocol import (
    LOGS,
    LOGS_SERVICE,
    TRACE_SERVICE,
    TRACES,
    Handle,
    Signal,
    count_request,
    split_hostport,
    status_details,
)

log = logging.getLogger(__name__)


async def start_grpc_server(cfg: ServiceSection, security: ListenerSecurity,
                            admission: Admission, handle: Handle,
                            register: Optional[Callable[[grpc.aio.Server], None]] = None,
                            ) -> tuple[grpc.aio.Server, int]:
    """Bind ``cfg.listen`` (port 0 picks a free one) and start serving; returns server and port."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", cfg.max_request_bytes),
            ("grpc.max_send_message_length", cfg.max_request_bytes * 4 + 65536),
        ],
        maximum_concurrent_rpcs=2 * cfg.max_inflight_requests,
    )
    for service_name, sig in ((LOGS_SERVICE, LOGS), (TRACE_SERVICE, TRACES)):
        handler = grpc.stream_unary_rpc_method_handler(
            _export_handler(sig, admission, cfg.body_read_timeout_seconds, handle,
                            security.auth))
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service_name, {"Export": handler}),))
    if register is not None:  # more services on the port (receiver/health.py)
        register(server)
    host, port = split_hostport(cfg.listen)
    if security.certs is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        bound = server.add_secure_port(f"{host}:{port}", security.certs.grpc_credentials())
    if bound == 0:
        raise ProcessorsError(f"cannot listen for OTLP/gRPC on {cfg.listen}")
    await server.start()
    return server, bound


def _export_handler(
    sig: Signal, admission: Admission, read_timeout: float, handle: Handle,
    auth: Optional[BearerAuth],
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Any]:
    async def export(requests: AsyncIterator[bytes],
                     context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if auth is not None and not auth.accepts(grpc_authorization(context)):
            count_request(sig, "grpc", "unauthenticated")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
            raise AssertionError("unreachable: abort raises")
        try:
            with admission.admit(0) as ticket:  # a request slot before the message is read
                try:
                    request = await asyncio.wait_for(_first_message(requests),
                                                     read_timeout)
                except asyncio.TimeoutError:
                    raise errors.body_timeout(
                        f"request message not read within body_read_timeout_seconds="
                        f"{read_timeout}") from None
                ticket.resize(len(request))
                response = await handle(sig, "grpc", request, sig.request.FromString)
        except RequestError as exc:
            # Refused bad input is lost for good (counted once per request: records unknown).
            count_request(sig, "grpc", exc.reason, 0 if exc.retryable else 1)
            await context.abort(exc.code, exc.message, trailing_metadata=(
                ("grpc-status-details-bin",
                 status_details(exc.code, exc.message, exc.retry_after)),))
            raise AssertionError("unreachable: abort raises")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("internal error handling a %s export", sig.name)
            count_request(sig, "grpc", "internal", 1)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
            raise AssertionError("unreachable: abort raises")
        count_request(sig, "grpc", sig.outcome(response))
        data: bytes = response.SerializeToString()
        return data

    return export


async def _first_message(requests: AsyncIterator[bytes]) -> bytes:
    """The Export request: a unary client sends exactly one (an empty request is one empty
    message). None arrives when grpc refused it as over ``max_request_bytes``; grpc has answered
    the caller then, the refusal is raised here to be counted."""
    async for message in requests:
        return message
    raise errors.too_large("no request message: over max_request_bytes (refused by grpc while "
                           "reading it) or none sent")
