"""Container launches and namespace games that Falco's incubating and sandbox rules judge by the
process's pid namespace and permitted capabilities, performed for real: a container entrypoint
(pid 1 of its own pid namespace, ``container_started``) exec'd with all capabilities, and
unshare by a process that holds CAP_SYS_ADMIN and by one that does not, and the entrypoint of a
privileged pod's container (container.privileged from the k8s_attributes stage). Each rule also
meets a near miss, and the rule files are Falco's own (the ``falco_stage`` of conftest.py)."""

from __future__ import annotations

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from otelguard.processors.k8s import K8sEnricher
from otelguard.processors.k8s.config import Config as K8sConfig
from otelguard.processors.k8s.source import InMemorySource, Kind
from tests.attacks.harness import PYTHON, python_attack, run_attack
from tests.ebpf.containers import new_container_id, new_pod_uid
from tests.processors.k8s import objects as o

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

NOBODY = 65534

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


def _pod_source(privileged: bool) -> tuple[K8sEnricher, dict[str, str]]:
    """A k8s_attributes stage whose source holds one running pod (one container, privileged or
    not), as the API server would report it; the container kwargs of that container."""
    src = InMemorySource()
    uid, cid = new_pod_uid(), new_container_id()
    ctx = {"securityContext": {"privileged": True}} if privileged else {}
    src.put(Kind.NAMESPACE, o.namespace("shop"))
    src.put(Kind.POD, o.running(
        o.pod("shop", "web-0", uid=uid,
              containers=[{"name": "main", "image": "registry.example/web:1.0", **ctx}]),
        "10.1.0.9", {"main": cid}))
    enricher = K8sEnricher(K8sConfig(wait_for_sync_seconds=0), src)
    enricher.start()
    return enricher, {"pod_uid": uid, "container_id": cid}


@pytest.mark.parametrize("privileged", [True, False])
def test_launch_privileged_container(sensor: Sensor, falco_stage: FalcoRulesProcessor,
                                     privileged: bool) -> None:
    enricher, where = _pod_source(privileged)
    try:
        attack = run_attack(sensor, falco_stage, [PYTHON, "-c", ENTRYPOINT],
                            container_kwargs=where, before=[enricher])
    finally:
        enricher.shutdown()
    assert attack.returncode == 0, attack.stderr.decode()
    entry = [a for a in attack.records(S.EV_PROCESS_EXEC) if a.get(S.PROCESS_VPID) == 1]
    assert len(entry) == 1
    # the entrypoint launches in both pods; only the privileged one is reported
    assert attack.fired("Launch Disallowed Container")
    if not privileged:
        assert not attack.fired("Launch Privileged Container")
        return
    d = attack.detection("Launch Privileged Container", "INFORMATIONAL", S.EV_PROCESS_EXEC,
                         body=["Privileged container started", "process=sh"],
                         evidence={S.PROCESS_VPID: 1})
    assert d.resource[S.K8S_POD_PRIVILEGED] is True and d.resource[S.K8S_POD_NAME] == "web-0"
    assert [h.trigger_attrs[S.LOG_RECORD_UID] for h in attack.fired(
        "Launch Privileged Container")] == [d.trigger_attrs[S.LOG_RECORD_UID]]
