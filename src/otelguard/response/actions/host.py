"""What the node actions read and write on the host: /proc, the cgroup trees, netns, nftables.

Paths come from :class:`Host` so a test or a containerised agent (host /proc and /sys mounted
elsewhere) can point them somewhere else. The container's cgroup is found by name, the way the
kubelet's runtimes name it (``cri-containerd-<id>.scope``, ``crio-<id>.scope``,
``docker-<id>.scope``, ``<pod slice>:cri-containerd:<id>`` or a bare ``<id>`` directory); a walk
of the kubepods subtree costs about 1 ms per 1000 cgroups.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from otelguard.response.actions.base import ActionError


@dataclass(frozen=True)
class Host:
    """Where the host's kernel interfaces are mounted."""

    proc: Path = Path("/proc")
    # cgroup v2: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a pure v2 one
    cgroup2: Optional[Path] = None
    freezer_v1: Path = Path("/sys/fs/cgroup/freezer")

    def cgroup2_root(self) -> Optional[Path]:
        """The cgroup2 mount from /proc/self/mounts (None when the host has none)."""
        if self.cgroup2 is not None:
            return self.cgroup2
        try:
            mounts = (self.proc / "self" / "mounts").read_text().splitlines()
        except OSError:
            return None
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
        return None


def _names_container(name: str, container_id: str) -> bool:
    if name == container_id:
        return True
    stem = name[:-len(".scope")] if name.endswith(".scope") else name
    return stem.endswith(("-" + container_id, ":" + container_id))


def find_cgroup(root: Path, container_id: str) -> Optional[Path]:
    """The directory under ``root`` named for ``container_id`` (kubepods subtrees first, then
    the rest); None when there is none."""
    if not container_id or "/" in container_id or not root.is_dir():
        return None
    tops = sorted(root.iterdir(), key=lambda p: not p.name.startswith("kubepods"))
    for top in tops:
        if not top.is_dir():
            continue
        if _names_container(top.name, container_id):
            return top
        for dirpath, dirnames, _ in os.walk(top):
            for d in dirnames:
                if _names_container(d, container_id):
                    return Path(dirpath) / d
    return None


def container_cgroup(host: Host, container_id: str) -> Optional[Path]:
    """The container's cgroup on the v2 hierarchy, else the v1 freezer's; None when this
    process does not see it (another node's container, or not on the host)."""
    root = host.cgroup2_root()
    found = find_cgroup(root, container_id) if root else None
    return found if found is not None else find_cgroup(host.freezer_v1, container_id)


def cgroup_pids(path: Path) -> list[int]:
    """Every pid in the cgroup ``path`` and its descendants (v1 and v2 both have cgroup.procs)."""
    pids: list[int] = []
    for dirpath, _, _ in os.walk(path):
        try:
            pids.extend(int(x) for x in (Path(dirpath) / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    return pids


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat a kill is checked against."""

    pid: int
    comm: str
    state: str
    start_ticks: int   # field 22: clock ticks after boot; with the pid it names one process


def proc_stat(host: Host, pid: int) -> Optional[ProcStat]:
    """/proc/PID/stat parsed (comm may hold spaces and parentheses: split at the last ')');
    None when the process is gone."""
    try:
        raw = (host.proc / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        raise ActionError(f"cannot read /proc/{pid}/stat: {exc}") from exc
    head, _, rest = raw.rpartition(")")
    fields = rest.split()
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19]
    return ProcStat(pid, head.partition("(")[2], fields[0], int(fields[19]))


# How far /proc/PID/stat's start time (10 ms ticks) may be from the record's
# process.creation.time (the sensor's fork timestamp, or the same ticks read at its start) for
# both to name one process: a pid is reused only after the kernel's pid counter wrapped.
CREATION_TIME_TOLERANCE_NS = 1_000_000_000


def ticks_to_wall_ns(ticks: int) -> int:
    """/proc/PID/stat starttime (clock ticks after boot, CLOCK_BOOTTIME) as Unix ns, as the
    sensor converts it (otelguard.ebpf.clock, which response may not import)."""
    import time
    boot_wall = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(
        time.CLOCK_BOOTTIME)
    return boot_wall + ticks * 1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100)


def parse_creation_time(value: str) -> int:
    """process.creation.time (``2026-11-23T12:55:13.123456Z``) as Unix ns."""
    from datetime import datetime, timezone
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ActionError(f"process creation time {value!r} is not ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def start_time_matches(st: "ProcStat", creation_time: str) -> bool:
    """Whether the process ``st`` started at the record's ``creation_time``."""
    return abs(ticks_to_wall_ns(st.start_ticks) - parse_creation_time(creation_time)) \
        <= CREATION_TIME_TOLERANCE_NS


def proc_cmdline(host: Host, pid: int) -> str:
    try:
        raw = (host.proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)


def netns_inode(host: Host, pid: int) -> Optional[int]:
    try:
        return os.stat(host.proc / str(pid) / "ns" / "net").st_ino
    except OSError:
        return None


class NotOnThisHost(ActionError):
    """The container is not visible here: another node's, or this process is not on the host
    (a cluster's processor, which plans node actions it leaves to the node's agent)."""


def container_netns(host: Host, container_id: str) -> tuple[int, int]:
    """(a pid in the container, the inode of its network namespace), via the container's cgroup."""
    root = host.cgroup2_root()
    path = find_cgroup(root, container_id) if root else None
    if path is None:
        raise NotOnThisHost(f"no cgroup for container {container_id} on this node")
    for pid in cgroup_pids(path):
        ino = netns_inode(host, pid)
        if ino is not None:
            return pid, ino
    raise ActionError(f"container {container_id} has no process left: no network namespace")


def nft_binary() -> str:
    found = shutil.which("nft")
    if not found:
        raise ActionError("nft is not installed (Debian package nftables)")
    return found


def nft_in_netns(host: Host, pid: int, inode: int, args: list[str],
                 script: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``nft ARGS`` (``-f -`` reads ``script``) inside the network namespace of ``pid``,
    which must still be ``inode``: the namespace is opened once, checked, and the same open file
    is what nsenter enters, so a pid reused meanwhile cannot redirect the change."""
    fd = os.open(host.proc / str(pid) / "ns" / "net", os.O_RDONLY)
    try:
        if os.fstat(fd).st_ino != inode:
            raise ActionError(f"pid {pid} is no longer in network namespace {inode}")
        return subprocess.run(
            ["nsenter", f"--net=/proc/self/fd/{fd}", nft_binary(), *args],
            input=script, pass_fds=(fd,), capture_output=True, text=True, timeout=10,
            check=False)
    finally:
        os.close(fd)

