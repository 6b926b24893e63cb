"""The agent's least-privilege capability set (docs/security.md#agent-capabilities) on the real
kernel. The set is read from deploy/agent-daemonset.yaml, so the manifest, the document and this
test cannot drift apart: started as root with exactly that set (``setpriv`` empties the bounding
set and adds it back, as a container runtime does for ``drop: [ALL]`` + ``add``), the agent
attaches every probe and reports a fake container's exec with what only the full set can read:
another user's ``/proc/<pid>/exe`` and ``cwd`` links (SYS_PTRACE) and its ``fd`` links
(SYS_PTRACE + DAC_READ_SEARCH). A cheap check without BPF shows each of those two is needed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from otelguard import semconv as sc
from otelguard.ebpf.proctable import cap_names
from otelguard.otlp.messages import attrs_dict, get_attr, iter_log_records
from tests.ebpf.containers import Container, container
from tests.support.polling import wait_until
from tests.transport.receivers import GrpcReceiver, free_port

ROOT = Path(__file__).resolve().parents[2]
OTELGUARD = Path(sys.executable).parent / "otelguard"
NOBODY = 65534
# what the waiting process in the container does: open a file relative to a directory fd (the
# agent resolves it through /proc/<pid>/fd/<dirfd>), then wait until the test closes its stdin
_CHILD = ("import os, sys; d = os.open(sys.argv[1], os.O_RDONLY); "
          "os.close(os.open('made.txt', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d)); "
          "sys.stdin.read()")


def manifest_capabilities() -> list[str]:
    """The capabilities deploy/agent-daemonset.yaml adds (names as Kubernetes spells them)."""
    (ds,) = [d for d in yaml.safe_load_all((ROOT / "deploy" / "agent-daemonset.yaml").read_text())
             if d and d["kind"] == "DaemonSet"]
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    ctx = agent["securityContext"]
    assert ctx["privileged"] is False and ctx["capabilities"]["drop"] == ["ALL"]
    return list(ctx["capabilities"]["add"])


def documented_capabilities() -> list[str]:
    """The set docs/security.md states on its ``Agent capability set:`` line."""
    text = (ROOT / "docs" / "security.md").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("**Agent capability set:**")]
    return re.findall(r"`CAP_([A-Z_]+)`", line)


def _setpriv(caps: list[str]) -> list[str]:
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in caps)])
    return ["setpriv", "--inh-caps=-all", f"--bounding-set={bounding}", "--"]


def _status_caps(pid: int) -> dict[str, set[str]]:
    """CapEff, CapPrm and CapBnd of ``pid`` as sets of names without the ``CAP_`` prefix."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("CapEff", "CapPrm", "CapBnd"):
            out[key] = {name.removeprefix("CAP_") for name in cap_names(int(value, 16))}
    return out


def test_the_document_states_the_manifests_set() -> None:
    assert documented_capabilities() == manifest_capabilities()


@contextlib.contextmanager
def _nobody_waiting(c: Container, rw: Path) -> Iterator["subprocess.Popen[bytes]"]:
    """A process of another user (nobody) in the fake container ``c``, cwd and a dir fd in
    ``rw``, started through the symlink ``rw/py`` (so only the exe link names the real binary);
    it waits on stdin, which is closed on exit."""
    proc = c.popen([str(rw / "py"), "-c", _CHILD, str(rw)], cwd=str(rw), user=NOBODY,
                   group=NOBODY, stdin=subprocess.PIPE)
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def rw() -> Iterator[Path]:
    """A directory any user may reach and write (pytest's tmp_path is under a 0700 directory),
    with ``py``: a symlink to this interpreter."""
    with tempfile.TemporaryDirectory(prefix="otelguard-caps-", dir="/tmp") as name:
        out = Path(name)
        out.chmod(0o777)
        (out / "py").symlink_to(os.path.realpath(sys.executable))
        yield out


@pytest.mark.kernel
def test_each_proc_capability_is_needed(rw: Path) -> None:
    """Without SYS_PTRACE another user's exe link is refused; without DAC_READ_SEARCH its fd
    links are; with the whole set both read. No BPF here: a plain reader under setpriv."""
    caps = manifest_capabilities()
    with container() as c, _nobody_waiting(c, rw) as proc:
        assert wait_until(lambda: (rw / "made.txt").exists(), 30), "the process did not run"
        _check_reads(caps, proc.pid)


def _check_reads(caps: list[str], pid: int) -> None:
    reader = ("import os, sys\n"
              "for p in sys.argv[1:]:\n"
              "    try: os.readlink(p); print('ok')\n"
              "    except OSError as e: print(e.errno)\n")
    paths = [f"/proc/{pid}/exe", f"/proc/{pid}/fd/0"]

    def read_as(subset: list[str]) -> list[str]:
        res = subprocess.run([*_setpriv(subset), sys.executable, "-c", reader, *paths],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout.split()

    eacces = str(13)
    assert read_as(caps) == ["ok", "ok"]
    assert read_as([x for x in caps if x != "SYS_PTRACE"]) == [eacces, eacces]
    assert read_as([x for x in caps if x != "DAC_READ_SEARCH"]) == ["ok", eacces]


@pytest.mark.kernel
def test_agent_runs_with_exactly_the_documented_set(tmp_path: Path, rw: Path) -> None:
    caps = manifest_capabilities()
    config = tmp_path / "agent.yaml"
    config.write_text("sensor:\n  cgroup_scope: [/kubepods.slice, /kubepods]\n")
    receiver = GrpcReceiver().start()
    log = tmp_path / "agent.log"
    with open(log, "wb") as err:
        agent = subprocess.Popen(
            [*_setpriv(caps), str(OTELGUARD), "agent", "--config", str(config),
             "--otlp-endpoint", receiver.endpoint, "--otlp-insecure", "--spool-dir", str(tmp_path / "spool"),
             "--metrics", f"127.0.0.1:{free_port()}", "--duration", "600"],
            stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_until(lambda: "sensor started" in log.read_text(errors="replace")
                          or agent.poll() is not None, 240), "the agent never attached"
        text = log.read_text(errors="replace")
        assert agent.poll() is None, text[-3000:]
        # setpriv exec'd the agent in place: it holds exactly the set, nothing more
        want = set(caps)
        assert _status_caps(agent.pid) == {"CapEff": want, "CapPrm": want, "CapBnd": want}
        started = next(ln for ln in text.splitlines() if "sensor started" in ln)
        assert "failed={}" in started and "skipped={}" in started, started
        for probe in ("process", "file", "network", "privilege", "evasion"):
            assert f"'{probe}'" in started, started

        with container() as c, _nobody_waiting(c, rw) as probe:
            def records() -> list[tuple[str, dict[str, Any]]]:
                return [(rec.event_name, attrs_dict(rec.attributes))
                        for req in list(receiver.logs) for rl, _, rec in iter_log_records(req)
                        if get_attr(rl.resource.attributes, sc.CONTAINER_ID) == c.container_id]

            def seen() -> bool:
                names = [(e, a.get(sc.PROCESS_PID)) for e, a in records()]
                return ((sc.EV_PROCESS_EXEC, probe.pid) in names
                        and (sc.EV_FILE_OPEN, probe.pid) in names)

            assert wait_until(seen, 60), f"no exec/open from the container: {records()[:5]}"
        execs = [a for e, a in records() if e == sc.EV_PROCESS_EXEC
                 and a.get(sc.PROCESS_PID) == probe.pid]
        opens = [a for e, a in records() if e == sc.EV_FILE_OPEN
                 and a.get(sc.PROCESS_PID) == probe.pid]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        receiver.stop()
    (exe,) = execs
    # read from /proc/<pid>/exe and cwd of a process of another user: SYS_PTRACE
    assert exe[sc.PROCESS_EXECUTABLE_PATH] == os.path.realpath(sys.executable), exe
    assert exe[sc.PROCESS_USER_ID] == NOBODY
    assert exe[sc.PROCESS_WORKING_DIRECTORY] == str(rw), exe
    # a path relative to a directory fd, resolved through /proc/<pid>/fd: + DAC_READ_SEARCH
    assert str(rw / "made.txt") in {a.get(sc.FILE_PATH) for a in opens}, opens
