"""The kernel read filter derived from the loaded rules (processors/detection/readfilter.py),
on the real kernel: the agent's ``sensor.read_rules`` path (Falco's stable + incubating rules,
``read_path_prefixes: []`` so only what the rules need is watched) widens the filter to
``/proc/`` for the rule reading ``/proc/*/environ`` and narrows it elsewhere, so a flood of
reads of an unwatched ``/etc`` file costs no record while a concurrent ``/etc/shadow`` read is
still detected, with nothing lost."""

from __future__ import annotations

from typing import Iterator

import pytest

from otelguard import semconv as S
from otelguard.agent import with_rules_read_filter
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from otelguard.processors.detection.engine import RULES_DIR
from otelguard.processors.detection.processor import Config, FalcoRulesProcessor, create
from tests.attacks.harness import python_attack
from tests.support.prerequisites import require_root
from tests.support.sensor import SCOPE

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

RULES = tuple(str(RULES_DIR / f) for f in ("falco_rules.yaml", "falco-incubating_rules.yaml"))


@pytest.fixture(scope="module")
def rules_stage() -> FalcoRulesProcessor:
    return create(Config(rules=RULES))


@pytest.fixture(scope="module")
def rules_sensor() -> Iterator[Sensor]:
    require_root()
    cfg = with_rules_read_filter(SensorConfig(
        cgroup_scope=SCOPE, read_rules=RULES, probe=ProbeConfig(read_path_prefixes=())))
    s = Sensor(cfg)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_prefixes_are_what_the_rules_need(rules_sensor: Sensor) -> None:
    prefixes = rules_sensor.config.probe.read_path_prefixes
    assert "/proc/" in prefixes and "/etc/shadow" in prefixes
    assert not any("/etc/hostname".startswith(p) for p in prefixes)
    # the default filter has neither /proc/ nor the environ files: the rule could never fire
    assert not any("/proc/1/environ".startswith(p) for p in ProbeConfig().read_path_prefixes)


def test_proc_environ_read_is_seen_when_a_rule_needs_it(
        rules_sensor: Sensor, rules_stage: FalcoRulesProcessor) -> None:
    attack = python_attack(rules_sensor, rules_stage, "open('/proc/self/environ').read()")
    attack.detection("Read environment variable from /proc files", "WARNING",
                     S.EV_FILE_OPEN, body=["file=/proc/self/environ"],
                     evidence={S.FILE_PATH: "/proc/self/environ"})


FLOOD = r"""
import os, time
pid = os.fork()
if pid == 0:                                   # 200k reads of a file no rule watches
    for _ in range(200_000):
        os.close(os.open("/etc/hostname", os.O_RDONLY))
    os._exit(0)
time.sleep(0.2)
open("/etc/shadow").read()                     # ... and one that a rule does, meanwhile
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
"""


def test_flood_of_unwatched_reads_does_not_hide_a_watched_one(
        rules_sensor: Sensor, rules_stage: FalcoRulesProcessor) -> None:
    budget_before = rules_sensor.stats()["budget_drops"]
    attack = python_attack(rules_sensor, rules_stage, FLOOD, attempts=1, timeout_s=120)
    assert attack.losses == 0
    assert rules_sensor.stats()["budget_drops"] == budget_before
    opens = attack.records(S.EV_FILE_OPEN)
    assert not [a for a in opens if a.get(S.FILE_PATH) == "/etc/hostname"]
    attack.detection("Read sensitive file untrusted", "WARNING", S.EV_FILE_OPEN,
                     body=["file=/etc/shadow"], evidence={S.FILE_PATH: "/etc/shadow"})
