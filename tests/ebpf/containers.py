"""Real "containers" for kernel tests: kubepods-shaped cgroup v2 directories and processes in them.

There is no container runtime here, but otelguard only sees a container through its cgroup: the
kernel reports ``bpf_get_current_cgroup_id()`` (the inode of the cgroup directory) and
``/proc/<pid>/cgroup`` shows the path. So a test makes the cgroup directory a kubelet would
make, moves a child process into it before ``exec`` (``preexec_fn`` writes the child's pid into
``cgroup.procs``), and the sensor sees exactly what it would see for a pod's container.

Layouts (``driver`` x ``runtime``)::

    systemd:  /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/<scope>
              <scope> = cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
              (qos "guaranteed" has no qos slice: /kubepods.slice/kubepods-pod<uid>.slice/<scope>)
    cgroupfs: /kubepods/<qos>/pod<uid>/<id>   (guaranteed: /kubepods/pod<uid>/<id>)

Usage::

    with container() as c:
        proc = c.run(["/bin/true"])          # runs inside the container's cgroup
        c.container_id, c.pod_uid, c.cgroup_id, c.rel_path

Shared parents (``kubepods.slice``, the qos slice) are created if missing and never removed, so
tests running in parallel never race on them; the pod and container directories are unique and
removed on exit after every process left in them is killed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

CGROUP2_ROOT = Path("/sys/fs/cgroup/unified")

RUNTIMES = ("containerd", "crio", "docker")
DRIVERS = ("systemd", "cgroupfs")
QOS_CLASSES = ("besteffort", "burstable", "guaranteed")

_SCOPE_PREFIX = {"containerd": "cri-containerd-", "crio": "crio-", "docker": "docker-"}


def container_rel_path(
    pod_uid: str, container_id: str, runtime: str = "containerd", driver: str = "systemd",
    qos: str = "besteffort",
) -> str:
    """The cgroup path (as in ``/proc/<pid>/cgroup``, leading ``/``) a kubelet would create."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if driver not in DRIVERS:
        raise ValueError(f"driver must be one of {DRIVERS}, not {driver!r}")
    if qos not in QOS_CLASSES:
        raise ValueError(f"qos must be one of {QOS_CLASSES}, not {qos!r}")
    if driver == "systemd":
        uid_ = pod_uid.replace("-", "_")
        scope = f"{_SCOPE_PREFIX[runtime]}{container_id}.scope"
        if qos == "guaranteed":
            return f"/kubepods.slice/kubepods-pod{uid_}.slice/{scope}"
        return f"/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid_}.slice/{scope}"
    if qos == "guaranteed":
        return f"/kubepods/pod{pod_uid}/{container_id}"
    return f"/kubepods/{qos}/pod{pod_uid}/{container_id}"


def cgroup_procs(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _kill_and_remove(path: Path, timeout_s: float = 5.0) -> None:
    """Kill what is left in ``path`` (ours only: the directory is unique to this test) and rmdir."""
    if not path.exists():
        return
    kill_file = path / "cgroup.kill"
    deadline = time.monotonic() + timeout_s
    while True:
        pids = cgroup_procs(path)
        if not pids:
            break
        if kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        else:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass(frozen=True)
class Container:
    """A kubepods-shaped cgroup with helpers to run processes inside it."""

    pod_uid: str
    container_id: str
    runtime: str
    driver: str
    qos: str
    rel_path: str  # "/kubepods.slice/.../cri-containerd-<id>.scope"

    @property
    def path(self) -> Path:
        return CGROUP2_ROOT / self.rel_path.lstrip("/")

    @property
    def cgroup_id(self) -> int:
        """What ``bpf_get_current_cgroup_id()`` returns for processes inside it."""
        return os.stat(self.path).st_ino

    def enter(self, pid: int = 0) -> None:
        """Move ``pid`` (0 = the calling process) into this cgroup."""
        (self.path / "cgroup.procs").write_text(str(pid or os.getpid()))

    def pids(self) -> list[int]:
        return cgroup_procs(self.path)

    def _preexec(self, uid: Optional[int], gid: Optional[int], root: Optional[str] = None) -> None:
        # Runs in the forked child before exec: the exec itself already happens in the container.
        # Credentials drop here, after the write (Popen's user=/group= would apply them before
        # preexec_fn, and an unprivileged child cannot write cgroup.procs).
        with open(self.path / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
        if root is not None:  # the container's own root filesystem (/proc/<pid>/root)
            os.chroot(root)
            os.chdir("/")
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the container (kwargs go to Popen: cwd, stdin...; ``user`` and
        ``group`` take numeric ids and are applied after entering the cgroup; ``root`` is a
        directory the process is chrooted into first, its root filesystem)."""
        if "preexec_fn" in kwargs:
            raise ValueError("preexec_fn is used to enter the cgroup")
        uid, gid = kwargs.pop("user", None), kwargs.pop("group", None)
        root = kwargs.pop("root", None)
        return subprocess.Popen(list(argv), preexec_fn=lambda: self._preexec(uid, gid, root),
                                **kwargs)

    def run(
        self, argv: Sequence[str], timeout: float = 30.0, check: bool = False, **kwargs: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` inside the container to completion (stdout/stderr captured)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        with self.popen(argv, **kwargs) as proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            rc = proc.poll()
            assert rc is not None
        result = subprocess.CompletedProcess(list(argv), rc, out, err)
        if check:
            result.check_returncode()
        return result


def new_pod_uid() -> str:
    return str(uuid.uuid4())


def new_container_id() -> str:
    return secrets.token_hex(32)


@contextlib.contextmanager
def cgroup_dir(rel_path: str) -> Iterator[Path]:
    """Any cgroup directory (e.g. an unknown, non-kubepods layout); parents created as needed,
    only the directories this call created are removed (deepest first)."""
    path = CGROUP2_ROOT / rel_path.lstrip("/")
    created: list[Path] = []
    for depth in range(1, len(path.relative_to(CGROUP2_ROOT).parts) + 1):
        part = CGROUP2_ROOT.joinpath(*path.relative_to(CGROUP2_ROOT).parts[:depth])
        try:
            part.mkdir()
            created.append(part)
        except FileExistsError:
            pass
    try:
        yield path
    finally:
        for p in reversed(created):
            _kill_and_remove(p)


_SHARED_PARENT_NAMES = {"kubepods.slice", "kubepods", "besteffort", "burstable",
                        "kubepods-besteffort.slice", "kubepods-burstable.slice"}


@contextlib.contextmanager
def container(
    pod_uid: Optional[str] = None,
    container_id: Optional[str] = None,
    runtime: str = "containerd",
    driver: str = "systemd",
    qos: str = "besteffort",
) -> Iterator[Container]:
    """A fresh container cgroup (random pod uid / 64-hex id unless given), removed on exit."""
    pod_uid = pod_uid or new_pod_uid()
    container_id = container_id or new_container_id()
    rel = container_rel_path(pod_uid, container_id, runtime, driver, qos)
    c = Container(pod_uid, container_id, runtime, driver, qos, rel)
    parts = rel.strip("/").split("/")
    created: list[Path] = []
    for depth in range(1, len(parts) + 1):
        p = CGROUP2_ROOT.joinpath(*parts[:depth])
        try:
            p.mkdir()
            if parts[depth - 1] not in _SHARED_PARENT_NAMES:
                created.append(p)
        except FileExistsError:
            pass
    try:
        yield c
    finally:
        for p in reversed(created):
            _kill_and_remove(p)
