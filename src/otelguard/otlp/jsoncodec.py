"""OTLP/JSON: the encoding of the Collector's file exporter and of OTLP/HTTP with JSON bodies.

Per the OTLP spec the JSON mapping is protobuf's canonical one (lowerCamelCase keys, int64 and
fixed64 as decimal strings, enums as integers) with one exception: ``traceId``, ``spanId`` and
``parentSpanId`` are hex strings, not base64. Encoding writes exactly that, so our JSON lines
are what ``otelcol``'s file exporter writes. Decoding accepts both spellings of keys
(camelCase and snake_case), int64 as strings or numbers, and ids as hex (spec) or base64 (some
old SDKs), so it reads the Collector's output and what SDKs POST.

Cost: protobuf's json_format measured ~130 µs per LogRecord to encode and ~240 µs to decode
here, which would cap ``otelguard run``'s JSON lines and the service's OTLP/HTTP JSON at a few
thousand records/s. So both directions are descriptor-driven walkers of our own: encoding reads
``ListFields()`` (C) into dicts; decoding turns the JSON object into protobuf wire bytes (the
field tables are built once per message type) and parses them with upb. Tests check both
against json_format. Any message type works. Decoding ignores fields the installed
opentelemetry-proto does not know, as the OTLP spec requires of OTLP/JSON receivers (a newer
sender may add fields); they are dropped, not passed on.

Decoding refuses AnyValue nesting (``kvlistValue``/``arrayValue`` inside each other) deeper than
``max_depth`` (default :data:`DEFAULT_MAX_DEPTH`) with an :class:`OtlpJsonError`, before the
walker's recursion could exhaust the stack: protobuf (upb) itself refuses messages nested past
100 levels, which is 32 kvlist or 48 array levels, so the default keeps JSON to what a protobuf
request can carry.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any, Callable, Optional, Union

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard.otlp.wire import varint

Request = Union[ExportLogsServiceRequest, ExportTraceServiceRequest]

# JSON names of the id fields, in both spellings accepted on input.
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
DEFAULT_MAX_DEPTH = 32  # AnyValue nesting levels accepted on decode


class OtlpJsonError(ValueError):
    """A JSON document that is not valid OTLP (the message says where)."""


class _TooDeep(OtlpJsonError):
    """AnyValue nesting past ``max_depth`` (from_dict adds the limit to the message)."""


def to_dict(msg: Message) -> dict[str, Any]:
    """The OTLP/JSON object of a message (ids in hex, int64 as strings, enums as integers)."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        conv = _TO_JSON.get(fd.type)
        if fd.is_repeated:
            if fd.type == _MESSAGE:
                if fd.message_type.full_name == _KEY_VALUE:  # the hot path: attributes
                    out[fd.json_name] = [_key_value(kv) for kv in value]
                else:
                    out[fd.json_name] = [to_dict(v) for v in value]
            else:
                out[fd.json_name] = [_scalar_to_json(fd, v, conv) for v in value]
        elif fd.type == _MESSAGE:
            out[fd.json_name] = to_dict(value)
        else:
            out[fd.json_name] = _scalar_to_json(fd, value, conv)
    return out


def encode(msg: Message) -> str:
    """One compact JSON line (no newline), as the Collector's file exporter writes per request."""
    return json.dumps(to_dict(msg), separators=(",", ":"), ensure_ascii=False)


def from_dict(obj: Any, msg: Message, max_depth: int = DEFAULT_MAX_DEPTH) -> Message:
    """Fill ``msg`` from an OTLP/JSON object. Fields this opentelemetry-proto does not know are
    ignored, as the OTLP spec requires of receivers (a newer sender may add fields); a known
    field of the wrong type is an error, so is AnyValue nesting deeper than ``max_depth``."""
    if not isinstance(obj, dict):
        raise OtlpJsonError(f"expected a JSON object for {msg.DESCRIPTOR.name}, got {type(obj).__name__}")
    try:
        data = _encode_wire(_table(msg.DESCRIPTOR), obj, "$", max_depth)
    except _TooDeep as exc:
        raise OtlpJsonError(f"{exc} of {max_depth} levels") from None
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:  # not expected: we wrote the bytes
        raise OtlpJsonError(f"invalid OTLP/JSON {msg.DESCRIPTOR.name}: {exc}") from exc
    return msg


# --- protobuf -> JSON ---------------------------------------------------------------------------
_KEY_VALUE = "opentelemetry.proto.common.v1.KeyValue"


def _key_value(kv: Message) -> dict[str, Any]:
    if kv.key_strindex:  # profiles' dictionary form: rare, take the generic path
        return to_dict(kv)
    if not kv.HasField("value"):
        return {"key": kv.key} if kv.key else {}
    out: dict[str, Any] = {"key": kv.key} if kv.key else {}
    out["value"] = _any_value(kv.value)
    return out


def _any_value(v: Message) -> dict[str, Any]:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": v.string_value}
    if kind == "int_value":
        return {"intValue": str(v.int_value)}
    if kind == "bool_value":
        return {"boolValue": v.bool_value}
    if kind == "array_value":
        values = v.array_value.values
        return {"arrayValue": {"values": [_any_value(x) for x in values]} if values else {}}
    return to_dict(v)  # double (NaN/Infinity spelling), bytes, kvlist, strindex: generic path
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_INT64_TYPES = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64,
                          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
                          FieldDescriptor.TYPE_SINT64})
_TO_JSON: dict[int, Callable[[Any], Any]] = {t: str for t in _INT64_TYPES}


def _scalar_to_json(fd: FieldDescriptor, value: Any, conv: Optional[Callable[[Any], Any]]) -> Any:
    if conv is not None:
        return conv(value)
    t = fd.type
    if t == FieldDescriptor.TYPE_BYTES:
        if fd.json_name in _ID_KEYS:
            return value.hex()
        return base64.b64encode(value).decode("ascii")
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    return value  # string, bool, int32 family, enum (as its number)


# --- JSON -> protobuf wire bytes ----------------------------------------------------------------
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = 0xFFFFFFFFFFFFFFFF


class _Field:
    __slots__ = ("fd", "tag", "table", "repeated", "is_id", "is_any")

    def __init__(self, fd: FieldDescriptor) -> None:
        self.fd = fd
        wire = _WIRE_TYPE[fd.type]
        self.tag = varint((fd.number << 3) | wire)
        self.table: Optional[dict[str, "_Field"]] = None
        self.repeated = fd.is_repeated
        self.is_id = fd.json_name in _ID_KEYS
        self.is_any = fd.type == _MESSAGE and fd.message_type.full_name == _ANY_VALUE


_WIRE_TYPE = {
    FieldDescriptor.TYPE_DOUBLE: _I64, FieldDescriptor.TYPE_FLOAT: _I32,
    FieldDescriptor.TYPE_INT64: _VARINT, FieldDescriptor.TYPE_UINT64: _VARINT,
    FieldDescriptor.TYPE_INT32: _VARINT, FieldDescriptor.TYPE_FIXED64: _I64,
    FieldDescriptor.TYPE_FIXED32: _I32, FieldDescriptor.TYPE_BOOL: _VARINT,
    FieldDescriptor.TYPE_STRING: _LEN, FieldDescriptor.TYPE_MESSAGE: _LEN,
    FieldDescriptor.TYPE_BYTES: _LEN, FieldDescriptor.TYPE_UINT32: _VARINT,
    FieldDescriptor.TYPE_ENUM: _VARINT, FieldDescriptor.TYPE_SFIXED32: _I32,
    FieldDescriptor.TYPE_SFIXED64: _I64, FieldDescriptor.TYPE_SINT32: _VARINT,
    FieldDescriptor.TYPE_SINT64: _VARINT,
}
_TABLES: dict[str, dict[str, _Field]] = {}
_I64_RANGE = (-(2**63), 2**63 - 1)
_I32_RANGE = (-(2**31), 2**31 - 1)
_RANGES = {
    FieldDescriptor.TYPE_INT64: _I64_RANGE, FieldDescriptor.TYPE_SINT64: _I64_RANGE,
    FieldDescriptor.TYPE_SFIXED64: _I64_RANGE, FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1), FieldDescriptor.TYPE_INT32: _I32_RANGE,
    FieldDescriptor.TYPE_SINT32: _I32_RANGE, FieldDescriptor.TYPE_SFIXED32: _I32_RANGE,
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
}


def _table(desc: Descriptor) -> dict[str, _Field]:
    """json name and proto name -> field, built once per message type."""
    table = _TABLES.get(desc.full_name)
    if table is None:
        table = _TABLES[desc.full_name] = {}
        for fd in desc.fields:
            f = _Field(fd)
            table[fd.json_name] = table[fd.name] = f
        for f in list(table.values()):
            if f.fd.type == _MESSAGE and f.table is None:
                f.table = _table(f.fd.message_type)
    return table


def _len_field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def _encode_wire(table: dict[str, _Field], obj: dict[str, Any], path: str, depth: int) -> bytes:
    """Wire bytes of one message; ``depth`` is how many more AnyValue levels may nest."""
    parts: list[bytes] = []
    for key, value in obj.items():
        f = table.get(key)
        if f is None or value is None:  # unknown fields are ignored, as OTLP/JSON requires
            continue
        where = f"{path}.{key}"
        if f.repeated:
            if not isinstance(value, list):
                raise OtlpJsonError(f"{where}: expected a list, got {type(value).__name__}")
            for i, item in enumerate(value):
                parts.append(_encode_field(f, item, f"{where}[{i}]", depth))
        else:
            parts.append(_encode_field(f, value, where, depth))
    return b"".join(parts)


def _encode_field(f: _Field, value: Any, path: str, depth: int) -> bytes:
    t = f.fd.type
    try:
        if t == _MESSAGE:
            if not isinstance(value, dict):
                raise OtlpJsonError(f"{path}: expected an object, got {type(value).__name__}")
            assert f.table is not None
            if f.is_any:
                if depth <= 0:
                    raise _TooDeep(f"{path}: AnyValue nested deeper than the limit")
                depth -= 1
            return _len_field(f.tag, _encode_wire(f.table, value, path, depth))
        if t == FieldDescriptor.TYPE_STRING:
            if not isinstance(value, str):
                raise OtlpJsonError(f"{path}: expected a string, got {type(value).__name__}")
            return _len_field(f.tag, value.encode("utf-8"))
        if t == FieldDescriptor.TYPE_BYTES:
            if not isinstance(value, str):
                raise OtlpJsonError(f"{path}: expected a string, got {type(value).__name__}")
            raw = _id_bytes(value, path) if f.is_id else base64.b64decode(value, validate=True)
            return _len_field(f.tag, raw)
        if t == FieldDescriptor.TYPE_BOOL:
            if not isinstance(value, bool):
                raise OtlpJsonError(f"{path}: expected true/false, got {value!r}")
            return f.tag + (b"\x01" if value else b"\x00")
        if t == FieldDescriptor.TYPE_ENUM:
            if isinstance(value, str):
                ev = f.fd.enum_type.values_by_name.get(value)
                if ev is None:
                    raise OtlpJsonError(f"{path}: unknown {f.fd.enum_type.name} value {value!r}")
                return f.tag + varint(ev.number)
            n = _integer(value, path)
            if not _I32_RANGE[0] <= n <= _I32_RANGE[1]:
                raise OtlpJsonError(f"{path}: {n} out of range for {f.fd.name}")
            return f.tag + varint(n)
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            num = float(value) if isinstance(value, str) else value
            if isinstance(num, bool) or not isinstance(num, (int, float)):
                raise OtlpJsonError(f"{path}: expected a number, got {value!r}")
            fmt = "<d" if t == FieldDescriptor.TYPE_DOUBLE else "<f"
            return f.tag + struct.pack(fmt, float(num))
        n = _integer(value, path)
        lo, hi = _RANGES[t]
        if not lo <= n <= hi:
            raise OtlpJsonError(f"{path}: {n} out of range for {f.fd.name}")
        if t in (FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64):
            return f.tag + struct.pack("<Q", n & _U64)
        if t in (FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32):
            return f.tag + struct.pack("<I", n & 0xFFFFFFFF)
        if t in (FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64):
            return f.tag + varint((n << 1) ^ (n >> 63))
        return f.tag + varint(n)
    except (ValueError, OverflowError, binascii.Error, struct.error) as exc:
        if isinstance(exc, OtlpJsonError):
            raise
        raise OtlpJsonError(f"{path}: {exc}") from exc


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise OtlpJsonError(f"{path}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise OtlpJsonError(f"{path}: expected an integer, got {value!r}")


def decode_logs(text: Union[str, bytes],
                max_depth: int = DEFAULT_MAX_DEPTH) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    from_dict(_loads(text), req, max_depth)
    return req


def decode_traces(text: Union[str, bytes],
                  max_depth: int = DEFAULT_MAX_DEPTH) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    from_dict(_loads(text), req, max_depth)
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
    except RecursionError:  # arrays/objects nested past the interpreter's limit
        raise OtlpJsonError("not JSON this service accepts: nested too deeply") from None
    if not isinstance(obj, dict):
        raise OtlpJsonError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


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
