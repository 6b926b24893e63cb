"""File probe on the real kernel: each traced syscall from a child in a container."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from otelguard import semconv
from otelguard.ebpf.events import Event
from tests.ebpf.capture import named
from tests.ebpf.pids import free_pid_ahead, reuse_script
from tests.support.sensor import RunInContainer

pytestmark = pytest.mark.kernel
PY = os.path.realpath(sys.executable)


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="og-file-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _py(run: RunInContainer, code: str, **kw: object) -> tuple[int, list[Event]]:
    r = run([PY, "-c", textwrap.dedent(code)], **kw)
    assert r.proc.returncode == 0, r.proc.stderr.decode()
    return r.pid, r.events


def _file_events(events: list[Event], pid: int, path_prefix: str) -> list[Event]:
    return [e for e in events if e.pid == pid and e.name.startswith("otelguard.file.")
            and str(e.attrs.get(semconv.FILE_PATH, "")).startswith(path_prefix)]


def test_open_write_and_missing_file(run_in_container: RunInContainer, workdir: Path) -> None:
    pid, events = _py(run_in_container, f"""
        import os
        fd = os.open("{workdir}/new.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        os.close(fd)
        try:
            os.open("{workdir}/missing/x", os.O_WRONLY | os.O_CREAT, 0o600)
        except FileNotFoundError:
            pass
    """)
    opens = _file_events(named(events, semconv.EV_FILE_OPEN), pid, str(workdir))
    assert len(opens) == 2, [e.body for e in opens]
    ok, missing = opens
    a = ok.attrs
    assert ok.syscall == "openat" and a[semconv.SYSCALL_NAME] == "openat"
    assert a[semconv.FILE_PATH] == f"{workdir}/new.txt"
    assert a[semconv.FILE_NAME] == "new.txt" and a[semconv.FILE_DIRECTORY] == str(workdir)
    assert a[semconv.FILE_OPEN_FLAGS] == "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC"
    assert a[semconv.FILE_MODE] == "0640"
    assert isinstance(a[semconv.FILE_FD], int) and a[semconv.FILE_FD] >= 3
    assert a[semconv.SYSCALL_RET] == a[semconv.FILE_FD] and semconv.ERROR_TYPE not in a
    assert a[semconv.PROCESS_EXECUTABLE_PATH] == PY
    assert ok.container_id and ok.pod_uid
    assert missing.ret == -2 and missing.attrs[semconv.ERROR_TYPE] == "ENOENT"
    assert missing.attrs[semconv.FILE_PATH] == f"{workdir}/missing/x"
    assert semconv.FILE_FD not in missing.attrs
    assert "failed" in missing.body


def test_kernel_filter_read_only_opens(run_in_container: RunInContainer, workdir: Path) -> None:
    (workdir / "plain.txt").write_text("x")
    pid, events = _py(run_in_container, f"""
        open("{workdir}/plain.txt").read()       # read-only, outside prefixes: filtered
        open("/etc/hostname").read()              # read-only under /etc/: emitted
        import os
        os.chdir("{workdir}")
        open("plain.txt").read()                  # relative read outside prefixes: filtered
        os.chdir("/etc")
        open("hostname").read()                   # relative read resolving under /etc/
    """)
    opens = [e for e in named(events, semconv.EV_FILE_OPEN) if e.pid == pid]
    paths = [e.attrs[semconv.FILE_PATH] for e in opens]
    assert f"{workdir}/plain.txt" not in paths
    assert paths.count("/etc/hostname") == 2, paths
    rel = [e for e in opens if e.attrs.get(semconv.FILE_RAW_PATH) == "hostname"]
    assert len(rel) == 1 and rel[0].attrs[semconv.FILE_OPEN_FLAGS] == "O_RDONLY|O_CLOEXEC"


def test_relative_paths_cwd_and_dirfd(run_in_container: RunInContainer, workdir: Path) -> None:
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    pid, events = _py(run_in_container, f"""
        import os, time
        os.chdir("{workdir}/a")
        open("rel.txt", "w").close()
        dfd = os.open("{workdir}/b", os.O_RDONLY | os.O_DIRECTORY)
        os.close(os.open("../b/./viafd.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dfd))
        os.fchdir(dfd)
        open("afterfchdir.txt", "w").close()
        time.sleep(2.0)  # dirfd/fchdir resolution reads /proc/<pid>/fd while we are alive
    """)
    paths = {e.attrs.get(semconv.FILE_RAW_PATH, ""): e.attrs[semconv.FILE_PATH]
             for e in named(events, semconv.EV_FILE_OPEN) if e.pid == pid}
    assert paths["rel.txt"] == f"{workdir}/a/rel.txt"
    assert paths["../b/./viafd.txt"] == f"{workdir}/b/viafd.txt"
    assert paths["afterfchdir.txt"] == f"{workdir}/b/afterfchdir.txt"


def test_namespace_changes(run_in_container: RunInContainer, workdir: Path) -> None:
    w = str(workdir)
    pid, events = _py(run_in_container, f"""
        import os
        os.mkdir("{w}/d", 0o750)
        open("{w}/f", "w").close()
        os.chmod("{w}/f", 0o600)
        os.chown("{w}/f", 65534, -1)
        os.rename("{w}/f", "{w}/g")
        os.link("{w}/g", "{w}/h")
        os.symlink("g", "{w}/s")
        os.truncate("{w}/g", 3)
        fd = os.open("{w}/g", os.O_RDWR)
        os.ftruncate(fd, 1)
        os.fchmod(fd, 0o644)
        os.fchown(fd, -1, 65534)
        os.unlink("{w}/h")
        os.rmdir("{w}/d")
        try:
            os.unlink("{w}/nope")
        except FileNotFoundError:
            pass
        import time
        time.sleep(2.0)  # fd-only calls resolve through /proc/<pid>/fd while the fd is open
        os.close(fd)
    """)
    fe = _file_events(events, pid, w)

    def one(name: str, **attrs: object) -> Event:
        got = [e for e in named(fe, name) if all(e.attrs.get(k) == v for k, v in attrs.items())]
        assert len(got) == 1, (name, attrs, [(e.name, e.attrs.get(semconv.FILE_PATH)) for e in fe])
        return got[0]

    mk = one(semconv.EV_FILE_MKDIR, **{semconv.FILE_PATH: f"{w}/d"})
    assert mk.attrs[semconv.FILE_MODE] == "0750" and mk.syscall in ("mkdir", "mkdirat")
    ch = one(semconv.EV_FILE_CHMOD, **{semconv.FILE_PATH: f"{w}/f"})
    assert ch.attrs[semconv.FILE_MODE] == "0600"
    assert ch.syscall in ("chmod", "fchmodat", "fchmodat2")
    co = one(semconv.EV_FILE_CHOWN, **{semconv.FILE_PATH: f"{w}/f"})
    assert co.attrs[semconv.FILE_OWNER_ID] == 65534 and co.attrs[semconv.FILE_GROUP_ID] == -1
    rn = one(semconv.EV_FILE_RENAME, **{semconv.FILE_PATH: f"{w}/f"})
    assert rn.attrs[semconv.FILE_TARGET_PATH] == f"{w}/g"
    assert rn.syscall in ("rename", "renameat", "renameat2")
    ln = one(semconv.EV_FILE_LINK, **{semconv.FILE_PATH: f"{w}/g"})
    assert ln.attrs[semconv.FILE_TARGET_PATH] == f"{w}/h"
    sl = one(semconv.EV_FILE_SYMLINK, **{semconv.FILE_PATH: f"{w}/s"})
    assert sl.attrs[semconv.FILE_TARGET_PATH] == "g"
    assert sl.attrs[semconv.FILE_SYMLINK_TARGET] == "g"
    tr = one(semconv.EV_FILE_TRUNCATE, **{semconv.SYSCALL_NAME: "truncate"})
    assert tr.attrs[semconv.FILE_PATH] == f"{w}/g"
    ftr = one(semconv.EV_FILE_TRUNCATE, **{semconv.SYSCALL_NAME: "ftruncate"})
    assert ftr.attrs[semconv.FILE_PATH] == f"{w}/g"
    assert isinstance(ftr.attrs[semconv.FILE_FD], int)
    fch = one(semconv.EV_FILE_CHMOD, **{semconv.SYSCALL_NAME: "fchmod"})
    assert fch.attrs[semconv.FILE_MODE] == "0644" and fch.attrs[semconv.FILE_PATH] == f"{w}/g"
    fco = one(semconv.EV_FILE_CHOWN, **{semconv.SYSCALL_NAME: "fchown"})
    assert fco.attrs[semconv.FILE_GROUP_ID] == 65534 and fco.attrs[semconv.FILE_OWNER_ID] == -1
    unl = one(semconv.EV_FILE_UNLINK, **{semconv.FILE_PATH: f"{w}/h"})
    assert unl.ret == 0
    rm = one(semconv.EV_FILE_UNLINK, **{semconv.FILE_PATH: f"{w}/d"})
    assert rm.syscall in ("rmdir", "unlinkat")
    assert rm.attrs[semconv.FILE_OPEN_FLAGS] == "AT_REMOVEDIR"
    nope = one(semconv.EV_FILE_UNLINK, **{semconv.FILE_PATH: f"{w}/nope"})
    assert nope.attrs[semconv.ERROR_TYPE] == "ENOENT" and nope.ret == -2


def test_a_reused_pid_is_not_taken_for_a_repeat_of_the_old_process(
        run_in_container: RunInContainer, workdir: Path) -> None:
    """The kernel counts an open identical to one the same process sent within the window
    instead of sending it. Two children of one container get the same pid one after the
    other (through ns_last_pid) and open the same file the same way: same pid, comm, ids and
    cgroup, only the fork that made them differs (og_gen). The second is a new process, so its
    open is sent as its own record, never folded into the first one's repeat count."""
    target = free_pid_ahead()
    code = reuse_script(f'''
        os.close(os.open("{workdir}/shared", os.O_WRONLY | os.O_CREAT, 0o600))
    ''')
    run = run_in_container([PY, "-c", code, str(target), "2"], timeout_s=15.0)
    assert run.proc.stdout.decode().split() == [str(target)] * 2, run.proc.stderr.decode()
    events = run.events
    opens = [(e.pid, e.attrs.get(semconv.FILE_REPEAT_COUNT))
             for e in _file_events(named(events, semconv.EV_FILE_OPEN), target, str(workdir))]
    assert opens == [(target, None), (target, None)], opens
