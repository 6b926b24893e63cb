"""Container launches and namespace games that Falco's incubating and sandbox rules judge by the
process's pid namespace and permitted capabilities, performed for real: a container entrypoint
(pid 1 of its own pid namespace, ``container_started``) exec'd with all capabilities, and
unshare by a process that holds CAP_SYS_ADMIN and by one that does not. Each rule also meets a
near miss, and the rule files are Falco's own (stable, then incubating and sandbox on top)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.engine import RULES_DIR
from otelguard.processors.detection.processor import Config, FalcoRulesProcessor, create
from tests.attacks.harness import PYTHON, python_attack, run_attack

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

NOBODY = 65534

# As a site would use the template rule: only the allowed image may start; a container whose
# image is not known to be allowed (here: none, no Kubernetes context) is reported.
LOCAL_RULES = """
- macro: allowed_containers
  condition: (container.image.repository in (registry.example/allowed))
  override:
    condition: replace
"""


@pytest.fixture(scope="module")
def falco_stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FalcoRulesProcessor]:
    local = tmp_path_factory.mktemp("rules") / "local_rules.yaml"
    local.write_text(LOCAL_RULES)
    stage = create(Config(
        rules=tuple(str(RULES_DIR / f) for f in (
            "falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml")),
        local_rules=(str(local),)))
    stage.start()
    yield stage
    stage.shutdown()


# A container runtime's last step: a new pid namespace whose first process execs the
# entrypoint (pid 1 there); the entrypoint runs one more command (pid 2: no launch).
ENTRYPOINT = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x20000000) == 0, os.strerror(ctypes.get_errno())   # CLONE_NEWPID
pid = os.fork()
if pid == 0:
    os.execv("/bin/sh", ["sh", "-c", "/bin/sleep 0.3; /bin/sleep 0.2"])
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
"""


def test_container_entrypoint_launch(sensor: Sensor, falco_stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, falco_stage, ENTRYPOINT)
    execs = [a for a in attack.records(S.EV_PROCESS_EXEC) if a.get(S.SYSCALL_RET) == 0]
    entry = [a for a in execs if a.get(S.PROCESS_VPID) == 1]
    assert len(entry) == 1 and entry[0][S.PROCESS_COMM] == "sh", [
        (a.get(S.PROCESS_COMM), a.get(S.PROCESS_VPID)) for a in execs]
    assert "CAP_SYS_ADMIN" in entry[0][S.PROCESS_CAP_PERMITTED]
    later = [a for a in execs if a.get(S.PROCESS_COMM) == "sleep"]
    assert later and all(a[S.PROCESS_VPID] > 1 for a in later)  # near misses: not pid 1
    for rule, priority, body in (
            ("Launch Disallowed Container", "WARNING", "Container started and not in allowed"),
            ("Launch Excessively Capable Container", "INFORMATIONAL",
             "Excessively capable container started")):
        d = attack.detection(rule, priority, S.EV_PROCESS_EXEC, body=[body, "process=sh"],
                             evidence={S.PROCESS_VPID: 1})
        assert [h.trigger_attrs[S.LOG_RECORD_UID] for h in attack.fired(rule)] == [
            d.trigger_attrs[S.LOG_RECORD_UID]]  # the entrypoint only


def test_entrypoint_without_powerful_capabilities_is_not_excessively_capable(
        sensor: Sensor, falco_stage: FalcoRulesProcessor) -> None:
    # the same launch by an unprivileged user (a user namespace gives the pid namespace)
    code = ENTRYPOINT.replace("0x20000000) == 0", "0x20000000 | 0x10000000) == 0")  # +NEWUSER
    attack = run_attack(sensor, falco_stage, [PYTHON, "-c", code], user=NOBODY, group=NOBODY)
    assert attack.returncode == 0, attack.stderr.decode()
    entry = [a for a in attack.records(S.EV_PROCESS_EXEC) if a.get(S.PROCESS_VPID) == 1]
    assert len(entry) == 1 and entry[0][S.PROCESS_CAP_PERMITTED] == []
    assert attack.fired("Launch Disallowed Container")
    assert not attack.fired("Launch Excessively Capable Container")


UNSHARE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(int(sys.argv[1], 0)) == 0, os.strerror(ctypes.get_errno())
"""


def test_unshare_by_a_process_without_cap_sys_admin(sensor: Sensor,
                                                    falco_stage: FalcoRulesProcessor) -> None:
    attack = run_attack(sensor, falco_stage, [PYTHON, "-c", UNSHARE, "0x10000000"],  # NEWUSER
                        user=NOBODY, group=NOBODY)
    assert attack.returncode == 0, attack.stderr.decode()
    d = attack.detection("Change namespace privileges via unshare", "NOTICE",
                         S.EV_UNSHARE, body=["Change namespace privileges via unshare"])
    assert d.trigger_attrs[S.PROCESS_CAP_PERMITTED] == []


def test_unshare_by_a_holder_of_cap_sys_admin_is_quiet(sensor: Sensor,
                                                       falco_stage: FalcoRulesProcessor) -> None:
    attack = run_attack(sensor, falco_stage, [PYTHON, "-c", UNSHARE, "0x00020000"])  # NEWNS
    assert attack.returncode == 0, attack.stderr.decode()
    (rec,) = attack.records(S.EV_UNSHARE)
    assert "CAP_SYS_ADMIN" in rec[S.PROCESS_CAP_PERMITTED]
    assert not attack.fired("Change namespace privileges via unshare")
