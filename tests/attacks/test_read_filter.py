"""The kernel read filter derived from the loaded rules (processors/detection/readfilter.py),
on the real kernel: the agent's ``sensor.read_rules`` path (Falco's stable + incubating rules,
``read_path_prefixes: []`` so only what the rules need is watched) widens the filter to
``/proc/`` for the rule reading ``/proc/*/environ`` and narrows it elsewhere, so a flood of
reads of an unwatched ``/etc`` file costs no record while a concurrent ``/etc/shadow`` read is
still detected, with nothing lost. With ``otelguard run``'s default config (the packaged rules,
no ``read_path_prefixes``) the filter is exactly what the rules test: the 2 M-open flood of
``/etc/hostname`` the issue measured costs no record and no drop, and a flood of a watched file
is deduplicated in the kernel (one record per window carrying the repeat count) while its
detection still fires."""

from __future__ import annotations

from typing import Iterator

import pytest

from otelguard import semconv as S
from otelguard.agent import with_rules_read_filter
from otelguard.ebpf.probe import ProbeConfig
from otelguard.ebpf.sensor import Sensor
from otelguard.ebpf.settings import SensorConfig
from otelguard.runner import build_pipeline, with_rules_read_filter as run_read_filter
from otelguard.processors.detection.engine import RULES_DIR
from otelguard.processors.detection.processor import Config, FalcoRulesProcessor, create
from tests.attacks.harness import Attack, python_attack
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


@pytest.fixture(scope="module")
def run_stage() -> FalcoRulesProcessor:
    return create(Config())  # the packaged rules, as `otelguard run` loads them


@pytest.fixture(scope="module")
def run_sensor() -> Iterator[Sensor]:
    """The sensor as ``otelguard run`` starts it with its default config and rules."""
    require_root()
    pipeline = build_pipeline(None, None)
    s = Sensor(run_read_filter(SensorConfig(cgroup_scope=SCOPE), pipeline))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_prefixes_are_what_the_rules_need(rules_sensor: Sensor) -> None:
    probe = rules_sensor.config.probe
    assert "/proc/" in probe.read_prefixes and "/etc/shadow" in probe.read_paths
    assert not any("/etc/hostname".startswith(p) for p in probe.read_prefixes)
    # the default filter has neither /proc/ nor the environ files: the rule could never fire
    assert not any("/proc/1/environ".startswith(p) for p in ProbeConfig().read_prefixes)


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


# The measurement: 2 M opens of /etc/hostname (at most 10 s), one /etc/shadow read in
# the middle of the flood, 1,000 right after it; then a pause so the repeat count is flushed.
RUN_FLOOD = r"""
import os, time
pid = os.fork()
if pid == 0:
    end, n = time.monotonic() + 10, 0
    while n < 2_000_000 and time.monotonic() < end:
        for _ in range(1000):
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        n += 1000
    print(n)
    os._exit(0)
time.sleep(1.0)
open("/etc/shadow").read()                     # during the flood
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
for _ in range(1000):                          # right after it
    open("/etc/shadow").read()
time.sleep(2.5)                                # the repeat count's window passes: flushed
"""


def shadow_opens(attack: Attack, pid: int) -> tuple[int, int]:
    """(records, opens they stand for) of ``pid``'s /etc/shadow opens: each record is one open
    plus the identical ones the kernel counted (otelguard.file.repeat_count)."""
    recs = [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == "/etc/shadow" and a.get(S.PROCESS_PID) == pid]
    return len(recs), sum(1 + int(a.get(S.FILE_REPEAT_COUNT, 0)) for a in recs)


def test_run_default_flood_of_an_unwatched_file_costs_no_record_and_no_drop(
        run_sensor: Sensor, run_stage: FalcoRulesProcessor) -> None:
    probe = run_sensor.config.probe
    assert "/etc/shadow" in probe.read_paths and "/etc/" not in probe.read_prefixes
    budget_before = run_sensor.stats()["budget_drops"]
    attack = python_attack(run_sensor, run_stage, RUN_FLOOD, attempts=1, timeout_s=60,
                           host=True)
    assert int(attack.stdout.split()[-1]) >= 100_000  # the flood really ran
    assert attack.losses == 0  # neither the kernel ring nor the user queue dropped anything
    assert run_sensor.stats()["budget_drops"] == budget_before
    opens = attack.records(S.EV_FILE_OPEN)
    assert not [a for a in opens if a.get(S.FILE_PATH) == "/etc/hostname"]
    attack.detection("Read sensitive file untrusted", "WARNING", S.EV_FILE_OPEN,
                     body=["file=/etc/shadow"], evidence={S.FILE_PATH: "/etc/shadow"})
    records, opened = shadow_opens(attack, attack.pid)
    assert opened == 1001 and records < 20  # every read accounted for, few records sent


WATCHED_FLOOD = r"""
import os, time
for _ in range(200_000):
    os.close(os.open("/etc/shadow", os.O_RDONLY))
time.sleep(2.5)
"""


def test_flood_of_a_watched_file_is_counted_in_the_kernel_and_still_detected(
        run_sensor: Sensor, run_stage: FalcoRulesProcessor) -> None:
    before = run_sensor.stats()["file_repeats"][0]
    attack = python_attack(run_sensor, run_stage, WATCHED_FLOOD, attempts=1,
                           timeout_s=60, host=True)
    assert attack.losses == 0
    attack.detection("Read sensitive file untrusted", "WARNING", S.EV_FILE_OPEN,
                     body=["file=/etc/shadow"], evidence={S.FILE_PATH: "/etc/shadow"})
    records, opened = shadow_opens(attack, attack.pid)
    assert opened == 200_000 and records < 40
    assert run_sensor.stats()["file_repeats"][0] - before >= 200_000 - records
    repeated = [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_REPEAT_COUNT)]
    assert repeated and all(str(a.get(S.FILE_OPEN_FLAGS)).startswith("O_RDONLY") for a in repeated)
