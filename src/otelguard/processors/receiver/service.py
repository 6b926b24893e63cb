"""ProcessorService: the receivers, the pipeline and the forwarder on one asyncio loop.

Requests from either protocol take one path: the receiver admits the body against the size and
in-flight limits (``admission``), then it is parsed (upb, ~1 µs/record), held to the attribute
limits (``limits``), run through the pipeline inline (it does no I/O),
then forwarded on a worker thread; the caller is answered only after the next hops took the
batch, so an OK means delivered. A stage that dropped records for good turns into an OK with
``partial_success``; records a stage holds or throttles leave later (the flush
timer) and are not rejected. Records noise_control writes never ride on a caller's request: they are
forwarded by the flush timer and by ``stop()``, and counted in ``otelguard_dropped_total`` when
that fails for good.

With ``service.state_dir`` set, held state is journaled (processors/journal.py): a request whose
records changed it is answered only after the journal is fsynced (requests that changed nothing
pay nothing), a flush persists before it forwards, held records released into a caller's batch
(k8s_attributes) are settled once that batch was forwarded or their loss counted, and a restart
re-emits what was held (docs/architecture.md#failure-handling).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import telemetry
from otelguard.otlp import jsoncodec
from otelguard.processors import errors, metrics
from otelguard.processors.config import ServiceSection
from otelguard.processors.detection.spans import detection_spans
from otelguard.processors.errors import RequestError
from otelguard.processors.forward import Forwarder
from otelguard.otlp.messages import count_records
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.receiver.admission import Admission
from otelguard.processors.receiver.grpc_server import start_grpc_server
from otelguard.processors.receiver.health import ServiceHealth
from otelguard.processors.receiver.identity import REASON as UNVERIFIED, SenderCheck, unverified
from otelguard.processors.receiver.http_server import start_http_server
from otelguard.processors.receiver.limits import AttributeLimits
from otelguard.processors.receiver.protocol import LOGS, Signal, require_upb
from otelguard.processors.receiver.security import ListenerSecurity
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Batch

log = logging.getLogger(__name__)

_PENDING_FLUSH_LIMIT = 64


class ProcessorService:
    """gRPC + HTTP receivers around a :class:`Pipeline` and a :class:`Forwarder`.

    ``await start()`` binds (port 0 picks free ports: see ``grpc_port``/``http_port``), starts
    the pipeline and the flush timer; ``await stop()`` drains in-flight requests, flushes held
    records to the next hops and shuts everything down. For synchronous callers (tests, the CLI)
    :class:`ServiceThread` runs it on its own loop.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        forwarder: Forwarder,
        service: ServiceSection = ServiceSection(),
        settings: Settings = Settings(),
    ) -> None:
        self.pipeline = pipeline
        self.forwarder = forwarder
        self.cfg = service
        self.settings = settings
        self.grpc_port = 0
        self.http_port: Optional[int] = None
        self._admission = Admission(service)
        self._limits = AttributeLimits.of(service)
        self._senders = SenderCheck(service.identity)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.forward_threads or service.max_inflight_requests,
            thread_name_prefix="otelguard-forward",
        )
        self._grpc: Optional[grpc.aio.Server] = None
        self._http: Optional[web.AppRunner] = None
        self._flush_task: Optional[asyncio.Task[None]] = None
        self._pending: list[tuple[int, Batch]] = []  # (the flush that released it, batch)
        self.health = ServiceHealth(pipeline, forwarder)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        require_upb(self.settings)
        await self.health.starting()
        security = ListenerSecurity(self.cfg.tls)  # before anything starts: config errors
        if self.cfg.state_dir:
            self.pipeline.open_state(Path(self.cfg.state_dir), self.cfg.journal_compact_bytes)
        self.pipeline.start()
        try:
            self._grpc, self.grpc_port = await start_grpc_server(
                self.cfg, security, self._admission, self.handle,
                register=self.health.register_grpc)
            if self.cfg.listen_http:
                self._http, self.http_port = await start_http_server(
                    self.cfg, security, self._admission, self.handle,
                    register=self.health.register_http)
        except BaseException:
            await self._close_listeners()
            self.pipeline.shutdown()
            raise
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
        await self.health.serving()

    async def stop(self) -> None:
        await self.health.draining()
        if self._flush_task is not None:
            self._flush_task.cancel()
            try:
                await self._flush_task
            except asyncio.CancelledError:
                pass
            self._flush_task = None
        await self._close_listeners()
        # Earlier flushes that could not go out (a flush cancelled mid-forward left its batches
        # here too), then everything the stages still hold: delivered, kept in the journal or
        # counted, never dropped silently.
        await self.flush_once(final=True, last=True)
        for batch in self.pipeline.shutdown():  # nothing is left to drain; a stage may differ
            await self._forward_or_count(batch, "shutdown_")
        self._executor.shutdown(wait=True)
        self.forwarder.shutdown()

    async def _close_listeners(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(self.settings.grace_seconds)
            self._grpc = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.flush_interval_seconds)
            try:
                await self.flush_once()
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.forwarder.probe_down_hops)
            except Exception:
                log.exception("flush failed")

    async def flush_once(self, final: bool = False, last: bool = False) -> None:
        """Forward records the stages released (and earlier flushes that could not go out).

        A batch leaves ``_pending`` only once forwarded or counted as dropped, so a flush
        cancelled mid-forward (``stop()``) leaves the rest for ``stop()`` to send. Batches that
        fail stay for the next tick; past ``_PENDING_FLUSH_LIMIT`` the oldest are dropped and
        counted in ``otelguard_dropped_total{stage="forward",reason="flush_<reason>"}``. ``last``
        (``stop()``, with ``final``: every window closes): what cannot go out is counted as
        ``shutdown_<reason>``, or, with a journal, left there for the next start. With a
        journal the stages settle what left, and the journal is persisted before anything does.
        """
        batches = self.pipeline.flush(final)
        self._pending.extend((self.pipeline.flushes, b) for b in batches)
        if not await self._persist() and not last:
            return  # write-ahead: nothing leaves that the journal could not take; next tick
        reason = ""
        failed: list[tuple[str, Batch]] = []
        for item in list(self._pending):
            try:
                await self._forward(item[1])
            except RequestError as exc:
                reason = exc.reason
                failed.append((reason, item[1]))
                continue
            except Exception:
                log.exception("forwarding held records failed; kept for the next flush")
                reason = "internal_error"
                failed.append((reason, item[1]))
                continue
            self._pending = [p for p in self._pending if p is not item]
        if last and self._pending:
            if self.pipeline.journaled:
                log.warning("%d held record(s) could not be forwarded (%s); kept in the journal "
                            "for the next start", sum(count_records(b) for _, b in self._pending),
                            reason)
            else:
                for why, batch in failed:
                    telemetry.dropped.labels("forward", "shutdown_" + why).inc(
                        count_records(batch))
                self._pending = []
        while len(self._pending) > _PENDING_FLUSH_LIMIT:
            telemetry.dropped.labels("forward", "flush_" + (reason or "backlog")).inc(
                count_records(self._pending.pop(0)[1]))
        if self.pipeline.journaled:
            self.pipeline.settle(min(n for n, _ in self._pending) - 1 if self._pending
                                 else self.pipeline.flushes)
            if last:
                await self._persist()

    async def _persist(self) -> bool:
        """Journaled held state on disk (a no-op without ``state_dir``); False if it failed."""
        if not self.pipeline.journaled:
            return True
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.pipeline.persist)
        except OSError:
            log.exception("writing the held-state journal failed")
            return False
        return True

    async def _forward_or_count(self, batch: Batch, prefix: str) -> None:
        try:
            await self._forward(batch)
        except RequestError as exc:
            telemetry.dropped.labels("forward", prefix + exc.reason).inc(count_records(batch))
        except Exception:
            log.exception("forwarding held records failed")
            telemetry.dropped.labels("forward", prefix + "internal_error").inc(
                count_records(batch))

    async def _forward(self, batch: Batch) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.forwarder.forward, batch)

    # --- the request path, shared by both protocols -------------------------------------------

    async def handle(self, sig: Signal, protocol: str, body: bytes,
                     decode: Callable[[bytes], Batch]) -> Message:
        """Parse, limit, process, forward an admitted body (the receivers hold its admission
        ticket); returns the Export response or raises RequestError."""
        t0 = time.perf_counter()
        try:
            try:
                batch = decode(body)
            except DecodeError as exc:
                text = str(exc)
                reason = "invalid_utf8" if "UTF-8" in text else "malformed"
                raise errors.invalid_argument(reason, f"cannot parse {sig.name} request: {text}")
            except jsoncodec.OtlpJsonError as exc:
                raise errors.invalid_argument("malformed", f"invalid OTLP JSON: {exc}")
            except (ValueError, UnicodeDecodeError) as exc:
                raise errors.invalid_argument("malformed", f"invalid OTLP JSON: {exc}")
            limited = self._limits.apply(batch)
            if limited.dropped:
                telemetry.dropped.labels("receive", "attribute_limit").inc(limited.dropped)
            if limited.truncated:
                telemetry.dropped.labels("receive", "attribute_value_truncated").inc(
                    limited.truncated)
            n = count_records(batch)
            metrics.records_received.labels(sig.name, protocol).inc(n)
            response = sig.response()
            if n == 0:
                return response  # OTLP: an empty request is a success, nothing to forward
            checked = self._senders.apply(batch)  # receiver/identity.py: before any stage
            if checked.refused_records:
                if checked.refused_records == n:
                    raise unverified(checked)
                telemetry.dropped.labels("receive", UNVERIFIED).inc(checked.refused_records)
            result = self.pipeline.process(batch)
            if result.state_changed and not await self._persist():
                # Not acknowledged: the caller retries; what this request already counted is
                # remembered by uid and not counted twice (noise_control).
                if result.records_released:
                    telemetry.dropped.labels("forward", "held_journal_io_error").inc(
                        result.records_released)
                self.pipeline.settle_request(result)
                raise RequestError(grpc.StatusCode.UNAVAILABLE, 503, "journal_io_error",
                                   "cannot persist held state; retry later", retry_after=1.0)
            rejected = checked.refused_records
            message = unverified(checked).message if rejected else ""
            if result.records_dropped:
                rejected += result.records_dropped
                message = "; ".join(m for m in (message, f"{result.records_dropped} record(s) "
                                    "dropped by the pipeline (see otelguard_dropped_total)") if m)
            if result.records_out:
                try:
                    report = await self._forward(result.batch)
                except RequestError as exc:
                    # The caller retries its own records; held ones released into this batch
                    # (pipeline.ReleasesRecords) were acknowledged earlier: count their loss.
                    if result.records_released:
                        telemetry.dropped.labels("forward", "held_" + exc.reason).inc(
                            result.records_released)
                    self.pipeline.settle_request(result)
                    raise
                self.pipeline.settle_request(result)
                if report.rejected:
                    rejected += report.rejected
                    message = "; ".join(m for m in (message, report.message) if m)
                if sig is LOGS:
                    await self._forward_detection_spans(result.batch)
            else:
                self.pipeline.settle_request(result)  # later stages consumed them all
            if rejected:
                partial = response.partial_success
                setattr(partial, sig.rejected_field, min(rejected, n))
                partial.error_message = message
            return response
        finally:
            metrics.request_latency.labels(sig.name).observe(time.perf_counter() - t0)

    async def _forward_detection_spans(self, batch: Batch) -> None:
        """The detections' spans (detection/spans.py), after their logs were delivered: a hop
        that fails now loses only the Jaeger view of them (counted), never the detections."""
        assert isinstance(batch, ExportLogsServiceRequest)
        spans = detection_spans(batch)
        if spans is None:
            return
        try:
            await self._forward(spans)
        except RequestError as exc:
            telemetry.dropped.labels("detection_spans", exc.reason).inc(count_records(spans))


class ServiceThread:
    """Runs a :class:`ProcessorService` on its own event loop thread (tests, the CLI)."""

    def __init__(self, service: ProcessorService) -> None:
        self.service = service
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="otelguard-processor", daemon=True)
        self._started = False

    def start(self, timeout: float = 30.0) -> ServiceThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.service.start(), self._loop)
        try:
            future.result(timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            raise
        self._started = True
        return self

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the service's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self._started:
            self._started = False
            self.call(self.service.stop(), timeout)
            self.call(_cancel_leftovers(), timeout)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._loop.close()

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _cancel_leftovers() -> None:
    """Connection tasks aiohttp left behind (it drains a refused request's unread body for up to
    10 s): cancelled before the loop closes, not destroyed while pending."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
