"""Evasion probe against the real kernel: a child sets up io_uring with raw syscalls and submits
NOP and OPENAT requests many times; each opcode must be reported once, named, and the setup with
its fd and flags. Also checks our opcode table against the kernel's own names (tracefs)."""

from __future__ import annotations

import json

import pytest

from otelguard import semconv
from otelguard.ebpf.evasion import opcode_name
from otelguard.ebpf.events import Event
from otelguard.ebpf.sensor import Sensor
from tests.ebpf.capture import named, run_workload

pytestmark = pytest.mark.kernel

WORKLOAD = r'''
import ctypes, json, mmap, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)                         # io_uring_setup(8, &params)
assert fd >= 0, ctypes.get_errno()
sq_entries = struct.unpack_from("<I", params, 0)[0]
sq_off = struct.unpack_from("<7I", params, 40)            # head tail mask entries flags dropped array
ring = mmap.mmap(fd, sq_off[6] + sq_entries * 4, offset=0)
sqes = mmap.mmap(fd, sq_entries * 64, offset=0x10000000)
path = ctypes.create_string_buffer(b"/etc/hostname")
submitted = []
def submit(opcode, fill=None):
    tail = struct.unpack_from("<I", ring, sq_off[1])[0]
    mask = struct.unpack_from("<I", ring, sq_off[2])[0]
    idx = tail & mask
    sqe = bytearray(64); sqe[0] = opcode
    if fill: fill(sqe)
    sqes[idx * 64:(idx + 1) * 64] = bytes(sqe)
    struct.pack_into("<I", ring, sq_off[6] + idx * 4, idx)
    struct.pack_into("<I", ring, sq_off[1], tail + 1)
    submitted.append(libc.syscall(426, fd, 1, 1, 1, None, 0))  # io_uring_enter(..., GETEVENTS)
def openat(sqe):
    struct.pack_into("<i", sqe, 4, -100)                               # fd = AT_FDCWD
    struct.pack_into("<Q", sqe, 16, ctypes.addressof(path))            # addr = path
for _ in range(50):
    submit(0)                                                          # IORING_OP_NOP
for _ in range(5):
    submit(18, openat)                                                 # IORING_OP_OPENAT
bad = libc.syscall(425, 0, params)                                     # entries 0: EINVAL
print(json.dumps({"fd": fd, "submitted": submitted, "bad": bad, "pid": os.getpid()}))
'''


@pytest.fixture(scope="module")
def uring_run(sensor: Sensor) -> tuple[dict[str, object], list[Event]]:
    out, pid, events = run_workload(sensor, WORKLOAD)
    return json.loads(out), [e for e in events if e.pid == pid]


def test_each_opcode_reported_once_with_its_name(
        uring_run: tuple[dict[str, object], list[Event]]) -> None:
    info, events = uring_run
    assert info["submitted"] == [1] * 55
    subs = named(events, semconv.EV_IO_URING)
    assert sorted(e.attrs[semconv.IO_URING_OPCODE] for e in subs) == [
        "IORING_OP_NOP", "IORING_OP_OPENAT"]
    assert all(e.syscall == "io_uring_enter" and e.container_id for e in subs)


def test_setup_reports_fd_and_failure(uring_run: tuple[dict[str, object], list[Event]]) -> None:
    info, events = uring_run
    setups = named(events, semconv.EV_IO_URING_SETUP)
    assert [e.ret for e in setups] == [info["fd"], -22]
    assert setups[0].attrs[semconv.FILE_FD] == info["fd"]
    assert setups[0].attrs[semconv.IO_URING_SETUP_FLAGS] == "0"
    assert setups[1].attrs[semconv.ERROR_TYPE] == "EINVAL"


SAFE_OPCODES = (0, 13, 16, 18, 22, 23, 26, 27)  # with fd -1: harmless, and traced

OPCODE_WORKLOAD = WORKLOAD.split("for _ in range(50):")[0] + r'''
def bad_fd(sqe):
    struct.pack_into("<i", sqe, 4, -1)
for op in OPCODES:
    submit(op, openat if op == 18 else (None if op == 0 else bad_fd))
print(os.getpid())
'''


def test_opcode_table_matches_the_kernels_names(tmp_path: object) -> None:
    """The io_uring_submit_req tracepoint prints the kernel's own opcode name (op_str); read it
    through a private tracefs instance for harmless requests and compare with our table."""
    import os
    import secrets
    import subprocess
    import sys
    from pathlib import Path

    inst = Path("/sys/kernel/tracing/instances") / f"og-uring-{secrets.token_hex(4)}"
    inst.mkdir()
    try:
        (inst / "events/io_uring/io_uring_submit_req/enable").write_text("1")
        code = f"OPCODES = {SAFE_OPCODES!r}\n" + OPCODE_WORKLOAD
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                              env={**os.environ})
        assert proc.returncode == 0, proc.stderr.decode()
        pid = int(proc.stdout.split()[-1])
        (inst / "events/io_uring/io_uring_submit_req/enable").write_text("0")
        lines = [ln for ln in (inst / "trace").read_text().splitlines() if f"-{pid} " in ln]
    finally:
        inst.rmdir()
    seen = [ln.split("opcode ")[1].split(",")[0] for ln in lines]
    assert len(seen) == len(SAFE_OPCODES), lines
    assert ["IORING_OP_" + name for name in seen] == [opcode_name(op) for op in SAFE_OPCODES]
    assert opcode_name(200) == "IORING_OP_200"
