"""Defense evasion performed for real in a container: ptrace injection and anti-debugging,
execution from /dev/shm, fileless execution from a memfd, io_uring by an unexpected process.
Each has a near-miss control."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from tests.attacks.harness import PYTHON_NAME, named_binary, python_attack, run_attack
from tests.attacks.payloads import MEMFD_EXEC, MEMFD_PROC_FD_EXEC, PTRACE_ATTACH

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]


PTRACE_TRACEME = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
assert libc.ptrace(0, 0, 0, 0) == 0                # PTRACE_TRACEME: nobody may debug us now
"""


def test_ptrace_attach(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, PTRACE_ATTACH)
    victim = int(attack.stdout)
    d = attack.detection(
        "PTRACE attached to process", "WARNING", S.EV_PTRACE,
        body=["Detected ptrace PTRACE_ATTACH attempt", f"process={PYTHON_NAME}",
              "evt_type=ptrace"],
        evidence={S.PTRACE_REQUEST: "PTRACE_ATTACH"})
    assert d.trigger_attrs[S.TARGET_PID] == victim and d.trigger_attrs[S.SYSCALL_RET] == 0
    # the DETACH of the same session is captured and is no injection
    assert [a[S.PTRACE_REQUEST] for a in attack.records(S.EV_PTRACE)] == [
        "PTRACE_ATTACH", "PTRACE_DETACH"]
    assert len(attack.fired("PTRACE attached to process")) == 1
    assert not attack.fired("PTRACE anti-debug attempt")


def test_ptrace_traceme_anti_debug(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, PTRACE_TRACEME)
    attack.detection(
        "PTRACE anti-debug attempt", "NOTICE", S.EV_PTRACE,
        body=["Detected potential PTRACE_TRACEME anti-debug attempt", f"process={PYTHON_NAME}"],
        evidence={S.PTRACE_REQUEST: "PTRACE_TRACEME"})
    assert not attack.fired("PTRACE attached to process")


@pytest.fixture
def shm_copy() -> Iterator[Path]:
    path = Path(f"/dev/shm/og-attack-{os.getpid()}-{os.urandom(3).hex()}")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_execution_from_dev_shm(sensor: Sensor, stage: FalcoRulesProcessor,
                                shm_copy: Path) -> None:
    script = f"cp /bin/true {shm_copy} && chmod +x {shm_copy} && {shm_copy}"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0
    attack.detection(
        "Execution from /dev/shm", "WARNING", S.EV_PROCESS_EXEC,
        body=["File execution detected from /dev/shm", f"proc_exepath={shm_copy}",
              f"process={shm_copy.name[:15]}"],  # proc.name is the 15-char comm
        evidence={S.PROCESS_EXECUTABLE_PATH: str(shm_copy)})


def test_execution_of_the_same_binary_elsewhere_does_not_fire(
        sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    copy = tmp_path / "og-attack-true"
    script = f"cp /bin/true {copy} && chmod +x {copy} && {copy}"
    attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    assert attack.returncode == 0
    assert [a for a in attack.records(S.EV_PROCESS_EXEC)
            if a.get(S.PROCESS_EXECUTABLE_PATH) == str(copy)]
    assert not attack.fired("Execution from /dev/shm")





def test_fileless_execution_from_memfd(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, MEMFD_EXEC)
    assert attack.records(S.EV_MEMFD_CREATE)
    d = attack.detection(
        "Fileless execution via memfd_create", "CRITICAL", S.EV_PROCESS_EXEC,
        body=["Fileless execution via memfd_create", "exe_flags=EXE_FROM_MEMFD",
              f"parent={PYTHON_NAME}"],
        evidence={S.PROCESS_EXE_FROM_MEMFD: True})
    assert str(d.trigger_attrs[S.PROCESS_EXECUTABLE_PATH]).startswith("/memfd:payload")


def test_fileless_payload_that_exits_at_once(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    # gone before the agent reads /proc/<pid>/exe: the exec record itself must say "memfd"
    # (execveat of an fd, and the kernel names the process after the memfd: "memfd:payload")
    code = MEMFD_EXEC.replace('"/bin/sleep"', '"/bin/true"').replace(', "0.3"]', "]")
    attack = python_attack(sensor, stage, code)
    d = attack.detection("Fileless execution via memfd_create", "CRITICAL", S.EV_PROCESS_EXEC,
                         body=["exe_flags=EXE_FROM_MEMFD"],
                         evidence={S.PROCESS_EXE_FROM_MEMFD: True})
    assert d.trigger_attrs[S.PROCESS_COMM] == "memfd:payload"


def test_fileless_payload_run_through_proc_self_fd(sensor: Sensor,
                                                  stage: FalcoRulesProcessor) -> None:
    # execve("/proc/self/fd/N") of a memfd: comm "3", /proc/<pid>/exe gone by decode time; the
    # memfd_create record (fd N, inherited at fork) decides it, as Falco decides at exec
    attack = python_attack(sensor, stage, MEMFD_PROC_FD_EXEC)
    (memfd,) = attack.records(S.EV_MEMFD_CREATE)
    fd = memfd[S.FILE_FD]
    execs = [a for a in attack.records(S.EV_PROCESS_EXEC)
             if a.get(S.PROCESS_COMM) == str(fd) and a.get(S.SYSCALL_RET) == 0]
    assert len(execs) == 3, [a.get(S.PROCESS_COMM) for a in attack.records(S.EV_PROCESS_EXEC)]
    assert [a[S.PROCESS_EXE_FROM_MEMFD] for a in execs] == [True] * 3
    assert {a[S.PROCESS_EXECUTABLE_PATH] for a in execs} == {"/memfd:payload"}
    fired = [d for d in attack.fired("Fileless execution via memfd_create")
             if d.trigger_attrs.get(S.PROCESS_COMM) == str(fd)]
    assert len(fired) == 3
    attack.detection("Fileless execution via memfd_create", "CRITICAL", S.EV_PROCESS_EXEC,
                     body=["exe_flags=EXE_FROM_MEMFD"], evidence={S.PROCESS_EXE_FROM_MEMFD: True})


def test_execution_from_a_file_is_not_fileless(sensor: Sensor, stage: FalcoRulesProcessor,
                                               tmp_path: Path) -> None:
    code = (f"import shutil, subprocess; shutil.copy('/bin/sleep', '{tmp_path}/payload'); "
            f"subprocess.run(['{tmp_path}/payload', '0.3'], check=True)")
    attack = python_attack(sensor, stage, code)
    execs = [a for a in attack.records(S.EV_PROCESS_EXEC)
             if a.get(S.PROCESS_EXECUTABLE_PATH) == f"{tmp_path}/payload"]
    assert execs and execs[0][S.PROCESS_EXE_FROM_MEMFD] is False
    assert not attack.fired("Fileless execution via memfd_create")


IO_URING = r"""
import ctypes, mmap, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 4, params)                               # io_uring_setup
assert fd >= 0, ctypes.get_errno()
sq_entries = struct.unpack_from("<I", params, 0)[0]
sq_off = struct.unpack_from("<7I", params, 40)
ring = mmap.mmap(fd, sq_off[6] + sq_entries * 4, offset=0)
sqes = mmap.mmap(fd, sq_entries * 64, offset=0x10000000)
path = ctypes.create_string_buffer(b"/etc/passwd")
sqe = bytearray(64); sqe[0] = 18                                # IORING_OP_OPENAT
struct.pack_into("<i", sqe, 4, -100); struct.pack_into("<Q", sqe, 16, ctypes.addressof(path))
sqes[0:64] = bytes(sqe)
struct.pack_into("<I", ring, sq_off[6], 0)
struct.pack_into("<I", ring, sq_off[1], 1)
assert libc.syscall(426, fd, 1, 1, 1, None, 0) == 1             # io_uring_enter
"""


def test_io_uring_by_unexpected_process(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, IO_URING)
    d = attack.detection(
        "io_uring used by unexpected process", "WARNING", S.EV_IO_URING,
        body=["io_uring used by unexpected process", "opcode=IORING_OP_OPENAT",
              f"process={PYTHON_NAME}"],
        evidence={S.IO_URING_OPCODE: "IORING_OP_OPENAT"})
    assert d.trigger_attrs[S.PROCESS_PID] == attack.pid
    # the file opened through the ring never reached the openat tracepoint: the blind spot
    assert not [a for a in attack.records(S.EV_FILE_OPEN) if a.get(S.FILE_PATH) == "/etc/passwd"]


def test_io_uring_by_known_user_does_not_fire(sensor: Sensor, stage: FalcoRulesProcessor,
                                              bindir: Path) -> None:
    postgres = named_binary(bindir, "postgres")
    attack = python_attack(sensor, stage, IO_URING, exe=postgres)
    uring = attack.records(S.EV_IO_URING)
    assert uring and {a.get(S.PROCESS_EXECUTABLE_NAME) for a in uring} == {"postgres"}, uring
    assert not attack.fired("io_uring used by unexpected process")
