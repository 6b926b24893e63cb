"""Credential access through sensitive files, performed for real in a container: reading
/etc/shadow (untrusted reader; trusted server binary after its startup), directory traversal,
links planted over sensitive files, and a file made below /dev with creat(2). Each attack has a near-miss control that must not fire
while its records are demonstrably captured."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from tests.attacks.harness import (
    PYTHON, PYTHON_NAME, Attack, named_binary, python_attack, run_attack,
)

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

# repeatable link attacks (a run is repeated when the sensor lost records): remove old links
CLEAN = "(lambda *ps: [os.unlink(p) for p in ps if os.path.lexists(p)])"
READ_SHADOW = "open('/etc/shadow', 'rb').read(1)"


def _opens(attack: Attack, path: str) -> list[dict[str, Any]]:
    return [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == path]


def test_read_shadow_by_untrusted_program(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, READ_SHADOW)
    d = attack.detection(
        "Read sensitive file untrusted", "WARNING", S.EV_FILE_OPEN,
        body=["Sensitive file opened for reading by non-trusted program",
              "file=/etc/shadow", f"process={PYTHON_NAME}", "evt_type=openat", "user=root"],
        evidence={S.FILE_PATH: "/etc/shadow", S.PROCESS_EXECUTABLE_NAME: PYTHON_NAME})
    assert d.trigger_attrs[S.PROCESS_PID] == attack.pid
    assert d.attrs[S.THREAT_TECHNIQUE_ID] == ["T1555"]
    assert d.attrs[S.THREAT_TACTIC_NAME] == ["credential_access"]
    assert d.attrs[S.SECURITY_RULE_REFERENCE] == "https://attack.mitre.org/techniques/T1555/"


def test_read_shadow_by_trusted_shell_does_not_fire(sensor: Sensor,
                                                    stage: FalcoRulesProcessor) -> None:
    # shells are in the rule's trusted list: `sh -c ': < /etc/shadow'` opens it in dash itself
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", ": < /etc/shadow"])
    assert attack.returncode == 0
    # /bin/sh is dash ("sh" when it exited before the agent read /proc/<pid>/exe)
    assert [a[S.PROCESS_EXECUTABLE_NAME] in ("sh", "dash")
            for a in _opens(attack, "/etc/shadow")] == [True]
    assert not attack.fired("Read sensitive file untrusted")


def test_read_shadow_by_server_after_startup(sensor: Sensor, stage: FalcoRulesProcessor,
                                             bindir: Path) -> None:
    nginx = named_binary(bindir, "nginx")
    code = "import time; time.sleep(5.3); " + READ_SHADOW
    attack = python_attack(sensor, stage, code, exe=nginx)
    d = attack.detection(
        "Read sensitive file trusted after startup", "WARNING", S.EV_FILE_OPEN,
        body=["Sensitive file opened for reading by trusted program after startup",
              "file=/etc/shadow", "process=nginx", f"proc_exepath={nginx}"],
        evidence={S.FILE_PATH: "/etc/shadow", S.PROCESS_EXECUTABLE_NAME: "nginx"})
    assert int(d.trigger_attrs[S.PROCESS_DURATION_NS]) > 5_000_000_000


def test_read_shadow_by_server_at_startup_is_not_after_startup(
        sensor: Sensor, stage: FalcoRulesProcessor, bindir: Path) -> None:
    nginx = named_binary(bindir, "nginx")
    attack = python_attack(sensor, stage, READ_SHADOW, exe=nginx)
    opens = _opens(attack, "/etc/shadow")
    assert len(opens) == 1 and int(opens[0][S.PROCESS_DURATION_NS]) < 5_000_000_000
    assert not attack.fired("Read sensitive file trusted after startup")
    # a server name is not on the untrusted rule's allow list: that one still fires
    assert attack.fired("Read sensitive file untrusted")


TRAVERSAL = "import os; os.chdir('/usr/share'); open('../../etc/passwd', 'rb').read(1)"


def test_directory_traversal_read(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, TRAVERSAL)
    attack.detection(
        "Directory traversal monitored file read", "WARNING", S.EV_FILE_OPEN,
        body=["Read monitored file via directory traversal", "file=/etc/passwd",
              "fileraw=../../etc/passwd", f"process={PYTHON_NAME}"],
        evidence={S.FILE_PATH: "/etc/passwd", S.FILE_RAW_PATH: "../../etc/passwd"})


def test_plain_read_of_the_same_file_is_not_traversal(sensor: Sensor,
                                                      stage: FalcoRulesProcessor) -> None:
    # a plain read of /etc/passwd: no loaded rule tests it, so the kernel does not send it;
    # one of /etc/shadow (a watched name, also under the rule's etc_dir) is sent and evaluated
    attack = python_attack(sensor, stage, "open('/etc/passwd', 'rb').read(1); " + READ_SHADOW)
    assert not _opens(attack, "/etc/passwd")
    assert _opens(attack, "/etc/shadow")
    assert not attack.fired("Directory traversal monitored file read")


def test_symlink_and_hardlink_over_sensitive_files(sensor: Sensor, stage: FalcoRulesProcessor,
                                                   bindir: Path) -> None:
    # the hard link lives on /etc's filesystem so it really succeeds (root may link any file)
    work = bindir
    code = (f"import os; {CLEAN}('{work}/shadow-sym', '{work}/shadow-hard'); "
            f"os.symlink('/etc/shadow', '{work}/shadow-sym'); "
            f"os.link('/etc/shadow', '{work}/shadow-hard')")
    attack = python_attack(sensor, stage, code)
    sym = attack.detection(
        "Create Symlink Over Sensitive Files", "WARNING", S.EV_FILE_SYMLINK,
        body=["Symlinks created over sensitive files", "target=/etc/shadow",
              f"linkpath={work}/shadow-sym"],
        evidence={S.FILE_SYMLINK_TARGET: "/etc/shadow", S.FILE_PATH: f"{work}/shadow-sym"})
    assert sym.trigger_attrs[S.SYSCALL_RET] == 0
    hard = attack.detection(
        "Create Hardlink Over Sensitive Files", "WARNING", S.EV_FILE_LINK,
        body=["Hardlinks created over sensitive files", "target=/etc/shadow",
              f"linkpath={work}/shadow-hard"],
        evidence={S.FILE_PATH: "/etc/shadow", S.FILE_TARGET_PATH: f"{work}/shadow-hard"})
    assert hard.trigger_attrs[S.SYSCALL_RET] == 0
    assert (work / "shadow-hard").stat().st_ino == Path("/etc/shadow").stat().st_ino


def test_links_to_ordinary_files_do_not_fire(sensor: Sensor, stage: FalcoRulesProcessor,
                                             bindir: Path) -> None:
    work = bindir
    (work / "own").write_text("x")
    code = (f"import os; {CLEAN}('{work}/h-sym', '{work}/own-hard'); "
            f"os.symlink('/etc/hostname', '{work}/h-sym'); "
            f"os.link('{work}/own', '{work}/own-hard')")
    attack = python_attack(sensor, stage, code)
    assert attack.records(S.EV_FILE_SYMLINK) and attack.records(S.EV_FILE_LINK)
    assert not attack.fired("Create Symlink Over Sensitive Files")
    assert not attack.fired("Create Hardlink Over Sensitive Files")


# creat(2) is open(O_WRONLY|O_CREAT|O_TRUNC): Falco's rule names it beside the open calls
CREAT = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.creat(sys.argv[1].encode(), 0o600)
assert fd >= 0, os.strerror(ctypes.get_errno())
os.close(fd)
os.unlink(sys.argv[1])
"""


@pytest.mark.parametrize("directory", ["/dev", "/tmp"])
def test_creat_below_dev(sensor: Sensor, falco_stage: FalcoRulesProcessor,
                         directory: str) -> None:
    rule = "Create files below dev"
    path = f"{directory}/og-creat-{os.getpid()}"
    attack = run_attack(sensor, falco_stage, [PYTHON, "-c", CREAT, path])
    assert attack.returncode == 0, attack.stderr.decode()
    (rec,) = [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == path]
    assert rec[S.SYSCALL_NAME] == "creat"
    assert rec[S.FILE_OPEN_FLAGS] == "O_WRONLY|O_CREAT|O_TRUNC" and rec[S.FILE_MODE] == "0600"
    if directory == "/tmp":
        assert not attack.fired(rule)
        return
    attack.detection(rule, "ERROR", S.EV_FILE_OPEN,
                     body=["File created below /dev by untrusted program", f"file={path}",
                           "evt_type=creat"])
