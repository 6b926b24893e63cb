"""OTLP/JSON: the encoding of the Collector's file exporter and of OTLP/HTTP with JSON bodies.

Per the OTLP spec the JSON mapping is protobuf's canonical one (lowerCamelCase keys, int64 and
fixed64 as decimal strings, enums as integers) with one exception: ``traceId``, ``spanId`` and
``parentSpanId`` are hex strings, not base64. Encoding writes exactly that, so our JSON lines
are what ``otelcol``'s file exporter writes. Decoding accepts both spellings of keys
(camelCase and snake_case), int64 as strings or numbers, and ids as hex (spec) or base64 (some
old SDKs), so it reads the Collector's output and what SDKs POST.

Cost: protobuf's json_format walks descriptors in Python, ~20-40 µs per LogRecord; fine for
files and the console, not for the agent's hot path (which stays binary).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Union

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

Request = Union[ExportLogsServiceRequest, ExportTraceServiceRequest]

# JSON names of the id fields, in both spellings accepted on input.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


class OtlpJsonError(ValueError):
    """A JSON document that is not valid OTLP (the message says where)."""


def to_dict(msg: Message) -> dict[str, Any]:
    """The OTLP/JSON object of a request (ids in hex, int64 as strings, enums as integers)."""
    obj: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=False, use_integers_for_enums=True
    )
    _ids_b64_to_hex(obj)
    return obj


def encode(msg: Message) -> str:
    """One compact JSON line (no newline), as the Collector's file exporter writes per request."""
    return json.dumps(to_dict(msg), separators=(",", ":"), ensure_ascii=False)


def from_dict(obj: Any, msg: Message) -> Message:
    """Fill ``msg`` from an OTLP/JSON object; unknown fields are errors (nothing is lost silently)."""
    if not isinstance(obj, dict):
        raise OtlpJsonError(f"expected a JSON object for {msg.DESCRIPTOR.name}, got {type(obj).__name__}")
    fixed = _ids_hex_to_b64(obj, "$")
    try:
        json_format.ParseDict(fixed, msg, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise OtlpJsonError(f"invalid OTLP/JSON {msg.DESCRIPTOR.name}: {exc}") from exc
    return msg


def decode_logs(text: Union[str, bytes]) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    from_dict(_loads(text), req)
    return req


def decode_traces(text: Union[str, bytes]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    from_dict(_loads(text), req)
    return req


def decode_line(text: Union[str, bytes]) -> Request:
    """A file-exporter line holding either signal (decided by its top-level key)."""
    obj = _loads(text)
    req: Request
    if "resourceLogs" in obj or "resource_logs" in obj:
        req = ExportLogsServiceRequest()
    elif "resourceSpans" in obj or "resource_spans" in obj:
        req = ExportTraceServiceRequest()
    else:
        raise OtlpJsonError(f"line holds neither resourceLogs nor resourceSpans: keys {sorted(obj)[:5]}")
    from_dict(obj, req)
    return req


def _loads(text: Union[str, bytes]) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OtlpJsonError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise OtlpJsonError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _ids_b64_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_b64_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _ids_b64_to_hex(item)


def _ids_hex_to_b64(node: Any, path: str) -> Any:
    """A copy with id fields turned into the base64 json_format expects (hex or base64 accepted)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                out[key] = base64.b64encode(_id_bytes(value, f"{path}.{key}")).decode("ascii")
            else:
                out[key] = _ids_hex_to_b64(value, f"{path}.{key}")
        return out
    if isinstance(node, list):
        return [_ids_hex_to_b64(item, f"{path}[{i}]") for i, item in enumerate(node)]
    return node


def _id_bytes(value: str, path: str) -> bytes:
    if value == "":
        return b""
    if len(value) in (16, 32):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OtlpJsonError(f"{path}: id {value!r} is neither hex nor base64") from exc
    if len(raw) not in (8, 16):
        raise OtlpJsonError(f"{path}: id {value!r} decodes to {len(raw)} bytes, expected 8 or 16")
    return raw
