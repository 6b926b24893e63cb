"""The processor service's health: the standard gRPC health service and ``/healthz``/``/readyz``.

Kubernetes (deploy/processor.yaml) and the Collector's load-balancing exporter ask two questions:

- *alive?* ``/healthz`` answers 200 while the event loop serves HTTP; it checks nothing else, so
  a slow next hop never gets the pod restarted;
- *ready for traffic?* gRPC ``grpc.health.v1.Health/Check`` for the overall service ``""`` and
  for the two OTLP services answers NOT_SERVING until the pipeline started and the listeners are
  bound, SERVING from then, and NOT_SERVING for good once ``stop()`` begins draining. ``/readyz``
  says more: it is 200 only when every check of :meth:`ServiceHealth.checks` passes, else 503
  with a JSON body naming each failing check (telemetry.readiness_response).

The checks: ``pipeline`` (started, not draining); one per stage that reports readiness (the
``k8s_attributes`` stage: cache synced, or the start-up wait given up with the reason, when
enrichment goes on with what is known); one ``next_hop:<name>`` per exporter (down after a
forward ran out of retries, until a send or the service's probe got through: see
Forwarder.hop_states). Each check reads state the request path keeps anyway: no I/O per probe.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from otelguard.processors.forward import Forwarder
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver.protocol import LOGS_SERVICE, TRACE_SERVICE
from otelguard.telemetry import HEALTHZ_BODY, Check, readiness_response

OVERALL = ""
SERVICE_NAMES = (OVERALL, LOGS_SERVICE, TRACE_SERVICE)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@runtime_checkable
class ReportsReadiness(Protocol):
    """A stage whose start-up state decides readiness (e.g. the k8s cache): ``(ok, detail)``."""

    def readiness(self) -> tuple[bool, str]: ...


class ServiceHealth:
    """Health of one :class:`~otelguard.processors.receiver.service.ProcessorService`.

    The service calls :meth:`serving` once started and :meth:`draining` when ``stop()`` begins;
    the gRPC servicer is registered on the OTLP/gRPC server (:meth:`register_grpc`), the HTTP
    paths on the OTLP/HTTP app (:meth:`register_http`) and on the metrics port
    (``telemetry.set_readiness(health.checks)``, done by processors/cli.py).
    """

    def __init__(self, pipeline: Pipeline, forwarder: Forwarder) -> None:
        self.pipeline = pipeline
        self.forwarder = forwarder
        self.servicer = HealthServicer()
        self._state = "starting"
        # more checks from outside the service (the reloader's ``reload``: always passing)
        self.extra_checks: list[Callable[[], Check]] = []

    @property
    def state(self) -> str:
        """``starting``, ``serving`` or ``draining``."""
        return self._state

    # --- gRPC ------------------------------------------------------------------------------

    async def starting(self) -> None:
        """Every name NOT_SERVING (the servicer starts with ``""`` SERVING): call before the
        gRPC server starts."""
        for name in SERVICE_NAMES:
            await self.servicer.set(name, _NOT_SERVING)

    def register_grpc(self, server: grpc.aio.Server) -> None:
        """Add ``grpc.health.v1.Health`` to the OTLP/gRPC server."""
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def serving(self) -> None:
        self._state = "serving"
        for name in SERVICE_NAMES:
            await self.servicer.set(name, _SERVING)

    async def draining(self) -> None:
        """NOT_SERVING for good: callers move to other replicas while requests drain."""
        self._state = "draining"
        await self.servicer.enter_graceful_shutdown()

    # --- HTTP ------------------------------------------------------------------------------

    def register_http(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(body=HEALTHZ_BODY, content_type="application/json")

    async def _readyz(self, _request: web.Request) -> web.Response:
        status, body = readiness_response(self.checks())
        return web.Response(status=status, body=body, content_type="application/json")

    # --- the checks ------------------------------------------------------------------------

    def checks(self) -> list[Check]:
        """Every readiness check, cheap and thread-safe (the metrics port calls it from its own
        thread)."""
        state = self._state
        out = [Check("pipeline", state == "serving", {
            "starting": "pipeline not started yet",
            "serving": "started: " + (", ".join(self.pipeline.stage_names) or "no stages"),
            "draining": "draining: the service is stopping",
        }[state])]
        for name, stage in self.pipeline.stages():
            if isinstance(stage, ReportsReadiness):
                ok, detail = stage.readiness()
                out.append(Check(f"stage:{name}", ok, detail))
        for hop, (down, detail) in self.forwarder.hop_states().items():
            out.append(Check(f"next_hop:{hop}", not down, detail))
        out += [extra() for extra in self.extra_checks]
        return out

