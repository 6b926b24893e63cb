"""Events -> OTLP requests: logs as wire bytes (agent) or protobuf objects (in-process run), spans.

The agent only needs bytes, so :meth:`OtlpBuilder.logs_bytes` hand-encodes them
(:mod:`otelguard.exporter.wire`). ``otelguard run`` feeds protobuf objects to the processors;
:meth:`OtlpBuilder.logs` parses those bytes, which bench/exporter_build.py measured to be faster
than setting fields one by one (33-attribute records: wire ~10 µs, wire + upb parse ~13-16 µs,
field by field ~44 µs, the OTel SDK ~130 µs; see docs/benchmarks.md).
:meth:`OtlpBuilder.logs_fields` keeps the field-by-field path as the reference the tests and the
benchmark compare against.

Every event passes through the :class:`~otelguard.exporter.spans.SpanTracker` first (ids for
the record, span bookkeeping); finished spans are collected with :meth:`OtlpBuilder.traces`.
With a :class:`~otelguard.transport.identity.ResourceSigner` every Resource of a request is
stamped with the node's MAC (one nonce per request, one HMAC per Resource: the Resource is then
encoded per request instead of taken from the cache, a few µs per Resource).
One builder per exporter thread: nothing here is locked.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union, cast

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from otelguard.ebpf.events import AttrValue, Event
from otelguard.ebpf.lane import FastLane, LaneRun
from otelguard.exporter import mapping
from otelguard.exporter.settings import NodeIdentity, node_identity
from otelguard.exporter.spans import ResourceKey, SpanData, SpanTracker, run_end
from otelguard.exporter.wire import LogsWireEncoder
from otelguard.otlp.messages import set_any
from otelguard.transport.identity import ResourceSigner, SenderIdentity


def _set(target: AnyValue, value: AttrValue) -> None:
    if isinstance(value, list):
        arr = target.array_value
        arr.SetInParent()  # an empty list is an empty array, as the wire encoders send it
        for item in value:
            set_any(arr.values.add(), item)
    else:
        set_any(target, value)


def _kv(key: str, value: AttrValue) -> KeyValue:
    kv = KeyValue(key=key)
    _set(kv.value, value)
    return kv


def signer_for(identity: SenderIdentity, node: NodeIdentity) -> Optional[ResourceSigner]:
    """The signer ``exporter.identity`` configures for this node (None: Resources unsigned)."""
    path = identity.token_path(node.node_name)
    return ResourceSigner(node.node_name, path) if path else None


class OtlpBuilder:
    def __init__(self, node: Optional[NodeIdentity] = None, spans: Optional[SpanTracker] = None,
                 clock: Callable[[], int] = time.time_ns,
                 signer: Optional[ResourceSigner] = None,
                 lane: Optional[FastLane] = None) -> None:
        self.node = node or node_identity()
        self.signer = signer
        # the sensor's native lane: registered from the records encoded here (ebpf/lane.py)
        self.lane = lane
        self.spans = spans if spans is not None else SpanTracker()
        if lane is not None:  # ids the tracker forgets must not live on in the lane
            self.spans.released = lane.forget
        self._clock = clock
        self._wire = LogsWireEncoder(mapping.SCOPE_NAME, mapping.SCOPE_VERSION)
        self._resource_bytes: dict[ResourceKey, bytes] = {}

    # -- logs ----------------------------------------------------------------------------------
    def logs_bytes(self, events: Sequence[Union[Event, LaneRun]]) -> bytes:
        """A serialized ExportLogsServiceRequest (empty bytes for no events). Runs the sensor's
        native lane encoded (LaneRun) are added as they are, in order."""
        observed = self._clock()
        observe_run = self.spans.observe_run
        record_into = self._wire.record_into
        lane = self.lane
        pieces: dict[ResourceKey, list[bytes]] = {}
        sizes: dict[ResourceKey, int] = {}
        start, n = 0, len(events)
        while start < n:
            item = events[start]
            if not isinstance(item, Event):  # a LaneRun: its records are final bytes
                key = (item.container_id, item.pod_uid)
                self.spans.touch(item.container_id, item.pid, item.process_start_ns,
                                 item.last_time_ns)
                out = pieces.get(key)
                if out is None:
                    out = pieces[key] = []
                    sizes[key] = 0
                out.append(item.data)
                sizes[key] += len(item.data)
                start += 1
                continue
            # a run of one process version shares its span ids and its Resource
            end = run_end(events, start)
            run = cast(Sequence[Event], events[start:end])
            trace_id, span_id = observe_run(run)
            first = run[0]
            key = (first.container_id, first.pod_uid)
            out = pieces.get(key)
            if out is None:
                out = pieces[key] = []
                sizes[key] = 0
            size = 0
            for ev in run:
                size += record_into(out, ev, observed, trace_id, span_id)
            sizes[key] += size
            if lane is not None:
                lane.learn(run[-1], trace_id, span_id)
            start = end
        if self.signer is not None:
            nonce = self.signer.next_nonce()
            return self._wire.request([(self._wire.resource(self._signed_attrs(key, nonce)), out,
                                        sizes[key]) for key, out in pieces.items()])
        return self._wire.request([(self._resource(key), out, sizes[key])
                                   for key, out in pieces.items()])

    def _signed_attrs(self, key: ResourceKey, nonce: str) -> list[tuple[str, AttrValue]]:
        attrs = mapping.resource_attrs(key, self.node)
        if self.signer is not None:
            attrs += self.signer.stamp(dict(attrs), nonce)
        return attrs

    def logs(self, events: Sequence[Event]) -> ExportLogsServiceRequest:
        """The same request as protobuf objects, for processors that work in place."""
        req = ExportLogsServiceRequest()
        req.ParseFromString(self.logs_bytes(events))
        return req

    def logs_fields(self, events: Sequence[Event]) -> ExportLogsServiceRequest:
        """Reference path: the request built field by field with opentelemetry-proto."""
        observed = self._clock()
        req = ExportLogsServiceRequest()
        scopes: dict[ResourceKey, ScopeLogs] = {}
        for ev in events:
            trace_id, span_id = self.spans.observe(ev)
            key = mapping.resource_key(ev)
            sl = scopes.get(key)
            if sl is None:
                rl = req.resource_logs.add()
                rl.resource.attributes.extend(
                    _kv(k, v) for k, v in mapping.resource_attrs(key, self.node))
                sl = rl.scope_logs.add()
                sl.scope.name = mapping.SCOPE_NAME
                sl.scope.version = mapping.SCOPE_VERSION
                scopes[key] = sl
            rec = sl.log_records.add()
            rec.time_unix_nano = ev.time_ns
            rec.observed_time_unix_nano = observed
            rec.severity_number = mapping.SEVERITY_INFO
            rec.severity_text = mapping.SEVERITY_TEXT_INFO
            rec.body.string_value = mapping.record_body(ev)
            for k, v in mapping.record_attrs(ev):
                kv = rec.attributes.add()
                kv.key = k
                _set(kv.value, v)
            if trace_id:
                rec.trace_id = trace_id
                rec.span_id = span_id
            rec.event_name = ev.name
        return req

    def _resource(self, key: ResourceKey) -> bytes:
        res = self._resource_bytes.get(key)
        if res is None:
            if len(self._resource_bytes) >= 4096:
                self._resource_bytes.clear()
            res = self._resource_bytes[key] = self._wire.resource(
                mapping.resource_attrs(key, self.node))
        return res

    # -- spans ---------------------------------------------------------------------------------
    def traces_bytes(self, finished: Optional[Sequence[SpanData]] = None) -> bytes:
        """Finished spans (by default: those the tracker collected since the last call) as a
        serialized ExportTraceServiceRequest, hand-encoded like the logs (empty for none). A
        process span carries its process's ~30 attributes: field by field they cost ~0.5 ms
        per exec in ``otelguard run`` (docs/benchmarks.md, "Spans as wire bytes")."""
        spans = self.spans.take_finished() if finished is None else finished
        if not spans:
            return b""
        wire = self._wire
        nonce = self.signer.next_nonce() if self.signer is not None else ""
        pieces: dict[ResourceKey, list[bytes]] = {}
        for sd in spans:
            out = pieces.get(sd.resource)
            if out is None:
                out = pieces[sd.resource] = []
            out.append(wire.span(sd))
        groups = []
        for key, out in pieces.items():
            res = (wire.resource(self._signed_attrs(key, nonce)) if self.signer is not None
                   else self._resource(key))
            groups.append((res, out, sum(map(len, out))))
        return wire.request(groups)

    def traces(self, finished: Optional[Sequence[SpanData]] = None) -> Optional[ExportTraceServiceRequest]:
        """The same request as protobuf objects (None for no spans)."""
        data = self.traces_bytes(finished)
        if not data:
            return None
        req = ExportTraceServiceRequest()
        req.ParseFromString(data)
        return req

    def traces_fields(self, finished: Optional[Sequence[SpanData]] = None
                      ) -> Optional[ExportTraceServiceRequest]:
        """Reference path: the request built field by field with opentelemetry-proto."""
        spans = self.spans.take_finished() if finished is None else finished
        if not spans:
            return None
        req = ExportTraceServiceRequest()
        by_resource: dict[ResourceKey, ResourceSpans] = {}
        nonce = self.signer.next_nonce() if self.signer is not None else ""
        for sd in spans:
            rs = by_resource.get(sd.resource)
            if rs is None:
                rs = by_resource[sd.resource] = req.resource_spans.add()
                rs.resource.attributes.extend(
                    _kv(k, v) for k, v in self._signed_attrs(sd.resource, nonce))
                ss = rs.scope_spans.add()
                ss.scope.name = mapping.SCOPE_NAME
                ss.scope.version = mapping.SCOPE_VERSION
            span = rs.scope_spans[0].spans.add()
            span.trace_id = sd.trace_id
            span.span_id = sd.span_id
            if sd.parent_span_id:
                span.parent_span_id = sd.parent_span_id
            span.name = sd.name
            span.kind = sd.kind
            span.start_time_unix_nano = sd.start_ns
            span.end_time_unix_nano = sd.end_ns
            span.attributes.extend(_kv(k, v) for k, v in sd.attrs.items())
            for trace_id, span_id in sd.links:
                link = span.links.add()
                link.trace_id = trace_id
                link.span_id = span_id
            if sd.status_code:
                span.status.code = sd.status_code
                span.status.message = sd.status_message
        return req

    def shutdown_traces(self) -> Optional[ExportTraceServiceRequest]:
        """End every open span (reason ``shutdown``) and return all finished spans."""
        self.spans.end_all(self._clock())
        return self.traces()
