"""Hand-encoded varints and unique-value attributes parse back with protobuf (upb) to the value
given, across every varint length boundary, negative numbers included."""

from __future__ import annotations

import itertools
import random

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as sc
from otelguard.ebpf.events import AttrValue, Event, ProcessAttrs
from otelguard.exporter.builder import OtlpBuilder
from otelguard.exporter.settings import NodeIdentity
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


def _typed(value: AnyValue) -> object:
    """An AnyValue as the Python value of its set field (bool, int, float, str or list)."""
    kind = value.WhichOneof("value")
    assert kind is not None
    if kind == "array_value":
        return [_typed(v) for v in value.array_value.values]
    return getattr(value, kind)


# equal (or alike) values of four types, each with a list of its kind ([True] == [1] too)
_BOOLS: list[int] = [True]
MIXED: list[tuple[AttrValue, AttrValue]] = [(True, _BOOLS), (1, [1]), (1.0, [1, 0]), ("1", ["1"])]


def test_equal_values_of_different_types_keep_their_type() -> None:
    """``True == 1 == 1.0`` (with equal hashes): the pair cache must still tell them apart, in
    the event's own attributes, in a shared process part and inside lists, in every order."""
    builder = OtlpBuilder(NodeIdentity("node-a", "host-a", "0" * 32))
    orders = list(itertools.permutations(MIXED))
    events = [Event("test.mixed", 1, 1, 1, "", 0,
                    attrs={"test.own": v, sc.PROCESS_ANCESTOR_PIDS: items},
                    process=ProcessAttrs({"test.process": v}))
              for order in orders for v, items in order]
    req = ExportLogsServiceRequest.FromString(builder.logs_bytes(events))  # one batch
    got = [{kv.key: _typed(kv.value) for kv in rec.attributes}
           for rl in req.resource_logs for sl in rl.scope_logs for rec in sl.log_records]
    assert len(got) == len(events) == 4 * len(orders)
    for ev, attrs in zip(events, got):
        for key in ("test.own", "test.process", sc.PROCESS_ANCESTOR_PIDS):
            want, sent = ev.attrs[key], attrs[key]
            assert (type(sent), sent) == (type(want), want), (key, want)
            if isinstance(want, list) and isinstance(sent, list):
                assert [type(x) for x in sent] == [type(x) for x in want], (key, want)
