"""Probe decoders on hand-built records, with the real EventContext, process table and cgroups
(no root needed: records are built with ctypes exactly as the kernel lays them out)."""

from __future__ import annotations

import ctypes
import os
import sys
import time

import pytest

from otelguard import semconv
from otelguard.ebpf.cgroup import CgroupResolver
from otelguard.ebpf.clock import KernelClock
from otelguard.ebpf.file import create as create_file_probe, SYSCALLS, FileRecord, open_flag_names
from otelguard.ebpf.probe import Header, ProbeConfig
from otelguard.ebpf.process import create as create_process_probe, ExecRecord, ExitRecord, ForkRecord, ChdirRecord
from otelguard.ebpf.proctable import ProcessTable
from otelguard.ebpf.sensor import EventContext

FILE = create_file_probe()
PROCESS = create_process_probe()

GHOST = 4_194_001  # above the default pid_max: never a live process


@pytest.fixture
def ctx() -> EventContext:
    clock = KernelClock()
    return EventContext(ProcessTable(clock), CgroupResolver(), clock, ProbeConfig())


def _hdr(h: Header, type_id: int, pid: int, ret: int = 0, uid: int = 0) -> None:
    h.ktime_ns = time.monotonic_ns()
    h.cgroup_id = os.stat("/sys/fs/cgroup/unified").st_ino if os.path.exists(
        "/sys/fs/cgroup/unified") else 1
    h.ret = ret
    h.type = type_id
    h.pid = h.tid = pid
    h.uid = h.gid = uid
    h.comm = b"testcomm"


def _exec(pid: int, filename: str, argv: list[str], ret: int = 0, argv_max: int = 4,
          arg_len: int = 32, dirfd: int = -100, env: tuple[str, ...] = (), env_more: int = 0,
          env_max: int = 2, env_len: int = 64) -> bytes:
    r = ExecRecord()
    _hdr(r.h, 1, pid, ret, uid=1000)
    r.dirfd, r.sc, r.argc, r.argv_max, r.arg_len = dirfd, 0, len(argv), argv_max, arg_len
    r.envc, r.env_max, r.env_len, r.env_more = len(env), env_max, env_len, env_more
    r.filename = filename.encode()
    slots = b"".join(a.encode()[:arg_len - 1].ljust(arg_len, b"\0") for a in argv)
    env_slots = b"".join(e.encode()[:env_len - 1].ljust(env_len, b"\0") for e in env)
    return (bytes(r) + slots.ljust(argv_max * arg_len, b"\0")
            + env_slots.ljust(env_max * env_len, b"\0"))


def _file(sc_name: str, pid: int, path: str, path2: str = "", flags: int = 0, mode: int = 0,
          ret: int = 0, dfd: int = -100) -> bytes:
    index = [s.name for s in SYSCALLS].index(sc_name)
    r = FileRecord()
    _hdr(r.h, SYSCALLS[index].type_id, pid, ret)
    r.sc, r.type, r.flags, r.mode, r.dfd, r.dfd2 = index, SYSCALLS[index].type_id, flags, mode, dfd, -100
    r.path, r.path2 = path.encode(), path2.encode()
    return bytes(r)


def test_exec_record(ctx: EventContext) -> None:
    t0 = time.time_ns()
    ev = PROCESS.decode(1, _exec(GHOST, "/usr/bin/env", ["env", "--token", "t0p", "x"]), ctx)
    assert ev is not None
    assert ev.name == semconv.EV_PROCESS_EXEC and ev.syscall == "execve" and ev.ret == 0
    assert abs(ev.time_ns - t0) < 50_000_000
    a = ev.attrs
    assert a[semconv.PROCESS_EXECUTABLE_PATH] == "/usr/bin/env"
    assert a[semconv.PROCESS_EXECUTABLE_NAME] == "env"
    assert a[semconv.PROCESS_COMMAND_ARGS] == ["env", "--token", "***", "x"]
    assert a[semconv.PROCESS_COMMAND_LINE] == "env --token *** x"
    assert a[semconv.PROCESS_ARGS_COUNT] == 4
    assert a[semconv.PROCESS_USER_ID] == 1000 and a[semconv.PROCESS_REAL_USER_ID] == 1000
    assert a[semconv.PROCESS_PID] == GHOST
    assert ev.root_pid == GHOST and ev.process_start_ns > 0
    assert ctx.table.get(GHOST, load=False) is not None


def test_exec_env_slots(ctx: EventContext) -> None:
    # the kernel compared names without case on a head; user space re-checks the whole name
    # and redacts; a flagged record says the scan or the slots ran out
    ev = PROCESS.decode(1, _exec(GHOST, "/bin/true", ["true"], env=(
        "https_proxy=http://u:pw@p:3128", "LD_PRELOADX=/x.so"), env_more=2), ctx)
    assert ev is not None
    assert ev.attrs[semconv.PROCESS_ENV] == ["https_proxy=http://u:***@p:3128"]
    assert ev.attrs[semconv.PROCESS_ENV_TRUNCATED] is True
    child = GHOST + 1
    FORK = ForkRecord()
    _hdr(FORK.h, 2, GHOST)
    FORK.parent_pid, FORK.child_pid = GHOST, child
    fork = PROCESS.decode(2, bytes(FORK), ctx)
    assert fork is not None and fork.attrs[semconv.PROCESS_ENV] == ev.attrs[semconv.PROCESS_ENV]
    plain = PROCESS.decode(1, _exec(child, "/bin/true", ["true"]), ctx)
    assert plain is not None
    assert semconv.PROCESS_ENV not in plain.attrs and semconv.PROCESS_ENV_TRUNCATED not in plain.attrs
    # with the scan compiled out (env_names: []) nothing is decoded even if slots were there
    off = EventContext(ctx.table, ctx.cgroups, ctx.clock, ProbeConfig(env_names=()))
    ev = PROCESS.decode(1, _exec(GHOST + 2, "/bin/true", ["true"], env=("LD_PRELOAD=/x",)), off)
    assert ev is not None and semconv.PROCESS_ENV not in ev.attrs


def test_failed_exec_record(ctx: EventContext) -> None:
    me = os.getpid()
    ev = PROCESS.decode(1, _exec(me, "/nope/bin", ["bin"], ret=-13), ctx)
    assert ev is not None and ev.ret == -13
    assert ev.attrs[semconv.ERROR_TYPE] == "EACCES"
    assert ev.attrs[semconv.FILE_PATH] == "/nope/bin"
    assert ev.attrs[semconv.PROCESS_EXECUTABLE_PATH] == os.path.realpath(sys.executable)
    assert "Permission denied" in ev.body


def test_fork_exit_chdir_records(ctx: EventContext) -> None:
    me = os.getpid()
    f = ForkRecord()
    _hdr(f.h, 2, me)
    f.parent_pid, f.child_pid = me, GHOST + 1
    ev = PROCESS.decode(2, bytes(f), ctx)
    assert ev is not None and ev.name == semconv.EV_PROCESS_FORK
    assert ev.pid == GHOST + 1 and ev.attrs[semconv.PROCESS_PARENT_PID] == me
    assert ev.attrs[semconv.PROCESS_ANCESTOR_PIDS][0] == me  # type: ignore[index]
    assert ev.attrs[semconv.PROCESS_EXECUTABLE_PATH] == os.path.realpath(sys.executable)

    c = ChdirRecord()
    _hdr(c.h, 4, GHOST + 1)
    c.fd, c.path = -1, b"/var/../var/tmp"
    assert PROCESS.decode(4, bytes(c), ctx) is None
    assert ctx.resolve_path(GHOST + 1, -100, "x/./y") == "/var/tmp/x/y"
    opened = FILE.decode(20, _file("openat", GHOST + 1, "new", flags=0o101, mode=0o600, ret=5), ctx)
    assert opened is not None and opened.attrs[semconv.FILE_PATH] == "/var/tmp/new"

    x = ExitRecord()
    _hdr(x.h, 3, GHOST + 1)
    x.code, x.has_code = 3, 1
    ev = PROCESS.decode(3, bytes(x), ctx)
    assert ev is not None and ev.attrs[semconv.PROCESS_EXIT_CODE] == 3
    assert ev.syscall == "exit_group"
    x.has_code = 0
    ev = PROCESS.decode(3, bytes(x), ctx)
    assert ev is not None and semconv.PROCESS_EXIT_CODE not in ev.attrs


def test_open_records(ctx: EventContext) -> None:
    me = os.getpid()
    ev = FILE.decode(20, _file("openat", me, "/etc//x/../passwd", flags=0o1101, mode=0o644,
                               ret=7), ctx)
    assert ev is not None
    a = ev.attrs
    assert a[semconv.FILE_PATH] == "/etc/passwd" and a[semconv.FILE_RAW_PATH] == "/etc//x/../passwd"
    assert a[semconv.FILE_OPEN_FLAGS] == "O_WRONLY|O_CREAT|O_TRUNC"
    assert a[semconv.FILE_MODE] == "0644" and a[semconv.FILE_FD] == 7
    assert a[semconv.SYSCALL_NAME] == "openat" and a[semconv.SYSCALL_RET] == 7
    miss = FILE.decode(20, _file("open", me, "/etc/none", flags=0, ret=-2), ctx)
    assert miss is not None and miss.attrs[semconv.ERROR_TYPE] == "ENOENT"
    assert semconv.FILE_MODE not in miss.attrs and semconv.FILE_FD not in miss.attrs
    # relative read-only open outside the prefixes: filtered in user space after resolving
    os_cwd = os.getcwd()
    assert not any(os_cwd.startswith(p) for p in ProbeConfig().read_prefixes)
    assert FILE.decode(20, _file("openat", me, "README.md", flags=0), ctx) is None
    assert FILE.decode(20, _file("openat", me, "README.md", flags=1), ctx) is not None
    # a path that resolves outside the filter is filtered too, unless it is a traversal
    assert FILE.decode(20, _file("openat", me, "/tmp/./x", flags=0), ctx) is None
    trav = FILE.decode(20, _file("openat", me, "/tmp/../tmp/x", flags=0), ctx)
    assert trav is not None and trav.attrs[semconv.FILE_PATH] == "/tmp/x"
    # a record standing for identical opens the kernel counted carries their number
    rep = _file("openat", me, "/etc/shadow", flags=0, ret=3)
    rec = FileRecord.from_buffer_copy(rep)
    rec.repeat = 41
    ev = FILE.decode(20, bytes(rec), ctx)
    assert ev is not None and ev.attrs[semconv.FILE_REPEAT_COUNT] == 41
    assert ev.body.endswith("(+41 identical)")
    plain = FILE.decode(20, rep, ctx)
    assert plain is not None and semconv.FILE_REPEAT_COUNT not in plain.attrs


def test_two_path_records(ctx: EventContext) -> None:
    me = os.getpid()
    cwd = os.getcwd()
    rn = FILE.decode(22, _file("renameat2", me, "a", "/tmp/b", flags=1), ctx)
    assert rn is not None and rn.name == semconv.EV_FILE_RENAME
    assert rn.attrs[semconv.FILE_PATH] == f"{cwd}/a"
    assert rn.attrs[semconv.FILE_TARGET_PATH] == "/tmp/b"
    assert rn.attrs[semconv.FILE_OPEN_FLAGS] == "RENAME_NOREPLACE"
    sl = FILE.decode(25, _file("symlinkat", me, "/tmp/link", "../etc/shadow"), ctx)
    assert sl is not None and sl.attrs[semconv.FILE_SYMLINK_TARGET] == "../etc/shadow"
    assert sl.attrs[semconv.FILE_PATH] == "/tmp/link"
    rd = FILE.decode(21, _file("rmdir", me, "/tmp/d"), ctx)
    assert rd is not None and rd.attrs[semconv.FILE_OPEN_FLAGS] == "AT_REMOVEDIR"


def test_short_or_garbage_records_never_raise(ctx: EventContext) -> None:
    for type_id in (1, 2, 3, 4):
        assert PROCESS.decode(type_id, b"\x01" * 10, ctx) is None
    assert FILE.decode(20, b"", ctx) is None
    bad = bytearray(_file("openat", os.getpid(), "/etc/x", flags=1))
    bad[FileRecord.sc.offset] = 250  # unknown syscall index
    assert FILE.decode(20, bytes(bad), ctx) is None
    # truncated argv area: decodes what is there
    rec = _exec(GHOST + 5, "/bin/x", ["a", "b", "c", "d"])
    ev = PROCESS.decode(1, rec[: ctypes.sizeof(ExecRecord) + 40], ctx)
    assert ev is not None and ev.attrs[semconv.PROCESS_COMMAND_ARGS] == ["a"]


def test_open_flag_names() -> None:
    assert open_flag_names(0) == "O_RDONLY"
    assert open_flag_names(0o2000000) == "O_RDONLY|O_CLOEXEC"
    assert open_flag_names(0o2 | 0o2000) == "O_RDWR|O_APPEND"
    assert open_flag_names(0o20200000 | 0o2) == "O_RDWR|O_TMPFILE"
    assert open_flag_names(0o40000000000) == "O_RDONLY|0x100000000"
    assert open_flag_names(3) == "O_ACCMODE"


def test_log_record_uids_are_unique(ctx: EventContext) -> None:
    uids = set()
    for _ in range(100):
        ev = FILE.decode(20, _file("openat", os.getpid(), "/etc/x", flags=1), ctx)
        assert ev is not None
        uids.add(ev.attrs[semconv.LOG_RECORD_UID])
    assert len(uids) == 100


def test_the_decoders_protocol_checks_answer_per_type(ctx: EventContext) -> None:
    from otelguard.ebpf.privilege import MemfdTracker
    from otelguard.ebpf.probe import implements
    from otelguard.ebpf.process import ProcessLifecycle

    class Bare:  # a decode context that keeps no process table
        pass

    for _ in range(2):  # the second answer is the cached one
        assert implements(ctx, ProcessLifecycle) and implements(ctx, MemfdTracker)
        assert not implements(Bare(), ProcessLifecycle) and not implements(Bare(), MemfdTracker)


def test_a_childs_ancestors_from_its_parents_chain_equal_the_table_walk(ctx: EventContext) -> None:
    # a chain of 20 ghost processes, each forked by the one before (deeper than the 16 kept)
    from otelguard.ebpf.proctable import ANCESTOR_DEPTH

    t = ctx.table
    pids = [GHOST + 100 + i for i in range(20)]
    t.on_exec(pids[0], "/usr/sbin/init", ["init"], 0, 0, 1, "init")
    for parent, child in zip(pids, pids[1:]):
        t.on_fork(parent, child, 2)
        t.on_exec(child, f"/bin/p{child}", [f"p{child}"], 0, 0, 3, f"p{child}")
        # the parent's attributes are fresh: the child's chain comes from the parent's
        built = ctx._process_attrs(t.get(child, load=False))  # type: ignore[arg-type]
        walked = t.ancestors(t.get(child, load=False))  # type: ignore[arg-type]
        assert built.attrs[semconv.PROCESS_ANCESTOR_PIDS] == [p.pid for p in walked]
        assert built.attrs[semconv.PROCESS_ANCESTORS] == [p.comm or p.exe_name for p in walked]
    assert len(walked) == ANCESTOR_DEPTH
    # a parent that only forks (its attributes never built): its chain is walked once
    last = t.get(pids[-1], load=False)
    assert last is not None
    last.chain = None
    for child in (GHOST + 200, GHOST + 201):
        t.on_fork(pids[-1], child, 5)
        built = ctx._process_attrs(t.get(child, load=False))  # type: ignore[arg-type]
        walked = t.ancestors(t.get(child, load=False))  # type: ignore[arg-type]
        assert built.attrs[semconv.PROCESS_ANCESTOR_PIDS] == [p.pid for p in walked]
    # a pid taken again inside the chain (reuse): the chain stops before it, as the walk does
    t.on_fork(pids[-1], pids[5], 4)
    built = ctx._process_attrs(t.get(pids[5], load=False))  # type: ignore[arg-type]
    walked = t.ancestors(t.get(pids[5], load=False))  # type: ignore[arg-type]
    assert built.attrs[semconv.PROCESS_ANCESTOR_PIDS] == [p.pid for p in walked] == pids[6:][::-1]


def test_a_record_whose_cgroup_does_not_resolve_is_marked_not_host(ctx: EventContext) -> None:
    from otelguard.ebpf.events import UNRESOLVED_POD_UID

    assert ctx.cgroups.root is not None  # this machine has cgroup2 (the premise)
    h = Header()
    _hdr(h, 20, GHOST + 300)
    host = ctx.make_event(h, semconv.EV_FILE_OPEN, "openat", {})
    assert (host.container_id, host.pod_uid, host.cgroup_path) == ("", "", "/")
    h.cgroup_id = 2**62 + 12345  # no such cgroup: removed before decode, never seen
    gone = ctx.make_event(h, semconv.EV_FILE_OPEN, "openat", {})
    assert (gone.container_id, gone.pod_uid, gone.cgroup_path) == ("", UNRESOLVED_POD_UID, "")
    # without a cgroup2 mount nothing resolves and nothing is marked (host, as before)
    ctx.cgroups.root = None
    assert ctx.make_event(h, semconv.EV_FILE_OPEN, "openat", {}).pod_uid == ""
