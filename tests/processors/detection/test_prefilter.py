"""Guards and positional attribute reads must never change a result.

The guarded engine (prefilter groups + AttrLayouts hints + wire-bytes absence proofs) is compared
with the exhaustive reference (every indexed rule, attributes found by a full index) on every rule
case, its near miss and many mutations of them (keys shuffled, dropped, values borrowed from other
cases), fed in one stream so positional hints go stale constantly.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard import semconv as S
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.fields import AttrLayouts, EventView, FieldType, event_type
from otelguard.processors.detection.loader import load_rules, load_rules_text
from otelguard.processors.detection.prefilter import ValueSet
from otelguard.otlp.messages import attrs_dict, set_attrs

from .casefile import SUITES, fill, mutations, resource_of, specs


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_guarded_engine_equals_exhaustive_reference(suite: str) -> None:
    """The generated matchers (production), the guard groups' closures and every indexed rule
    unguarded agree on every record."""
    files, cases = SUITES[suite]
    ruleset = load_rules(files)
    guarded, closures, reference = RuleEngine(ruleset), RuleEngine(ruleset), RuleEngine(ruleset)
    assert all(getattr(guarded._matcher(t), "__name__", "").startswith("match_")
               for t in [*guarded._plans, None])  # every type's plan generates
    specs_ = specs(cases)
    stream = specs_ + mutations(specs_, random.Random(1234), 3000) + specs_
    fired = 0
    skipped_groups = 0
    for i, spec in enumerate(stream):
        rec = LogRecord()
        fill(rec, spec, i)
        res = resource_of(spec)
        got = [r.name for r in guarded.match(guarded.view(rec, res))]
        ev = closures.view(rec, res)
        closures.state.observe(ev)
        via_closures = sorted(closures._match_plan(
            closures._plans.get(event_type(ev), closures._any_plan), ev), key=lambda h: h[0])
        want = [r.name for r in reference.match_unguarded(EventView(rec, res, i + 1,
                                                                    reference.state))]
        assert got == want, (i, spec)
        assert [r.name for _o, r in via_closures] == want, (i, spec)
        fired += len(want)
        probe = EventView(rec, res, 0, guarded.state)
        plan = guarded._plans.get(event_type(probe), guarded._any_plan)
        skipped_groups += sum(1 for g in plan.groups if not g.passes(probe))
    assert fired >= 2 * len(cases)  # the stream does exercise matches
    assert skipped_groups > len(stream)  # ... and guards that skip rules
    assert guarded.errors == closures.errors == reference.errors == 0


def _rules(*conditions: str) -> str:
    return "".join(f"- rule: r{i}\n  desc: d\n  condition: {c}\n  output: o\n  priority: WARNING\n"
                   for i, c in enumerate(conditions))


def _guard(condition: str, evt_type: str = "openat") -> Any:
    rs = load_rules_text([("t.yaml", _rules(condition))])
    rs.raise_if_errors()
    cands = rs.rules[0].guards.get(evt_type)
    return {str(ref): vs for ref, vs in cands[0].fields} if cands else None


def test_guard_derivation() -> None:
    g = _guard("evt.type=openat and fd.name startswith /etc and proc.name=cat")
    assert g is not None and set(g) == {"proc.name"} and g["proc.name"].eq == {"cat"}
    g = _guard("evt.type=openat and (fd.name=/a or proc.name in (x, y))")
    assert g is not None and g["fd.name"].eq == {"/a"} and g["proc.name"].eq == {"x", "y"}
    # an alternative that cannot hold for this evt.type drops out; one that always holds kills it
    g = _guard("evt.type in (openat, execve) and (fd.name=/a or evt.type=execve)")
    assert g is not None and set(g) == {"fd.name"}
    assert _guard("evt.type in (openat, execve) and (fd.name=/a or evt.type=openat)") is None
    # negations, !=, exists and match-everything values imply nothing
    assert _guard("evt.type=openat and not fd.name startswith /etc") is None
    assert _guard("evt.type=openat and fd.name != /etc/shadow") is None
    assert _guard("evt.type=openat and fd.name exists") is None
    assert _guard("evt.type=openat and fd.name startswith ''") is None
    # pmatch normalises "//" and reads glob components: it implies no cheaper guard
    assert _guard("evt.type=openat and fd.name pmatch (/etc)") is None
    g = _guard("evt.type=openat and fd.name glob '/home/*/.ssh/*'")
    assert g is not None and g["fd.name"].prefixes == {"/home/"}


def test_value_set_tests_follow_operator_semantics() -> None:
    t = ValueSet(FieldType.STR, eq={"/a"}, prefixes={"/etc/"}, suffixes={"_agent"},
                 subs={"../"}, patterns={"*.key"}).test()
    assert [t(v) for v in ("/a", "/etc/x", "x_agent", "a/../b", "id.key", "/b", "/etc")] == \
        [True, True, True, True, True, False, False]
    ip = ValueSet(FieldType.IP, nets={ipaddress.ip_network("169.254.169.254/32"),
                                      ipaddress.ip_network("10.0.0.0/8"),
                                      ipaddress.ip_network("fd00:ec2::254/128")}).test()
    assert [ip(ipaddress.ip_address(a)) for a in (
        "169.254.169.254", "10.2.3.4", "fd00:ec2::254", "169.254.169.253", "11.0.0.1",
        "fd00:ec2::255", "::ffff:10.0.0.1")] == [True, True, True, False, False, False, False]
    n = ValueSet(FieldType.NUM, eq={22, 0}).test()
    assert (n(22), n("22"), n(False), n(23), n("x")) == (True, True, True, False, False)


def test_positional_reads_agree_with_a_full_read() -> None:
    rng = random.Random(99)
    keys = [f"k{i}" for i in range(12)] + [S.FILE_PATH, S.SYSCALL_NAME]
    layouts = AttrLayouts()
    for n in range(400):
        chosen = rng.sample(keys, rng.randint(0, len(keys)))
        values: dict[str, Any] = {}
        for k in chosen:
            values[k] = rng.choice([rng.randint(-5, 5), f"v{n}", True, False, ["a", "b"],
                                    ["", "b"], [3, "a", True], [], "",
                                    "\n\x02k1"])  # a value holding another key's wire token
        rec = LogRecord()
        rec.event_name = "e" if n % 3 else "f"
        set_attrs(rec.attributes, values)
        want = attrs_dict(rec.attributes)
        ev = EventView(rec, {}, n, None, layouts)
        order = keys[:]
        rng.shuffle(order)
        for k in order:
            assert ev.attr(k) == want.get(k), (n, k)


def test_layouts_are_bounded() -> None:
    layouts = AttrLayouts(max_events=2, max_keys=3)
    for name in ("a", "b", "c", "d"):
        rec = LogRecord()
        rec.event_name = name
        set_attrs(rec.attributes, {f"k{i}": i for i in range(6)})
        ev = EventView(rec, {}, 1, None, layouts)
        assert ev.attr("k5") == 5 and ev.attr("zz") is None
    assert len(layouts._by_event) == 2
    assert all(len(v) <= 3 for v in layouts._by_event.values())


def test_array_values_read_from_their_bytes_equal_a_full_conversion() -> None:
    """Arrays of strings are parsed from the AnyValue's wire bytes (fields/view.py); any other
    array (ints, nested, empty elements, long and non-ASCII strings) must read the same as
    ``from_any``."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from otelguard.otlp.messages import from_any
    from otelguard.processors.detection.fields.view import _value

    rng = random.Random(7)
    for _ in range(3000):
        av = AnyValue()
        av.array_value.SetInParent()
        for _i in range(rng.randint(0, 6)):
            e = av.array_value.values.add()
            r = rng.random()
            if r < 0.7:
                e.string_value = "".join(chr(rng.randint(32, 0x3000))
                                         for _j in range(rng.choice((0, 1, 5, 60, 200))))
            elif r < 0.8:
                e.int_value = rng.randint(-5, 5)
            elif r < 0.85:
                e.bool_value = True
            elif r < 0.9:
                e.SetInParent()
            else:
                e.array_value.values.add().string_value = "nested"
        assert _value(av) == from_any(av), av
