"""The processor service: OTLP/gRPC and OTLP/HTTP in, the pipeline, OTLP out (``otelguard processor``).

Where it sits (DESIGN.md §1): behind the Collector's load-balancing exporter, in front of the
Collector that fans out to Loki/Jaeger/Prometheus. Requests are handled on one asyncio loop
(``grpc.aio`` measured ~1.4-2x the sync server, reference §8.3): the body is size-checked,
admitted against the in-flight limits, parsed (upb, ~1 µs/record), run through the pipeline
inline (it does no I/O), then forwarded on a worker thread; the caller is answered only after the
next hops took the batch, so an OK means delivered.

Status mapping (gRPC / HTTP), every outcome counted in ``otelguard_processor_requests_total``:

- malformed protobuf or JSON, invalid UTF-8 in a string: INVALID_ARGUMENT / 400 (no retry);
- body over ``max_request_bytes`` (also after gunzip): RESOURCE_EXHAUSTED without RetryInfo / 413;
- in-flight request or byte limit reached: RESOURCE_EXHAUSTED with RetryInfo / 429 + Retry-After;
- next hop down: UNAVAILABLE with RetryInfo / 503 + Retry-After (the caller keeps the data);
- unknown Content-Type or Content-Encoding (HTTP only): 415;
- a stage dropped records for good (e.g. rate limited): OK with ``partial_success``; records a
  stage holds or collapses are not rejected (they leave later) and get a plain OK.

gRPC messages up to 4x ``max_request_bytes`` reach our size check (and are counted); larger ones
are refused by grpc itself with RESOURCE_EXHAUSTED before any handler runs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import logging
import signal as signal_module
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import grpc
from aiohttp import web
from google.protobuf.internal import api_implementation
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otelguard import otlpjson, telemetry
from otelguard.processors import errors, metrics, registry
from otelguard.processors import settings as settings_module
from otelguard.processors.config import (
    PipelineConfig,
    ProcessorSpec,
    ServiceSection,
    load_pipeline_config,
)
from otelguard.processors.detection.spans import detection_spans
from otelguard.processors.errors import ConfigError, ProcessorsError, RequestError
from otelguard.processors.forward import ExportTarget, Forwarder
from otelguard.processors.otlp import count_records
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.settings import Settings
from otelguard.processors.stage import Batch

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_PENDING_FLUSH_LIMIT = 64


@dataclass(frozen=True)
class _Signal:
    """Per-signal codec: request/response types and how partial success is spelled."""

    name: str
    request: type[Any]
    response: type[Any]
    json_decode: Callable[[bytes], Batch]
    rejected_field: str


LOGS = _Signal("logs", ExportLogsServiceRequest, ExportLogsServiceResponse,
               otlpjson.decode_logs, "rejected_log_records")
TRACES = _Signal("traces", ExportTraceServiceRequest, ExportTraceServiceResponse,
                 otlpjson.decode_traces, "rejected_spans")


def require_upb(settings: Settings) -> None:
    """Refuse to run on the pure-Python protobuf backend (100x slower) unless allowed."""
    kind = api_implementation.Type()
    if kind != "upb" and not settings.allow_pure_python_protobuf:
        raise ProcessorsError(
            f"protobuf backend is {kind!r}, not 'upb'; parsing would be ~100x slower. Install a "
            "protobuf wheel with upb, or set OTELGUARD_ALLOW_PURE_PYTHON_PROTOBUF=1"
        )


def _status_details(code: grpc.StatusCode, message: str, retry_after: Optional[float]) -> bytes:
    """google.rpc.Status with RetryInfo, as OTLP asks for throttling answers."""
    from google.protobuf.duration_pb2 import Duration
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status(code=code.value[0], message=message)
    if retry_after is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.CopyFrom(Duration(seconds=int(retry_after),
                                           nanos=int((retry_after % 1) * 1e9)))
        status.details.add().Pack(info)
    data: bytes = status.SerializeToString()
    return data


class _Admission:
    """In-flight requests and bytes; touched only from the event loop, so no lock."""

    def __init__(self, cfg: ServiceSection) -> None:
        self.cfg = cfg
        self.requests = 0
        self.bytes = 0

    def enter(self, size: int) -> None:
        if size > self.cfg.max_request_bytes:
            raise errors.too_large(
                f"request of {size} bytes exceeds max_request_bytes={self.cfg.max_request_bytes}")
        if (self.requests >= self.cfg.max_inflight_requests
                or self.bytes + size > self.cfg.max_inflight_bytes):
            raise errors.overloaded(
                f"{self.requests} requests / {self.bytes} bytes in flight; retry later", 1.0)
        self.requests += 1
        self.bytes += size
        metrics.inflight_requests.set(self.requests)
        metrics.inflight_bytes.set(self.bytes)

    def leave(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size
        metrics.inflight_requests.set(self.requests)
        metrics.inflight_bytes.set(self.bytes)


def _split_hostport(hostport: str) -> tuple[str, int]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError([errors.ConfigIssue("listen", f"expected HOST:PORT, got {hostport!r}")])
    return host.strip("[]") or "127.0.0.1", int(port)


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
        self._admission = _Admission(service)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.forward_threads or service.max_inflight_requests,
            thread_name_prefix="otelguard-forward",
        )
        self._grpc: Optional[grpc.aio.Server] = None
        self._http: Optional[web.AppRunner] = None
        self._flush_task: Optional[asyncio.Task[None]] = None
        self._pending: list[Batch] = []

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        require_upb(self.settings)
        self.pipeline.start()
        try:
            await self._start_grpc()
            if self.cfg.listen_http:
                await self._start_http(self.cfg.listen_http)
        except BaseException:
            await self._close_listeners()
            self.pipeline.shutdown()
            raise
        self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _start_grpc(self) -> None:
        limit = self.cfg.max_request_bytes * 4 + 65536
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ])
        for service_name, sig in ((LOGS_SERVICE, LOGS), (TRACE_SERVICE, TRACES)):
            handler = grpc.unary_unary_rpc_method_handler(self._grpc_handler(sig))
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service_name, {"Export": handler}),))
        host, port = _split_hostport(self.cfg.listen)
        bound = server.add_insecure_port(f"{host}:{port}")
        if bound == 0:
            raise ProcessorsError(f"cannot listen for OTLP/gRPC on {self.cfg.listen}")
        await server.start()
        self._grpc = server
        self.grpc_port = bound

    async def _start_http(self, listen: str) -> None:
        app = web.Application(client_max_size=self.cfg.max_request_bytes)
        app.router.add_post("/v1/logs", self._http_handler(LOGS))
        app.router.add_post("/v1/traces", self._http_handler(TRACES))
        runner = web.AppRunner(app, auto_decompress=False, access_log=None)
        await runner.setup()
        host, port = _split_hostport(listen)
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._http = runner
        addresses = runner.addresses  # (host, port, ...) per bound socket
        self.http_port = int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            try:
                await self._flush_task
            except asyncio.CancelledError:
                pass
            self._flush_task = None
        await self._close_listeners()
        flushed = self._pending + self.pipeline.shutdown()
        self._pending = []
        for batch in flushed:
            try:
                await self._forward(batch)
            except RequestError as exc:
                telemetry.dropped.labels("forward", "shutdown_" + exc.reason).inc(
                    count_records(batch))
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
            except Exception:
                log.exception("flush failed")

    async def flush_once(self) -> None:
        """Forward records the stages released (and earlier flushes that could not go out)."""
        batches = self._pending + self.pipeline.flush()
        self._pending = []
        for batch in batches:
            try:
                await self._forward(batch)
            except RequestError as exc:
                if len(self._pending) < _PENDING_FLUSH_LIMIT:
                    self._pending.append(batch)
                else:
                    telemetry.dropped.labels("forward", "flush_" + exc.reason).inc(
                        count_records(batch))

    async def _forward(self, batch: Batch) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.forwarder.forward, batch)

    # --- the request path, shared by both protocols -------------------------------------------

    async def handle(self, sig: _Signal, protocol: str, body: bytes,
                     decode: Callable[[bytes], Batch]) -> Message:
        """Admit, parse, process, forward; returns the Export response or raises RequestError."""
        t0 = time.perf_counter()
        size = len(body)
        self._admission.enter(size)
        try:
            try:
                batch = decode(body)
            except DecodeError as exc:
                text = str(exc)
                reason = "invalid_utf8" if "UTF-8" in text else "malformed"
                raise errors.invalid_argument(reason, f"cannot parse {sig.name} request: {text}")
            except otlpjson.OtlpJsonError as exc:
                raise errors.invalid_argument("malformed", f"invalid OTLP JSON: {exc}")
            except (ValueError, UnicodeDecodeError) as exc:
                raise errors.invalid_argument("malformed", f"invalid OTLP JSON: {exc}")
            n = count_records(batch)
            metrics.records_received.labels(sig.name, protocol).inc(n)
            response = sig.response()
            if n == 0:
                return response  # OTLP: an empty request is a success, nothing to forward
            result = self.pipeline.process(batch)
            rejected = 0
            message = ""
            if result.records_dropped:
                rejected += result.records_dropped
                message = f"{result.records_dropped} record(s) dropped by the pipeline " \
                          "(see otelguard_dropped_total)"
            if result.records_out:
                report = await self._forward(result.batch)
                if report.rejected:
                    rejected += report.rejected
                    message = "; ".join(m for m in (message, report.message) if m)
                if sig is LOGS:
                    await self._forward_detection_spans(result.batch)
            if rejected:
                partial = response.partial_success
                setattr(partial, sig.rejected_field, min(rejected, n))
                partial.error_message = message
            return response
        finally:
            self._admission.leave(size)
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

    def _count(self, sig: _Signal, protocol: str, outcome: str, dropped: int = 0) -> None:
        metrics.requests.labels(sig.name, protocol, outcome).inc()
        if dropped:
            telemetry.dropped.labels("receive", outcome).inc(dropped)

    @staticmethod
    def _outcome(response: Message, sig: _Signal) -> str:
        partial = getattr(response, "partial_success", None)
        if partial is not None and int(getattr(partial, sig.rejected_field)):
            return "partial"
        return "ok"

    # --- gRPC --------------------------------------------------------------------------------

    def _grpc_handler(
        self, sig: _Signal
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Any]:
        async def export(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                response = await self.handle(sig, "grpc", request, sig.request.FromString)
            except RequestError as exc:
                # Refused bad input is lost for good (counted once per request: records unknown).
                self._count(sig, "grpc", exc.reason, 0 if exc.retryable else 1)
                await context.abort(exc.code, exc.message, trailing_metadata=(
                    ("grpc-status-details-bin",
                     _status_details(exc.code, exc.message, exc.retry_after)),))
                raise AssertionError("unreachable: abort raises")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("internal error handling a %s export", sig.name)
                self._count(sig, "grpc", "internal", 1)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")
                raise AssertionError("unreachable: abort raises")
            self._count(sig, "grpc", self._outcome(response, sig))
            data: bytes = response.SerializeToString()
            return data

        return export

    # --- HTTP --------------------------------------------------------------------------------

    def _http_handler(self, sig: _Signal) -> Callable[[web.Request], Any]:
        async def export(request: web.Request) -> web.Response:
            ctype = request.content_type
            as_json = ctype == JSON
            try:
                if ctype not in (PROTOBUF, JSON):
                    raise errors.unsupported_media_type(
                        f"unsupported Content-Type {ctype!r}; use {PROTOBUF} or {JSON}")
                length = request.content_length
                if length is not None and length > self.cfg.max_request_bytes:
                    raise errors.too_large(f"request of {length} bytes exceeds "
                                           f"max_request_bytes={self.cfg.max_request_bytes}")
                try:
                    body = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    raise errors.too_large(
                        f"request exceeds max_request_bytes={self.cfg.max_request_bytes}"
                    ) from None
                body = self._decompress(body, request.headers.get("Content-Encoding", ""))
                decode: Callable[[bytes], Batch] = sig.json_decode if as_json \
                    else sig.request.FromString
                response = await self.handle(sig, "http", body, decode)
            except RequestError as exc:
                self._count(sig, "http", exc.reason, 0 if exc.retryable else 1)
                return self._http_error(exc, as_json)
            except Exception as exc:
                log.exception("internal error handling a %s export", sig.name)
                self._count(sig, "http", "internal", 1)
                return self._http_error(RequestError(grpc.StatusCode.INTERNAL, 500, "internal",
                                                     f"internal error: {exc}"), as_json)
            self._count(sig, "http", self._outcome(response, sig))
            if as_json:
                return web.Response(body=otlpjson.encode(response).encode(), content_type=JSON)
            return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)

        return export

    def _decompress(self, body: bytes, encoding: str) -> bytes:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding not in ("gzip", "deflate"):
            raise errors.unsupported_media_type(
                f"unsupported Content-Encoding {encoding!r}; use gzip or none")
        limit = self.cfg.max_request_bytes
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

    @staticmethod
    def _http_error(exc: RequestError, as_json: bool) -> web.Response:
        from google.rpc import status_pb2

        status = status_pb2.Status()
        status.ParseFromString(_status_details(exc.code, exc.message, exc.retry_after))
        headers = {}
        if exc.retry_after is not None:
            headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
        if as_json:
            return web.Response(status=exc.http_status, body=otlpjson.encode(status).encode(),
                                content_type=JSON, headers=headers)
        return web.Response(status=exc.http_status, body=status.SerializeToString(),
                            content_type=PROTOBUF, headers=headers)


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
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._loop.close()

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- command line ------------------------------------------------------------------------------


def default_specs(rules: Optional[Sequence[str]]) -> tuple[ProcessorSpec, ...]:
    """Without --config: detection (when its package loads) then noise_control."""
    specs: list[ProcessorSpec] = []
    for type_name in registry.type_names():
        e = registry.entry(type_name)
        if e.rules_field is None:
            continue
        try:
            u = registry.unit(type_name)
        except ProcessorsError:
            if rules:
                raise
            continue
        specs.append(ProcessorSpec(type_name, type_name, u.default_config()))
    specs.append(ProcessorSpec("noise_control", "noise_control",
                               registry.unit("noise_control").default_config()))
    return tuple(specs)


def apply_rules(specs: Sequence[ProcessorSpec],
                rules: Optional[Sequence[str]]) -> tuple[ProcessorSpec, ...]:
    """--rules FILE...: set the rules field of every stage that takes rules."""
    if not rules:
        return tuple(specs)
    out = []
    takers = 0
    for spec in specs:
        field = registry.unit(spec.type).rules_field
        if field is not None:
            takers += 1
            spec = dataclasses.replace(
                spec, config=dataclasses.replace(spec.config, **{field: tuple(rules)}))
        out.append(spec)
    if not takers:
        raise ConfigError([errors.ConfigIssue(
            "--rules", "no stage in the pipeline takes rules files")])
    return tuple(out)


def build_exporters(specs: Sequence[str]) -> list[tuple[str, ExportTarget]]:
    """Export specs (``otlp:HOST:PORT``, ``otlphttp:URL``, ``jsonl:PATH``) into transports."""
    from otelguard.transport.spec import parse_spec

    out: list[tuple[str, ExportTarget]] = []
    issues: list[errors.ConfigIssue] = []
    for i, spec in enumerate(specs):
        try:
            target = parse_spec(spec)
        except Exception as exc:
            issues.append(errors.ConfigIssue(f"exporters[{i}]", f"{spec!r}: {exc}"))
            continue
        out.append((f"{spec.partition(':')[0]}#{i}", target))
    if issues:
        raise ConfigError(issues)
    return out


def build_service(cfg: PipelineConfig, settings: Optional[Settings] = None,
                  exporters: Optional[Sequence[tuple[str, ExportTarget]]] = None,
                  ) -> ProcessorService:
    """The service for a validated config (exporters built from ``cfg.exporters`` if not given)."""
    st = settings or settings_module.read()
    pipeline = Pipeline.from_specs(cfg.processors, cfg.service.restore_on_failure)
    hops = list(exporters) if exporters is not None else build_exporters(cfg.exporters)
    return ProcessorService(pipeline, Forwarder(hops, cfg.forward), cfg.service, st)


def main(args: argparse.Namespace) -> int:
    """``otelguard processor``: run until SIGINT/SIGTERM; config errors exit 2 with every issue."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    try:
        st = settings_module.read()
        require_upb(st)
        cfg = load_pipeline_config(args.config) if args.config else PipelineConfig(
            processors=default_specs(args.rules))
        overrides: dict[str, Any] = {}
        if not args.config or args.listen != settings_module.DEFAULT_LISTEN:
            overrides["listen"] = args.listen
        if args.listen_http:
            overrides["listen_http"] = args.listen_http
        if not args.config or args.metrics != settings_module.DEFAULT_METRICS:
            overrides["metrics"] = args.metrics
        cfg = dataclasses.replace(
            cfg,
            service=dataclasses.replace(cfg.service, **overrides),
            exporters=tuple(cfg.exporters) + tuple(args.export or ()),
            processors=apply_rules(cfg.processors, args.rules),
        )
        if not cfg.exporters:
            raise ConfigError([errors.ConfigIssue(
                "exporters", "no exporter: give --export SPEC or exporters: in the config")])
        service = build_service(cfg, st)
    except (ConfigError, ProcessorsError) as exc:
        print(f"otelguard processor: {exc}")
        return 2
    if cfg.service.metrics:
        host, port = _split_hostport(cfg.service.metrics)
        bound = telemetry.serve(host, port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
    return asyncio.run(_serve(service))


async def _serve(service: ProcessorService) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal_module.SIGINT, signal_module.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    log.info("OTLP/gRPC on %s (port %d)%s; stages: %s; exporters: %s", service.cfg.listen,
             service.grpc_port,
             f", OTLP/HTTP on port {service.http_port}" if service.http_port else "",
             ", ".join(service.pipeline.stage_names) or "none",
             ", ".join(service.forwarder.exporter_names))
    await stop.wait()
    log.info("stopping: draining requests and flushing held records")
    await service.stop()
    return 0

