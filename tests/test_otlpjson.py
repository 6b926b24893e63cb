"""OTLP/JSON codec: spec shape (hex ids, int64 as strings), roundtrips, tolerant decoding."""

from __future__ import annotations

import base64
import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otelguard import otlpjson


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
    obj = json.loads(otlpjson.encode(_logs()))
    rec = obj["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert rec["traceId"] == bytes(range(16)).hex()
    assert rec["spanId"] == bytes(range(8, 16)).hex()
    assert rec["timeUnixNano"] == "1763900000123456789"  # int64 as a decimal string
    assert rec["severityNumber"] == 9  # enums as integers
    assert rec["eventName"] == "otelguard.file.open"
    assert rec["attributes"][0]["value"] == {"intValue": "-13"}
    span = json.loads(otlpjson.encode(_traces()))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["parentSpanId"] == "eee19b7ec3c1b173"
    assert span["links"][0]["spanId"] == "0000000000000002"
    assert span["kind"] == 3


def test_roundtrip_both_signals() -> None:
    assert otlpjson.decode_logs(otlpjson.encode(_logs())) == _logs()
    assert otlpjson.decode_traces(otlpjson.encode(_traces())) == _traces()
    assert otlpjson.decode_line(otlpjson.encode(_traces())) == _traces()
    assert otlpjson.decode_line(otlpjson.encode(_logs()).encode()) == _logs()


def test_decode_accepts_sdk_variants() -> None:
    """snake_case keys, int64 as JSON numbers, enum names, base64 ids (old SDKs)."""
    doc = {"resource_logs": [{"scope_logs": [{"log_records": [{
        "time_unix_nano": 5, "severity_number": "SEVERITY_NUMBER_WARN",
        "trace_id": base64.b64encode(bytes(range(16))).decode(), "spanId": "0001020304050607",
        "attributes": [{"key": "k", "value": {"intValue": 7}}],
    }]}]}]}
    req = otlpjson.decode_logs(json.dumps(doc))
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    assert rec.time_unix_nano == 5 and rec.severity_number == 13
    assert rec.trace_id == bytes(range(16)) and rec.span_id == bytes(range(8))
    assert rec.attributes[0].value.int_value == 7


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ("[1]", "expected a JSON object"),
    ('{"resourceLogs": [{"bogus": 1}]}', "bogus"),
    ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "neither hex nor base64"),
    ('{"other": 1}', "neither resourceLogs nor resourceSpans"),
])
def test_bad_input_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(otlpjson.OtlpJsonError, match=message):
        otlpjson.decode_line(text)
