"""OTLP/JSON codec: spec shape (hex ids, int64 as strings), roundtrips, tolerant decoding."""

from __future__ import annotations

import base64
import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard.otlp import jsoncodec


def _logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "container.id", "abc"
    rec = rl.scope_logs.add().log_records.add()
    rec.time_unix_nano = 1_763_900_000_123_456_789
    rec.severity_number = 9
    rec.event_name = "otelguard.file.open"
    rec.trace_id = bytes(range(16))
    rec.span_id = bytes(range(8, 16))
    a = rec.attributes.add()
    a.key, a.value.int_value = "otelguard.syscall.ret", -13
    arr = rec.attributes.add()
    arr.key = "otelguard.process.ancestors"
    arr.value.array_value.values.add().string_value = "bash"
    return req


def _traces() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    span.span_id = bytes.fromhex("eee19b7ec3c1b174")
    span.parent_span_id = bytes.fromhex("eee19b7ec3c1b173")
    span.kind = 3
    link = span.links.add()
    link.trace_id = bytes.fromhex("00000000000000000000000000000001")
    link.span_id = bytes.fromhex("0000000000000002")
    return req


def test_encode_follows_the_otlp_json_spec() -> None:
    obj = json.loads(jsoncodec.encode(_logs()))
    rec = obj["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert rec["traceId"] == bytes(range(16)).hex()
    assert rec["spanId"] == bytes(range(8, 16)).hex()
    assert rec["timeUnixNano"] == "1763900000123456789"  # int64 as a decimal string
    assert rec["severityNumber"] == 9  # enums as integers
    assert rec["eventName"] == "otelguard.file.open"
    assert rec["attributes"][0]["value"] == {"intValue": "-13"}
    span = json.loads(jsoncodec.encode(_traces()))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["links"][0]["spanId"] == "0000000000000002"
    assert span["kind"] == 3


def test_roundtrip_both_signals() -> None:
    assert jsoncodec.decode_logs(jsoncodec.encode(_logs())) == _logs()
    assert jsoncodec.decode_traces(jsoncodec.encode(_traces())) == _traces()
    assert jsoncodec.decode_line(jsoncodec.encode(_traces())) == _traces()
    assert jsoncodec.decode_line(jsoncodec.encode(_logs()).encode()) == _logs()


def test_decode_accepts_sdk_variants() -> None:
    """snake_case keys, int64 as JSON numbers, enum names, base64 ids (old SDKs)."""
    doc = {"resource_logs": [{"scope_logs": [{"log_records": [{
        "time_unix_nano": 5, "severity_number": "SEVERITY_NUMBER_WARN",
        "trace_id": base64.b64encode(bytes(range(16))).decode(), "spanId": "0001020304050607",
        "attributes": [{"key": "k", "value": {"intValue": 7}}],
    }]}]}]}
    req = jsoncodec.decode_logs(json.dumps(doc))
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.time_unix_nano == 5 and rec.severity_number == 13
    assert rec.trace_id == bytes(range(16)) and rec.span_id == bytes(range(8))
    assert rec.attributes[0].value.int_value == 7


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ("[1]", "expected a JSON object"),
    ('{"resourceLogs": [{"scopeLogs": {"logRecords": []}}]}', "scopeLogs: expected a list"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "neither hex nor base64"),
    ('{"other": 1}', "neither resourceLogs nor resourceSpans"),
])
def test_bad_input_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(jsoncodec.OtlpJsonError, match=message):
        jsoncodec.decode_line(text)


def _with_unknown_fields(obj: object, depth: int = 0) -> object:
    """``obj`` with a field no OTLP message has added to every object in it, holding a value of
    each JSON kind (what a newer sender's extra fields look like)."""
    if isinstance(obj, list):
        return [_with_unknown_fields(v, depth + 1) for v in obj]
    if not isinstance(obj, dict):
        return obj
    extra: object = [{"nested": [1, "x"]}, "s", 7, 1.5, True, None, {}][depth // 2 % 7]
    return {**{k: _with_unknown_fields(v, depth + 1) for k, v in obj.items()},
            f"futureField{depth}": extra}


@pytest.mark.parametrize("msg", [_logs(), _traces()], ids=["logs", "traces"])
def test_unknown_fields_are_ignored_at_every_level(msg: ExportLogsServiceRequest) -> None:
    """OTLP/JSON receivers must ignore fields they do not know (a newer sender may add some)."""
    doc = _with_unknown_fields(json.loads(jsoncodec.encode(msg)))
    assert json.dumps(doc).count('"futureField') >= 5  # resource, scope, record/span, value...
    assert jsoncodec.decode_line(json.dumps(doc)) == msg


def _rich_traces() -> ExportTraceServiceRequest:
    """Every value kind and span part, to compare with protobuf's own json_format."""
    req = _traces()
    rs = req.resource_spans[0]
    rs.schema_url = "https://opentelemetry.io/schemas/1.44.0"
    rs.resource.dropped_attributes_count = 2
    ss = rs.scope_spans[0]
    ss.scope.name, ss.scope.version = "otelguard.ebpf", "0.1.0"
    span = ss.spans[0]
    span.name, span.start_time_unix_nano, span.end_time_unix_nano = "exec sh", 1, 2**63 - 1
    span.status.code, span.status.message = 2, "ECONNREFUSED"
    ev = span.events.add()
    ev.name, ev.time_unix_nano = "e", 7
    for key, setter in [
        ("d", lambda v: setattr(v, "double_value", 1.25)),
        ("nan", lambda v: setattr(v, "double_value", float("nan"))),
        ("b", lambda v: setattr(v, "bytes_value", b"\x00\xff")),
        ("t", lambda v: setattr(v, "bool_value", False)),
        ("i0", lambda v: setattr(v, "int_value", 0)),
        ("s0", lambda v: setattr(v, "string_value", "")),
        ("neg", lambda v: setattr(v, "int_value", -(2**63))),
    ]:
        kv = span.attributes.add()
        kv.key = key
        setter(kv.value)
    kvl = span.attributes.add()
    kvl.key = "kv"
    inner = kvl.value.kvlist_value.values.add()
    inner.key, inner.value.string_value = "x", "y"
    empty_arr = span.attributes.add()
    empty_arr.key = "arr"
    empty_arr.value.array_value.SetInParent()
    span.attributes.add().key = "novalue"
    return req


def _reference(msg: object) -> dict[str, object]:
    from google.protobuf import json_format

    obj = json_format.MessageToDict(msg, use_integers_for_enums=True)  # type: ignore[arg-type]

    def ids(node: object) -> None:  # the one OTLP deviation: hex ids
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    node[k] = base64.b64decode(v).hex()
                else:
                    ids(v)
        elif isinstance(node, list):
            for item in node:
                ids(item)

    ids(obj)
    return obj


@pytest.mark.parametrize("msg", [_logs(), _traces(), _rich_traces()], ids=["logs", "traces", "rich"])
def test_same_json_as_protobuf_json_format(msg: object) -> None:
    from google.protobuf import json_format

    assert jsoncodec.to_dict(msg) == _reference(msg)  # type: ignore[arg-type]
    back = type(msg)()
    jsoncodec.from_dict(json.loads(jsoncodec.encode(msg)), back)  # type: ignore[arg-type]
    ref_back = type(msg)()
    # json_format expects base64 ids: feed it its own output
    json_format.ParseDict(json_format.MessageToDict(msg), ref_back)  # type: ignore[arg-type]
    assert back.SerializeToString(deterministic=True) == ref_back.SerializeToString(deterministic=True)


def _json_values() -> object:
    from hypothesis import strategies as st

    leaves = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) \
        | st.floats(allow_nan=False) | st.text(max_size=40) \
        | st.sampled_from(["0001020304050607", "AAECAwQFBgc=", "NaN", "-12", "SEVERITY_NUMBER_WARN"])
    keys = st.sampled_from([
        "resourceLogs", "resource_logs", "resourceSpans", "scopeLogs", "scopeSpans", "logRecords",
        "spans", "attributes", "key", "value", "stringValue", "intValue", "doubleValue",
        "boolValue", "arrayValue", "kvlistValue", "bytesValue", "values", "traceId", "spanId",
        "timeUnixNano", "severityNumber", "body", "resource", "scope", "name", "kind", "links",
        "status", "code", "bogus"])
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(keys, inner, max_size=4), max_leaves=25)


def test_decoding_arbitrary_json_fails_only_with_otlpjsonerror() -> None:
    """Bad input gets a clear error, never a crash: the service maps OtlpJsonError to 400."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(["resourceLogs", "resourceSpans"]), _json_values(),
                           min_size=1, max_size=1))
    def check(doc: dict[str, object]) -> None:
        try:
            req = jsoncodec.decode_line(json.dumps(doc))
        except jsoncodec.OtlpJsonError:
            return
        back = type(req)()
        jsoncodec.from_dict(json.loads(jsoncodec.encode(req)), back)
        assert back == req  # what decodes, roundtrips

    check()


@pytest.mark.parametrize("value", ["9223372036854775808", -(2**63) - 1, 1.5, "12a", True])
def test_int64_out_of_range_or_malformed_is_rejected(value: object) -> None:
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"attributes": [{"key": "k", "value": {"intValue": value}}]}]}]}]}
    with pytest.raises(jsoncodec.OtlpJsonError, match="intValue"):
        jsoncodec.decode_line(json.dumps(doc))


def _nested_body(levels: int, kind: str = "kvlist") -> str:
    """A logs document whose record body is ``levels`` AnyValues deep (the body is level 1)."""
    wrap = ('{"kvlistValue":{"values":[{"key":"k","value":', "}]}}") if kind == "kvlist" \
        else ('{"arrayValue":{"values":[', "]}}")
    inner = wrap[0] * (levels - 1) + '{"stringValue":"x"}' + wrap[1] * (levels - 1)
    return '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + inner + "}]}]}]}"


@pytest.mark.parametrize("kind", ["kvlist", "array"])
def test_anyvalue_depth_limit(kind: str) -> None:
    req = jsoncodec.decode_logs(_nested_body(5, kind), max_depth=5)
    value = req.resource_logs[0].scope_logs[0].log_records[0].body
    for _ in range(4):
        value = value.kvlist_value.values[0].value if kind == "kvlist" \
            else value.array_value.values[0]
    assert value.string_value == "x"
    with pytest.raises(jsoncodec.OtlpJsonError, match="nested deeper than the limit of 5"):
        jsoncodec.decode_logs(_nested_body(6, kind), max_depth=5)


def test_default_depth_is_what_protobuf_can_parse() -> None:
    """The default limit keeps JSON within upb's own nesting limit (100 messages)."""
    deepest = jsoncodec.decode_logs(_nested_body(jsoncodec.DEFAULT_MAX_DEPTH))
    assert ExportLogsServiceRequest.FromString(deepest.SerializeToString()) == deepest
    with pytest.raises(jsoncodec.OtlpJsonError, match="nested deeper"):
        jsoncodec.decode_logs(_nested_body(jsoncodec.DEFAULT_MAX_DEPTH + 1))


@pytest.mark.parametrize("text", [
    _nested_body(300),  # once a 500 with a RecursionError traceback
    "[" * 100_000 + "]" * 100_000,
    '{"resourceLogs":' + "[" * 50_000,
])
def test_deep_documents_are_otlp_json_errors(text: str) -> None:
    with pytest.raises(jsoncodec.OtlpJsonError):
        jsoncodec.decode_logs(text)


def test_double_out_of_range_is_an_otlp_json_error() -> None:
    body = '{"doubleValue":1' + "0" * 400 + "}"
    with pytest.raises(jsoncodec.OtlpJsonError, match="doubleValue"):
        jsoncodec.decode_logs('{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":'
                              + body + "}]}]}]}")
