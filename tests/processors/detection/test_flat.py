"""The flat record view (fields/flat.py, native/src/flatview.rs) must read exactly what upb reads.

Values: every attribute of real records (the processors' and exporter's golden OTLP, every rule
case) and of random hand-built ones (every AnyValue kind, nesting, empty and non-ASCII strings,
duplicate keys) walked natively equals ``from_any`` of the same attribute read through upb; odd
but valid wire bytes (a oneof written twice, a repeated message field in pieces, unknown fields)
are compared with upb parsing the very same bytes. Verdicts: the engine with and without the
flat view appends the same detection records on every rule case, near miss and thousands of
mutations, batched so eager and lazy walks, stale key sets and learning all happen.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard.otlp.jsoncodec import from_dict
from otelguard.otlp.messages import from_any, set_attrs
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.fields import AttrLayouts, EventView, FlatRecords
from otelguard.processors.detection.loader import load_rules

from .casefile import SUITES, fill, mutations, resource_of, specs

native = pytest.importorskip("otelguard_native")  # scripts/setup.sh builds it
TESTS = Path(__file__).resolve().parents[2]
GOLDEN = (TESTS / "processors" / "testdata" / "golden_logs.json",
          TESTS / "exporter" / "golden" / "shell_session.logs.json")


def _upb(rec: LogRecord) -> dict[str, Any]:
    """Every attribute as upb reads it (the last of duplicate keys wins)."""
    return {kv.key: from_any(kv.value) for kv in rec.attributes}


def _golden_records() -> Iterator[LogRecord]:
    for path in GOLDEN:
        req = from_dict(json.loads(path.read_text()), ExportLogsServiceRequest())
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                yield from sl.log_records


def _case_records() -> Iterator[LogRecord]:
    for _files, cases in SUITES.values():
        for i, spec in enumerate(specs(cases)):
            rec = LogRecord()
            fill(rec, spec, i)
            yield rec


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.25:
        return "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.choice((0, 1, 7, 130))))
    if r < 0.4:
        return rng.choice((0, 1, -1, 2**63 - 1, -(2**63), rng.randint(-10**6, 10**6)))
    if r < 0.5:
        return rng.random() < 0.5
    if r < 0.6:
        return rng.choice((0.0, -1.5, 1e300, float("inf")))
    if r < 0.7:
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 9)))
    if r < 0.85 and depth < 3:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 3:
        return {f"m{j}": _random_value(rng, depth + 1) for j in range(rng.randint(0, 3))}
    return "leaf"


def _random_records(n: int) -> Iterator[LogRecord]:
    rng = random.Random(15)
    keys = [f"k{i}" for i in range(10)] + ["process.pid", "file.path", "ключ"]
    for i in range(n):
        rec = LogRecord()
        rec.event_name = rng.choice(("a", "b"))
        for key in rng.sample(keys, rng.randint(0, len(keys))):
            kv = rec.attributes.add()
            kv.key = key
            if rng.random() < 0.05:
                continue  # a KeyValue without a value: from_any gives None
            value = _random_value(rng)
            set_attrs(rec.attributes, {"_tmp": value})
            kv.value.CopyFrom(rec.attributes[-1].value)
            del rec.attributes[-1]
        if rec.attributes and rng.random() < 0.1:  # a duplicate key: the last one wins
            dup = rec.attributes.add()
            dup.key = rec.attributes[0].key
            dup.value.string_value = f"dup{i}"
        yield rec


def _walk_equals_upb(rec: LogRecord, rng: random.Random) -> None:
    want = _upb(rec)
    keys = set(want) | {"absent.key"}
    wanted = set(rng.sample(sorted(keys), rng.randint(0, len(keys))))
    got = native.FlatView(wanted).record(rec.SerializeToString())
    assert got == {k: v for k, v in want.items() if k in wanted}, rec
    for k, v in got.items():  # ints stay ints, bools bools (1 == True in Python)
        assert type(v) is type(want[k]), (k, v, want[k])


@pytest.mark.parametrize("source", ["golden", "cases", "random"])
def test_walk_gives_the_values_upb_gives(source: str) -> None:
    records = {"golden": _golden_records, "cases": _case_records,
               "random": lambda: _random_records(3000)}[source]()
    rng = random.Random(3)
    n = 0
    for rec in records:
        _walk_equals_upb(rec, rng)
        n += 1
    assert n >= 20


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _any(av: AnyValue) -> bytes:
    return av.SerializeToString()


def test_odd_but_valid_bytes_read_as_upb_parses_them() -> None:
    """Protobuf merges: the last oneof member wins, a message field written twice is merged
    (concatenated), unknown fields are skipped; compared with upb parsing the same bytes."""
    s, i, arr1, arr2 = AnyValue(), AnyValue(), AnyValue(), AnyValue()
    s.string_value = "text"
    i.int_value = 7
    arr1.array_value.values.add().string_value = "a"
    arr2.array_value.values.add().int_value = 2
    kv1, kv2 = AnyValue(), AnyValue()
    kv1.kvlist_value.values.add(key="x").value.int_value = 1
    kv2.kvlist_value.values.add(key="x").value.string_value = "later"
    unknown = b"\x48\x05" + _field(15, b"zz")  # fields 9 (varint) and 15 (bytes)
    values = {
        "string then int": _any(s) + _any(i),
        "int then string": _any(i) + _any(s),
        "array in two pieces": _any(arr1) + _any(arr2),
        "kvlist in two pieces": _any(kv1) + _any(kv2),
        "array then string": _any(arr1) + _any(s),
        "unknown fields": unknown + _any(s) + unknown,
        "empty": b"",
    }
    record = b""
    for key, value in values.items():
        record += _field(6, _field(1, key.encode()) + _field(2, value))
    # a KeyValue whose value comes in two pieces, before its key
    record += _field(6, _field(2, _any(arr1)) + _field(1, b"split") + _field(2, _any(arr2)))
    rec = LogRecord.FromString(record)
    want = _upb(rec)
    assert want["array in two pieces"] == ["a", 2] and want["string then int"] == 7
    got = native.FlatView(set(want)).record(record)
    assert got == want


@pytest.mark.parametrize("wire", [
    b"\x32", b"\x32\x05ab", b"\x32\x02\x0a\x09", b"\x07",  # truncated, bad wire type
    b"\x32\x09\x0a\x01k\x12\x04\x0a\x02\xff\xfe",  # a wanted string value not UTF-8
    b"\x32\x05\x0a\x01k\x12\x00\x32\x02\x08\x01",  # a KeyValue's key as a varint
])
def test_bytes_upb_would_refuse_raise_and_the_view_reads_through_upb(wire: bytes) -> None:
    with pytest.raises(ValueError):
        native.FlatView({"k"}).record(wire)
    flat = FlatRecords()
    flat.learn("e", "k")
    assert flat.walk("e", wire) is None and flat.failed == 1


@pytest.mark.parametrize("mode", ["learnt", "eager", "lazy"])
def test_views_read_the_same_with_and_without_the_flat_view(mode: str) -> None:
    """Per key, EventView.attr over the flat view (walked as the view is made, or when a read
    needs the bytes, or as learnt; while the key sets grow) equals the upb-only view, on
    golden, case and random records in one stream."""
    flat, layouts, plain_layouts = FlatRecords(), AttrLayouts(), AttrLayouts()
    rng = random.Random(5)
    stream = [*_golden_records(), *_case_records(), *_random_records(1500)]
    if mode != "learnt":
        flat.eager.update({rec.event_name: mode == "eager" for rec in stream})
    walked = 0
    for n, rec in enumerate(stream * 2):
        want = _upb(rec)
        keys = sorted(set(want) | {"absent.key"})
        rng.shuffle(keys)
        ev = EventView(rec, {}, n, None, layouts, flat)
        plain = EventView(rec, {}, n, None, plain_layouts)
        dups = {k for k in want if sum(kv.key == k for kv in rec.attributes) > 1}
        for k in keys[:rng.randint(0, len(keys))]:
            if k in dups:  # not allowed in OTLP: a positional upb hit may read another one
                # than the last (fields/view.py, AttrLayouts); a walk always takes the last
                assert ev.attr(k) in [from_any(kv.value) for kv in rec.attributes if kv.key == k]
            else:
                assert ev.attr(k) == plain.attr(k) == want.get(k), (n, k)
        walked += bool(ev._known)
    assert walked > len(stream) // 4  # the walk did answer reads
    assert flat.eager and flat.failed == 0


def test_learning_is_bounded() -> None:
    flat = FlatRecords(max_events=2, max_keys=3)
    for name in ("a", "b", "c"):
        for i in range(6):
            flat.learn(name, f"k{i}")
    assert sorted(flat.learnt) == ["a", "b"] and all(len(v) == 3 for v in flat.learnt.values())
    rec = LogRecord()
    rec.event_name = "c"
    set_attrs(rec.attributes, {"k5": 5})
    assert EventView(rec, {}, 1, None, None, flat).attr("k5") == 5  # read through upb


def _detections(engine: RuleEngine, batches: list[ExportLogsServiceRequest]) -> list[Any]:
    out = []
    for batch in batches:
        copy = ExportLogsServiceRequest()
        copy.CopyFrom(batch)
        for d in engine.evaluate(copy):
            attrs = [(kv.key, from_any(kv.value)) for kv in d.record.attributes
                     if kv.key != "log.record.uid"]  # (from the trigger's uid, or a count)
            out.append((d.rule.name, d.record.body.string_value, attrs))
    return out


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_verdicts_are_identical_with_and_without_the_flat_view(suite: str) -> None:
    files, cases = SUITES[suite]
    ruleset = load_rules(files)
    specs_ = specs(cases)
    stream = specs_ + mutations(specs_, random.Random(77), 3000) + specs_
    batches = []
    for start in range(0, len(stream), 40):  # one ResourceLogs per resource, records in order
        req = ExportLogsServiceRequest()
        for i, spec in enumerate(stream[start:start + 40], start):
            rl = req.resource_logs.add()
            set_attrs(rl.resource.attributes, resource_of(spec))
            fill(rl.scope_logs.add().log_records.add(), spec, i)
        batches.append(req)
    flat_engine = RuleEngine(ruleset).warm()
    upb_engine = RuleEngine(ruleset, flat_view=False).warm()
    assert flat_engine.flat is not None and upb_engine.flat is None
    got, want = _detections(flat_engine, batches), _detections(upb_engine, batches)
    assert len(want) >= 2 * len(cases)
    assert got == want
    assert any(flat_engine.flat.eager.values())  # some event names were walked eagerly
    assert flat_engine.errors == upb_engine.errors == 0


def test_evidence_cut_from_the_bytes_equals_a_copy_one_by_one() -> None:
    """The detection's evidence (engine._copy_evidence): the trigger's attributes with the
    rule's evidence keys, in order, duplicates kept, whether cut natively or copied."""
    from otelguard.processors.detection.ruleset import Rule

    rng = random.Random(8)
    flat_engine = RuleEngine.from_text(("r.yaml", "- rule: r\n  desc: d\n  condition: "
                                        "evt.type = open\n  output: o\n  priority: INFO\n"))
    upb_engine = RuleEngine(flat_engine.ruleset, flat_view=False)
    for rec in [*_golden_records(), *_random_records(500)]:
        pool = sorted({kv.key for kv in rec.attributes} | {"absent"})
        keys = tuple(rng.sample(pool, rng.randint(0, min(3, len(pool)))))
        rule = Rule.__new__(Rule)
        object.__setattr__(rule, "evidence_keys", keys)
        got, want = LogRecord(), LogRecord()
        flat_engine._evidence.pop(id(rule), None)
        found = flat_engine._copy_evidence(rule, flat_engine.view(rec, {}), got)
        assert found == upb_engine._copy_evidence(rule, upb_engine.view(rec, {}), want)
        assert got == want and [kv.key for kv in got.attributes] == [
            kv.key for kv in rec.attributes if kv.key in keys]


def test_key_values_without_key_or_value() -> None:
    rec = LogRecord()
    rec.attributes.add()  # neither key nor value
    rec.attributes.add(key="only.key")
    rec.attributes.append(KeyValue(key="v", value=AnyValue(bool_value=False)))
    want = _upb(rec)
    assert native.FlatView(set(want)).record(rec.SerializeToString()) == want
