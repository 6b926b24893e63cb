"""Hand-encoded varints and unique-value attributes parse back with protobuf (upb) to the value
given, across every varint length boundary, negative numbers included."""

from __future__ import annotations

import random

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as sc
from otelguard.exporter.wire import _unique_attribute, any_value

BOUNDARIES = [v for k in range(1, 10) for v in (2 ** (7 * k) - 1, 2 ** (7 * k))]
VALUES = [0, 1, -1, -5, 2**63 - 1, -(2**63), *BOUNDARIES,
          *(random.Random(3).getrandbits(63) >> random.Random(i).randrange(63) for i in range(500))]


def test_int_values_round_trip() -> None:
    for v in VALUES:
        if v >= 2**63:
            continue  # int64 range only
        parsed = AnyValue.FromString(any_value(v))
        assert parsed.int_value == v, v


def test_unique_attributes_round_trip() -> None:
    for v in VALUES:
        if v >= 2**63:
            continue
        rec = LogRecord.FromString(_unique_attribute(sc.PROCESS_DURATION_NS, v))
        assert [(kv.key, kv.value.int_value) for kv in rec.attributes] == \
            [(sc.PROCESS_DURATION_NS, v)]
    for s in ("", "a", "x" * 90, "y" * 200, "ünï-" * 10):
        rec = LogRecord.FromString(_unique_attribute(sc.LOG_RECORD_UID, s))
        assert [(kv.key, kv.value.string_value) for kv in rec.attributes] == \
            [(sc.LOG_RECORD_UID, s)]
