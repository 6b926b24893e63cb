"""Container escape and persistence attempts performed for real: a release_agent write, a BPF
program loaded from a container, a binary dropped into the container's writable overlayfs
layer and executed, and a file written then executed in the same container."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from tests.attacks.harness import PYTHON, PYTHON_NAME, python_attack, run_attack
from tests.attacks.payloads import OVERLAY_CONTAINER, TINY_ELF
from tests.ebpf.containers import new_container_id, new_pod_uid

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """World-writable scratch directory (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="og-attack-"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_release_agent_write(sensor: Sensor, stage: FalcoRulesProcessor,
                             shared_dir: Path) -> None:
    # A cgroup v1 hierarchy's release_agent cannot be written on this cgroup v2 host; the rule
    # keys on what the exploit does first: open a file named release_agent for writing, as
    # root with CAP_SYS_ADMIN, from inside a container.
    agent = shared_dir / "release_agent"
    attack = python_attack(sensor, stage, f"open('{agent}', 'w').write('/payload.sh')")
    d = attack.detection(
        "Detect release_agent File Container Escapes", "CRITICAL", S.EV_FILE_OPEN,
        body=["Detect an attempt to exploit a container escape using release_agent file",
              f"file={agent}", "CAP_SYS_ADMIN", f"process={PYTHON_NAME}"],
        evidence={S.FILE_PATH: str(agent)})
    assert "CAP_SYS_ADMIN" in d.trigger_attrs[S.PROCESS_CAP_EFFECTIVE]


def test_release_agent_write_without_privilege_does_not_fire(
        sensor: Sensor, stage: FalcoRulesProcessor, shared_dir: Path) -> None:
    agent = shared_dir / "release_agent"
    attack = python_attack(sensor, stage, f"open('{agent}', 'w').write('/payload.sh')",
                           user=NOBODY, group=NOBODY)
    opens = [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == str(agent)]
    assert opens and opens[0][S.PROCESS_USER_ID] == NOBODY
    assert not attack.fired("Detect release_agent File Container Escapes")


# BPF_PROG_LOAD of the smallest socket filter ("r0 = 0; exit"), then BPF_MAP_CREATE.
BPF = r"""
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
insns = ctypes.create_string_buffer(bytes.fromhex("b700000000000000" "9500000000000000"), 16)
lic = ctypes.create_string_buffer(b"GPL")
cmd = sys.argv[1]
if cmd == "load":
    attr = struct.pack("<IIQQ", 1, 2, ctypes.addressof(insns), ctypes.addressof(lic))
    nr = 5                                                        # BPF_PROG_LOAD
else:
    attr = struct.pack("<IIII", 2, 4, 8, 1)                       # ARRAY map, 4/8, 1 entry
    nr = 0                                                        # BPF_MAP_CREATE
buf = ctypes.create_string_buffer(attr + b"\0" * (128 - len(attr)))
fd = libc.syscall(321, nr, buf, 128)
assert fd >= 0, ctypes.get_errno()
"""


def test_bpf_program_loaded_from_container(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = run_attack(sensor, stage, [PYTHON, "-c", BPF, "load"])
    assert attack.returncode == 0, attack.stderr.decode()
    d = attack.detection(
        "Kernel module or BPF program load from container", "CRITICAL", S.EV_BPF,
        body=["Kernel code loaded from a container", "evt_type=bpf", "bpf_cmd=BPF_PROG_LOAD",
              "res=SUCCESS", f"process={PYTHON_NAME}"],
        evidence={S.BPF_COMMAND: "BPF_PROG_LOAD"})
    assert int(d.trigger_attrs[S.SYSCALL_RET]) >= 0


def test_bpf_map_from_container_does_not_fire(sensor: Sensor,
                                              stage: FalcoRulesProcessor) -> None:
    attack = run_attack(sensor, stage, [PYTHON, "-c", BPF, "map"])
    assert attack.returncode == 0, attack.stderr.decode()
    assert [a[S.BPF_COMMAND] for a in attack.records(S.EV_BPF)] == ["BPF_MAP_CREATE"]
    assert not attack.fired("Kernel module or BPF program load from container")


DROP_AND_RUN = "import os, shutil, subprocess; shutil.copy('/bin/sleep', '{p}'); " \
    "os.chmod('{p}', 0o755); subprocess.run(['{p}', '0.3'], check=True)"


def test_execution_of_file_written_in_same_container(sensor: Sensor, stage: FalcoRulesProcessor,
                                                     tmp_path: Path) -> None:
    dropped = tmp_path / "kworkerd"
    attack = python_attack(sensor, stage, DROP_AND_RUN.format(p=dropped))
    d = attack.detection(
        "Execution of file written in the same container", "CRITICAL", S.EV_PROCESS_EXEC,
        body=["Executed a file written in this container moments ago",
              f"proc_exepath={dropped}", "process=kworkerd", f"parent={PYTHON_NAME}"],
        evidence={S.PROCESS_EXECUTABLE_PATH: str(dropped)})
    assert d.attrs[S.THREAT_TECHNIQUE_ID] == ["T1105", "T1204.002"]


def test_file_written_by_another_container_does_not_fire(
        sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    dropped = tmp_path / "tool"
    pod = new_pod_uid()
    writer = python_attack(sensor, stage, f"import shutil; shutil.copy('/bin/sleep', '{dropped}')",
                           container_kwargs={"pod_uid": pod})
    assert [a for a in writer.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == str(dropped)]
    runner = run_attack(sensor, stage, [str(dropped), "0.3"],
                        container_kwargs={"pod_uid": pod, "container_id": new_container_id()})
    assert runner.returncode == 0
    assert [a for a in runner.records(S.EV_PROCESS_EXEC)
            if a.get(S.PROCESS_EXECUTABLE_PATH) == str(dropped)]
    assert not runner.fired("Execution of file written in the same container")


def test_drop_and_execute_in_overlay_upper_layer(sensor: Sensor, stage: FalcoRulesProcessor,
                                                 tmp_path: Path) -> None:
    attack = run_attack(sensor, stage, [PYTHON, "-c", OVERLAY_CONTAINER, str(tmp_path)])
    assert attack.returncode == 0, attack.stderr.decode()
    assert (tmp_path / "upper" / "payload").is_file()  # the write landed in the upper layer
    d = attack.detection(
        "Drop and execute new binary in container", "CRITICAL", S.EV_PROCESS_EXEC,
        body=["Executing binary not part of base image", "proc_exe=/payload", "process=payload",
              "exe_flags=EXE_UPPER_LAYER"],
        evidence={S.PROCESS_EXE_UPPER_LAYER: True})
    assert d.trigger_attrs[S.PROCESS_EXECUTABLE_PATH] == "/payload"
    # near misses in the same container: binaries of the image (lower) layer, also when a
    # dropped shell runs them (its fork inherits nothing of the new image's layer)
    image = [a for a in attack.records(S.EV_PROCESS_EXEC)
             if a.get(S.PROCESS_EXECUTABLE_PATH) in ("/usr/bin/sleep", "/usr/bin/true")]
    assert {a[S.PROCESS_EXECUTABLE_PATH] for a in image} == {"/usr/bin/sleep", "/usr/bin/true"}
    assert [a[S.PROCESS_EXE_UPPER_LAYER] for a in image] == [False] * len(image)
    fired = attack.fired("Drop and execute new binary in container")
    assert sorted(h.trigger_attrs[S.PROCESS_EXECUTABLE_PATH] for h in fired) == [
        "/payload", "/payload-sh"]


# The same container root; the dropped binary exits at once and the shell-like process that
# ran it is gone before its exec is decoded, so no process that ran it is left to ask: the
# root the runner had at its fork (the container's, seen while its parent lived) decides.
OVERLAY_DROP_QUICK = TINY_ELF + OVERLAY_CONTAINER.split("shutil.copy(", 1)[0] + r"""
import time
with open("/payload", "wb") as f:
    f.write(TINY_ELF)
os.chmod("/payload", 0o755)
for _ in range(3):
    runner = os.fork()
    if runner == 0:                                 # a shell: forks the payload and exits
        if os.fork() == 0:
            time.sleep(0.05)                        # the shell is gone by now
            os.execv("/payload", ["payload"])
        os._exit(0)
    os.waitpid(runner, 0)
time.sleep(0.3)                                     # the payloads ran (orphans: not ours)
"""


def test_drop_and_execute_of_a_binary_that_exits_at_once(
        sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    attack = run_attack(sensor, stage, [PYTHON, "-c", OVERLAY_DROP_QUICK, str(tmp_path)])
    assert attack.returncode == 0, attack.stderr.decode()
    execs = [a for a in attack.records(S.EV_PROCESS_EXEC)
             if a.get(S.PROCESS_EXECUTABLE_PATH) == "/payload"]
    assert len(execs) == 3 and [a[S.PROCESS_EXE_UPPER_LAYER] for a in execs] == [True] * 3
    fired = attack.fired("Drop and execute new binary in container")
    assert len(fired) == 3
    attack.detection("Drop and execute new binary in container", "CRITICAL", S.EV_PROCESS_EXEC,
                     body=["proc_exe=payload", "exe_flags=EXE_UPPER_LAYER"],
                     evidence={S.PROCESS_EXE_UPPER_LAYER: True})


@pytest.mark.skipif(not Path("/sys/kernel/tracing/events/syscalls/sys_enter_finit_module").is_dir(),
                    reason="kernel built without CONFIG_MODULES: no finit_module tracepoint")
def test_kernel_module_load_from_container(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    # finit_module of a file that is no module: the attempt (EINVAL/ENOEXEC) is the evidence
    code = ("import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
            "fd = os.open('/etc/hostname', os.O_RDONLY); libc.syscall(313, fd, b'', 0)")
    attack = python_attack(sensor, stage, code)
    attack.detection("Linux Kernel Module Injection Detected", "WARNING", S.EV_MODULE_LOAD,
                     body=["Linux Kernel Module injection from container"])
    attack.detection("Kernel module or BPF program load from container", "CRITICAL",
                     S.EV_MODULE_LOAD, body=["evt_type=finit_module"])
