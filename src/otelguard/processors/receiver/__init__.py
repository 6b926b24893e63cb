"""The processor service's receiver: OTLP/gRPC and OTLP/HTTP in, the pipeline, OTLP out.

Where it sits (docs/architecture.md): behind the Collector's load-balancing exporter, in front of
the Collector that fans out to Loki/Jaeger/Prometheus. ``protocol`` holds what both protocols
share, ``grpc_server`` and ``http_server`` decode requests into the one request path of
``service.ProcessorService``, ``admission`` holds the in-flight limits, ``limits`` the
OpenTelemetry attribute limits, ``health`` the gRPC health service and ``/healthz``/``/readyz``.
The command that builds and runs a service is :mod:`otelguard.processors.cli`.

Status mapping (gRPC / HTTP), every outcome counted in ``otelguard_processor_requests_total``
(except calls grpc refuses before a handler runs, see ``grpc_server``); nothing a client sends
yields a 500:

- malformed protobuf or JSON, invalid UTF-8 in a string, AnyValue nested past
  ``max_json_depth``: INVALID_ARGUMENT / 400 (no retry);
- body over ``max_request_bytes`` (also while inflating gzip/deflate): RESOURCE_EXHAUSTED without
  RetryInfo / 413;
- in-flight request or byte limit reached (bytes inflated count too): RESOURCE_EXHAUSTED with
  RetryInfo / 429 + Retry-After;
- body or message not read within ``body_read_timeout_seconds``: DEADLINE_EXCEEDED / 408; an
  HTTP client gone mid-body: counted as ``client_disconnected``;
- next hop down: UNAVAILABLE with RetryInfo / 503 + Retry-After (the caller keeps the data);
- unknown Content-Type or Content-Encoding (HTTP only): 415;
- attributes over the attribute limits are dropped or truncated, not refused (OK; counted in
  ``dropped_attributes_count`` and ``otelguard_dropped_total{stage="receive"}``);
- a stage dropped records for good (e.g. rate limited): OK with ``partial_success``; records a
  stage holds or collapses are not rejected (they leave later) and get a plain OK.
"""

from otelguard.processors.receiver.service import ProcessorService, ServiceThread

__all__ = ["ProcessorService", "ServiceThread"]
