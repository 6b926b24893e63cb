"""Process probe on the real kernel: exec/fork/exit records from processes in real cgroups."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from otelguard import semconv
from otelguard.ebpf.events import Event
from tests.ebpf.capture import named
from tests.support.sensor import RunInContainer
from tests.ebpf.containers import RUNTIMES

pytestmark = pytest.mark.kernel

SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
TRUE = os.path.realpath(shutil.which("true") or "/bin/true")
CAT = os.path.realpath(shutil.which("cat") or "/bin/cat")
PY = os.path.realpath(sys.executable)


def _own_comm() -> str:
    with open("/proc/self/comm") as f:
        return f.read().strip()


def _one(events: list[Event], name: str, **match: object) -> Event:
    found = [e for e in named(events, name)
             if all(e.attrs.get(k) == v or getattr(e, k, object()) == v for k, v in match.items())]
    assert len(found) == 1, (name, match, [(e.name, e.pid, e.body) for e in events])
    return found[0]


def test_exec_record_has_argv_identity_and_user(run_in_container: RunInContainer) -> None:
    # The child lives a moment: its parent pid comes from /proc at first sight (our own fork of
    # it is hidden by the self filter), and decoding is asynchronous.
    nap = "import time; time.sleep(0.5)"
    t0 = time.time_ns()
    run = run_in_container([PY, "-c", nap, "alpha", "--password", "hunter2", "TOKEN=abc"])
    t1 = time.time_ns()
    c = run.container
    ev = _one(run.events, semconv.EV_PROCESS_EXEC, pid=run.pid)
    a = ev.attrs
    assert ev.ret == 0 and ev.syscall == "execve"
    assert a[semconv.SYSCALL_NAME] == "execve" and a[semconv.SYSCALL_RET] == 0
    assert semconv.ERROR_TYPE not in a
    assert a[semconv.PROCESS_EXECUTABLE_PATH] == PY
    assert a[semconv.PROCESS_EXECUTABLE_NAME] == os.path.basename(PY)
    assert a[semconv.PROCESS_COMMAND_ARGS] == [PY, "-c", nap, "alpha", "--password", "***",
                                               "TOKEN=***"]
    assert a[semconv.PROCESS_COMMAND_LINE] == f"{PY} -c {nap} alpha --password *** TOKEN=***"
    assert a[semconv.PROCESS_ARGS_COUNT] == 7
    assert a[semconv.PROCESS_PID] == run.pid
    assert a[semconv.PROCESS_PARENT_PID] == os.getpid()
    assert a[semconv.PROCESS_USER_ID] == 0 and a[semconv.PROCESS_USER_NAME] == "root"
    assert a[semconv.PROCESS_PARENT_EXECUTABLE_PATH] == PY
    # ancestors are named by their comm (the name exec'ed), as Falco's proc.aname
    assert a[semconv.PROCESS_ANCESTORS][0] == _own_comm()  # type: ignore[index]
    assert a[semconv.PROCESS_ANCESTOR_PIDS][0] == os.getpid()  # type: ignore[index]
    assert "CAP_SYS_ADMIN" in a.get(semconv.PROCESS_CAP_EFFECTIVE, [])  # type: ignore[operator]
    assert a[semconv.PROCESS_WORKING_DIRECTORY] == os.getcwd()
    assert ev.container_id == c.container_id and ev.pod_uid == c.pod_uid
    assert ev.cgroup_path == c.rel_path
    assert t0 <= ev.time_ns <= t1
    # first sight reads /proc starttime: clock ticks (10 ms), so allow that much before t0
    assert ev.process_start_ns and t0 - 50_000_000 <= ev.process_start_ns <= ev.time_ns
    assert str(a[semconv.PROCESS_CREATION_TIME]).endswith("Z")
    assert a[semconv.PROCESS_EXE_FROM_MEMFD] is False and a[semconv.PROCESS_EXE_DELETED] is False
    assert isinstance(a[semconv.LOG_RECORD_UID], str) and a[semconv.LOG_RECORD_UID]
    # fork of the child by us happened before it entered the container: no fork event inside
    ex = _one(run.events, semconv.EV_PROCESS_EXIT, pid=run.pid)
    assert ex.attrs[semconv.PROCESS_EXIT_CODE] == 0
    assert ex.attrs[semconv.PROCESS_EXECUTABLE_PATH] == PY


def test_exec_as_other_user(run_in_container: RunInContainer) -> None:
    run = run_in_container([TRUE], user=65534, group=65534)
    ev = _one(run.events, semconv.EV_PROCESS_EXEC, pid=run.pid)
    assert ev.attrs[semconv.PROCESS_USER_ID] == 65534
    assert ev.attrs[semconv.PROCESS_REAL_USER_ID] == 65534
    assert ev.attrs[semconv.PROCESS_GROUP_ID] == 65534
    assert ev.attrs[semconv.PROCESS_USER_NAME] == "nobody"


def test_failed_exec_is_an_event_with_errno(run_in_container: RunInContainer) -> None:
    code = "import os\ntry:\n os.execv('/nonexistent/og-missing', ['x'])\nexcept OSError:\n pass"
    run = run_in_container([PY, "-c", code])
    failed = [e for e in named(run.events, semconv.EV_PROCESS_EXEC) if e.ret < 0]
    assert len(failed) == 1, [e.body for e in run.events]
    ev = failed[0]
    assert ev.pid == run.pid and ev.ret == -2
    assert ev.attrs[semconv.ERROR_TYPE] == "ENOENT"
    assert ev.attrs[semconv.FILE_PATH] == "/nonexistent/og-missing"
    # the caller is still python
    assert ev.attrs[semconv.PROCESS_EXECUTABLE_PATH] == PY
    assert "failed" in ev.body


def test_fork_exit_code_and_ancestry(run_in_container: RunInContainer) -> None:
    run = run_in_container([SH, "-c", f"{SH} -c '{CAT} /etc/hostname; exit 4'; exit 7"])
    assert run.proc.returncode == 7
    outer = run.pid
    forks = named(run.events, semconv.EV_PROCESS_FORK)
    inner_fork = _one(forks, semconv.EV_PROCESS_FORK, **{semconv.PROCESS_PARENT_PID: outer})
    inner = inner_fork.pid
    assert inner_fork.attrs[semconv.PROCESS_PID] == inner
    cat_fork = _one(forks, semconv.EV_PROCESS_FORK, **{semconv.PROCESS_PARENT_PID: inner})
    cat = _one(run.events, semconv.EV_PROCESS_EXEC, pid=cat_fork.pid)
    assert cat.attrs[semconv.PROCESS_EXECUTABLE_PATH] == CAT
    assert cat.attrs[semconv.PROCESS_COMMAND_ARGS] == [CAT, "/etc/hostname"]
    assert cat.attrs[semconv.PROCESS_PARENT_PID] == inner
    sh_name = os.path.basename(SH)
    assert cat.attrs[semconv.PROCESS_ANCESTORS][:3] == [  # type: ignore[index]
        sh_name, sh_name, _own_comm()]
    assert cat.attrs[semconv.PROCESS_ANCESTOR_PIDS][:3] == [  # type: ignore[index]
        inner, outer, os.getpid()]
    assert cat.attrs[semconv.PROCESS_PARENT_COMMAND_LINE] == f"{SH} -c {CAT} /etc/hostname; exit 4"
    # one trace: the cat joined the young shell's root
    outer_exec = _one(run.events, semconv.EV_PROCESS_EXEC, pid=outer)
    assert cat.root_pid == outer_exec.root_pid and cat.root_start_ns == outer_exec.root_start_ns
    codes = {e.pid: e.attrs.get(semconv.PROCESS_EXIT_CODE)
             for e in named(run.events, semconv.EV_PROCESS_EXIT)}
    assert codes == {outer: 7, inner: 4, cat.pid: 0}


def test_threads_are_not_forks(run_in_container: RunInContainer) -> None:
    code = ("import threading\n"
            "ts=[threading.Thread(target=lambda: None) for _ in range(5)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "import os\npid=os.fork()\nif pid == 0: os._exit(0)\nos.waitpid(pid, 0)")
    run = run_in_container([PY, "-c", code])
    forks = [e for e in named(run.events, semconv.EV_PROCESS_FORK)
             if e.attrs[semconv.PROCESS_PARENT_PID] == run.pid]
    assert len(forks) == 1  # the os.fork(), none of the 5 threads
    assert forks[0].pid != run.pid


def test_killed_process_exit_has_no_code(run_in_container: RunInContainer) -> None:
    run = run_in_container([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    ex = _one(run.events, semconv.EV_PROCESS_EXIT, pid=run.pid)
    assert semconv.PROCESS_EXIT_CODE not in ex.attrs
    assert ex.syscall == "exit"


def test_argv_is_bounded(run_in_container: RunInContainer) -> None:
    args = [TRUE] + [f"a{i}-" + "x" * 200 for i in range(30)]
    run = run_in_container(args)
    ev = _one(run.events, semconv.EV_PROCESS_EXEC, pid=run.pid)
    got = ev.attrs[semconv.PROCESS_COMMAND_ARGS]
    assert isinstance(got, list) and len(got) == 20
    assert got[1] == args[1][:127]  # 128-byte slots, NUL-terminated
    assert ev.attrs[semconv.PROCESS_ARGS_COUNT] == 20


def test_exec_env_carries_only_allowlisted_names_redacted(
        run_in_container: RunInContainer) -> None:
    # /bin/true exits at once: the variables come from the exec's envp in the kernel, not /proc
    env = {"PATH": "/usr/bin:/bin", "OG_PRIVATE_VALUE": "never-captured-7f3a",
           "LD_PRELOAD": "/nonexistent/og-preload.so",
           "http_proxy": "http://alice:s3cret-pw@proxy.example:3128",
           "LD_PRELOADX": "not-this-one", "GLIBC_TUNABLES": "glibc.malloc.check=0"}
    run = run_in_container([TRUE], env=env)
    ev = _one(run.events, semconv.EV_PROCESS_EXEC, pid=run.pid)
    assert sorted(ev.attrs[semconv.PROCESS_ENV]) == [  # type: ignore[arg-type]
        "GLIBC_TUNABLES=glibc.malloc.check=0", "LD_PRELOAD=/nonexistent/og-preload.so",
        "http_proxy=http://alice:***@proxy.example:3128"]
    assert semconv.PROCESS_ENV_TRUNCATED not in ev.attrs
    for e in run.events:  # no other variable's value, and no password, anywhere
        text = repr(e.attrs) + e.body
        assert "never-captured-7f3a" not in text and "s3cret-pw" not in text
        assert "not-this-one" not in text
    # a shell without those variables: its children's records carry none
    plain = run_in_container([SH, "-c", f"{TRUE}"], env={"PATH": "/usr/bin:/bin"})
    assert all(semconv.PROCESS_ENV not in e.attrs for e in plain.events), [
        e.attrs.get(semconv.PROCESS_ENV) for e in plain.events]


def test_exec_env_scan_is_bounded(run_in_container: RunInContainer) -> None:
    # an envp longer than the kernel scans (256 entries) is flagged on the exec record
    env = {f"OG_FILL_{i}": "x" for i in range(300)}
    env["LD_PRELOAD"] = "/nonexistent/og-late.so"
    run = run_in_container([TRUE], env=env)
    ev = _one(run.events, semconv.EV_PROCESS_EXEC, pid=run.pid)
    assert ev.attrs[semconv.PROCESS_ENV_TRUNCATED] is True
    assert semconv.PROCESS_ENV not in ev.attrs


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_container_identity_for_each_layout(run_in_container: RunInContainer, runtime: str,
                                            driver: str) -> None:
    run = run_in_container([TRUE], container_kwargs={"runtime": runtime, "driver": driver})
    ev = _one(run.events, semconv.EV_PROCESS_EXEC, pid=run.pid)
    assert ev.container_id == run.container.container_id
    assert ev.pod_uid == run.container.pod_uid
    assert ev.cgroup_path == run.container.rel_path
    assert ev.attrs[semconv.PROCESS_LINUX_CGROUP] == run.container.rel_path


def test_own_process_is_filtered_in_kernel(sensor: object) -> None:
    from otelguard.ebpf.sensor import Sensor
    from tests.ebpf.capture import collect, flush
    from tests.ebpf.containers import CGROUP2_ROOT, container

    assert isinstance(sensor, Sensor)
    flush(sensor)
    home = Path(f"{CGROUP2_ROOT}{Path('/proc/self/cgroup').read_text().split('::', 1)[1].strip()}")
    with container() as c:
        c.enter()  # this very process, in scope: only the self filter can hide it now
        try:
            for _ in range(50):
                with open("/etc/hostname"):
                    pass
                fd = os.open("/tmp/og-self-filter", os.O_WRONLY | os.O_CREAT, 0o600)
                os.close(fd)
            os.unlink("/tmp/og-self-filter")
            probe = c.run([TRUE])  # a child in the same cgroup is seen: the scope is right
        finally:
            (home / "cgroup.procs").write_text(str(os.getpid()))
        seen = collect(sensor, lambda e: e.container_id == c.container_id, timeout_s=3.0,
                       until=lambda evs: any(e.name == semconv.EV_PROCESS_EXIT for e in evs))
    assert probe.returncode == 0
    assert [e for e in seen if e.pid == os.getpid()] == []
    assert any(e.name == semconv.EV_PROCESS_EXEC and e.pid != os.getpid() for e in seen)


def test_exec_from_memfd_is_flagged(run_in_container: RunInContainer) -> None:
    sleep = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
    code = (f"import os\nfd = os.memfd_create('og-payload', 0)\n"
            f"os.write(fd, open({sleep!r}, 'rb').read())\n"
            f"os.execv(f'/proc/self/fd/{{fd}}', ['payload', '1'])")
    run = run_in_container([PY, "-c", code], timeout_s=15)
    execs = [e for e in named(run.events, semconv.EV_PROCESS_EXEC) if e.pid == run.pid]
    assert [e.ret for e in execs] == [0, 0], [e.body for e in execs]
    payload = execs[1]
    assert payload.attrs[semconv.PROCESS_EXE_FROM_MEMFD] is True
    assert str(payload.attrs[semconv.PROCESS_EXECUTABLE_PATH]).startswith("/memfd:og-payload")
    assert payload.attrs[semconv.PROCESS_COMMAND_ARGS] == ["payload", "1"]
    assert execs[0].attrs[semconv.PROCESS_EXE_FROM_MEMFD] is False
