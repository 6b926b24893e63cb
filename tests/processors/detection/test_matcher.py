"""The generated per-evt.type matchers inline the common checks: each must keep its closure's
meaning (missing values false, values of another type converted as the operators do, ``not`` of
a missing value true), checked against the closure path and against the expected answer."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.fields import event_type

from .casefile import fill, resource_of
from .records import EXEC

# condition (for execve) -> expected on (proc.cwd ends with "/", as in Falco): EXEC, EXEC with pid "0x10" and tty "1", EXEC without
# pid / tty / cwd
CHECKS: dict[str, tuple[bool, bool, bool]] = {
    "proc.pid = 4242": (True, False, False),
    "proc.pid = 0x10": (False, True, False),
    "proc.pid != 4242": (False, True, False),
    "not proc.pid = 4242": (False, True, True),
    "proc.pid in (16, 4242)": (True, True, False),
    "proc.pid > 100": (True, False, False),
    "proc.pid <= 16": (False, True, False),
    "proc.tty != 0": (False, True, False),
    "proc.pid exists": (True, True, False),
    "not proc.cwd exists": (False, False, True),
    "proc.cwd = /dev/shm/": (True, True, False),
    "proc.cwd != /dev/shm/": (False, False, False),
    "proc.cwd in (/tmp/, /dev/shm/)": (True, True, False),
    "proc.cwd startswith /dev": (True, True, False),
    "proc.cwd endswith /shm/": (True, True, False),
    "proc.cwd contains ev/s": (True, True, False),
    "proc.cwd glob '/dev/*'": (True, True, False),
    "proc.cwd icontains /DEV": (True, True, False),
    "proc.is_exe_from_memfd = true": (False, True, False),
    "proc.is_exe_from_memfd != true": (True, False, False),
    "user.name = Alice and (proc.pid = 1 or proc.cwd = /dev/shm/)": (True, True, False),
}


def _records() -> list[dict[str, Any]]:
    plain = copy.deepcopy(EXEC)
    plain["attrs"]["otelguard.process.exe_from_memfd"] = False
    odd = copy.deepcopy(plain)
    odd["attrs"].update({"process.pid": "0x10", "otelguard.process.tty": "1",
                         "otelguard.process.exe_from_memfd": True})
    bare = copy.deepcopy(plain)
    for key in ("process.pid", "otelguard.process.tty", "process.working_directory",
                "otelguard.process.exe_from_memfd"):
        del bare["attrs"][key]
    return [plain, odd, bare]


def _rules() -> str:
    return "".join(f"- rule: r{i}\n  desc: d\n  condition: evt.type = execve and {c}\n"
                   f"  output: o\n  priority: WARNING\n" for i, c in enumerate(CHECKS))


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine.from_text(("t.yaml", _rules()))


@pytest.mark.parametrize("which", range(3))
def test_inline_checks_mean_what_their_closures_mean(engine: RuleEngine, which: int) -> None:
    spec = _records()[which]
    rec = LogRecord()
    fill(rec, spec, which)
    res = resource_of(spec)
    got = {r.name for r in engine.match(engine.view(rec, res))}
    ev = engine.view(rec, res)
    via_closures = {r.name for _o, r in engine._match_plan(
        engine._plans.get(event_type(ev), engine._any_plan), ev)}
    want = {f"r{i}" for i, expected in enumerate(CHECKS.values()) if expected[which]}
    assert got == want
    assert via_closures == want
    assert engine.errors == 0


def test_a_failing_rule_is_counted_and_the_others_still_run() -> None:
    engine = RuleEngine.from_text(("t.yaml", "".join(
        f"- rule: r{i}\n  desc: d\n  condition: evt.type = execve and {c}\n  output: o\n"
        f"  priority: WARNING\n" for i, c in enumerate(
            ["user.name = Alice", "proc.name = bash", "user.name startswith Al"]))))
    spec = _records()[0]
    rec = LogRecord()
    fill(rec, spec, 0)
    ev = engine.view(rec, resource_of(spec))

    class Broken:  # a value no string comparison can use
        def __str__(self) -> str:
            raise RuntimeError("bad value")
    ev._vals["process.user.name"] = Broken()
    assert [r.name for r in engine.match(ev)] == ["r1"]
    assert engine.errors == 2
