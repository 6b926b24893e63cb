"""Container identity from cgroup v2: cgroup id -> cgroup path -> (container.id, k8s.pod.uid).

The kernel gives each record ``bpf_get_current_cgroup_id()``, the inode number of the process's
cgroup v2 directory. :class:`CgroupResolver` maps ids to paths with a bounded cache filled by
walking the cgroup2 mount once at start. On a miss it tries, in order: ``/proc/<pid>/cgroup``
of the acting process, checked against the inode (gone when the process already exited); the
id itself as a kernfs file handle (``open_by_handle_at`` on the cgroup2 mount, then the
descriptor's path: exact for any live cgroup, whoever is in it, needs CAP_DAC_READ_SEARCH);
and last a walk of the tree, rate limited. Without the handle, a cgroup made less than a
second after the last walk whose only process exited before its records were decoded read as
the host (seen as a test flake: a short-lived container's records lost their container id).
A cgroup the handle reports removed (ESTALE) is remembered as gone; ids are not reused. What
cannot be named resolves as the host here; the decode context marks such records unresolved
(neither container nor host, docs/architecture.md#kernel-facts) when a cgroup2 mount exists.
:func:`parse_container` reads the kubelet's naming, for both cgroup drivers and the three CRI
runtimes::

    systemd:  .../kubepods-<qos>-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
              (crio-<id>.scope, docker-<id>.scope; also <pod slice>:cri-containerd:<id>
              and prefixed slices such as kind's kubelet-kubepods-...-pod<uid>.slice)
    cgroupfs: .../kubepods/<qos>/pod<uid>/<id>
    plain Docker (no pod): /system.slice/docker-<id>.scope or /docker/<id>

Anything else (host services, user sessions, conmon scopes, unknown layouts) is the host: empty
ids, never an exception. Cost: a dict hit per event; a miss costs one small read, or an open
by handle and a readlink (a few µs), or, rarely, a walk of the cgroup tree (about 1 ms per
1000 cgroups).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CGROUP2_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")

_HEX64 = r"[0-9a-f]{64}"
_SCOPE = re.compile(rf"^(?P<rt>cri-containerd|crio|docker|cri-o|libpod)-(?P<id>{_HEX64})\.scope$")
# containerd's systemd-cgroup notation in one segment: <pod slice>:cri-containerd:<id>
_COLON = re.compile(rf"^(?P<pod>[^:]*):(?P<rt>cri-containerd|crio|docker):(?P<id>{_HEX64})$")
# kubepods-<qos>-pod<uid>.slice, also nested under a prefix (kind: kubelet-kubepods-...)
_POD_SLICE = re.compile(r"^(?:[a-z]+-)*kubepods(?:-[a-z]+)*-pod(?P<uid>[0-9a-f_]{36})\.slice$")
_POD_DIR = re.compile(r"^pod(?P<uid>[0-9a-f-]{36})$")
_BARE_ID = re.compile(rf"^{_HEX64}$")
_RUNTIME_NAMES = {"cri-containerd": "containerd", "crio": "cri-o", "cri-o": "cri-o",
                  "docker": "docker", "libpod": "podman"}


@dataclass(frozen=True, slots=True)
class ContainerIdentity:
    """What a cgroup path says about its container; all empty for the host."""

    container_id: str = ""
    pod_uid: str = ""
    runtime: str = ""

    @property
    def is_host(self) -> bool:
        return not self.container_id


HOST = ContainerIdentity()


def parse_container(path: str) -> ContainerIdentity:
    """Container and pod ids from a cgroup path (as in ``/proc/<pid>/cgroup``); the host when
    the path follows no known layout. Never raises."""
    if not path or path == "/":
        return HOST
    parts = [p for p in path.split("/") if p]
    pod_uid = ""
    in_kubepods = False
    for i, part in enumerate(parts):
        if part.startswith("kubepods"):
            in_kubepods = True
        m = _POD_SLICE.match(part)
        if m:
            pod_uid = m.group("uid").replace("_", "-")
            continue
        m = _POD_DIR.match(part)
        if m and in_kubepods:
            pod_uid = m.group("uid")
            continue
        m = _COLON.match(part)
        if m:
            pm = _POD_SLICE.match(m.group("pod"))
            if pm:
                pod_uid = pm.group("uid").replace("_", "-")
        m = _SCOPE.match(part) or m
        if m:
            # the container is the last container-shaped segment (nested runtimes)
            rest = ContainerIdentity(m.group("id"), pod_uid, _RUNTIME_NAMES[m.group("rt")])
            deeper = parse_container("/".join(parts[i + 1:])) if i + 1 < len(parts) else HOST
            return deeper if not deeper.is_host else rest
        if _BARE_ID.match(part) and (pod_uid or (i > 0 and parts[i - 1] == "docker")):
            runtime = "docker" if not pod_uid else ""
            return ContainerIdentity(part, pod_uid, runtime)
    return HOST


def cgroup2_mount() -> Optional[Path]:
    """The cgroup v2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified)."""
    for m in CGROUP2_MOUNTS:
        if os.path.exists(os.path.join(m, "cgroup.controllers")):
            return Path(m)
    return None


def proc_cgroup_path(pid: int) -> Optional[str]:
    """The cgroup v2 path of ``pid`` ("0::/..." line of /proc/<pid>/cgroup), None if gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        return None
    return None


FILEID_KERNFS = 0xFE  # include/linux/exportfs.h: a kernfs node's 64-bit id as the handle
_HANDLE_ERRORS_FATAL = (errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EBADF)
_handle_fn: list[Optional[Any]] = []  # libc's open_by_handle_at (None: libc has none), once


def _open_by_handle_at() -> Optional[Any]:
    if not _handle_fn:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "open_by_handle_at", None)
        if fn is not None:
            fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
            fn.restype = ctypes.c_int
        _handle_fn.append(fn)
    return _handle_fn[0]


def cgroup_path_by_id(root: str, cgroup_id: int) -> tuple[Optional[str], int]:
    """(path under ``root``, 0) of the live cgroup whose id is ``cgroup_id``, or (None, errno):
    ESTALE when it was removed, EPERM without CAP_DAC_READ_SEARCH, EOPNOTSUPP when the kernel
    has no kernfs handles (before 5.5)."""
    fn = _open_by_handle_at()
    if fn is None:
        return None, errno.ENOSYS
    handle = struct.pack("=IiQ", 8, FILEID_KERNFS, cgroup_id)  # struct file_handle + 8 bytes
    try:
        mount_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        return None, e.errno or errno.EBADF
    try:
        fd = fn(mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if fd < 0:
            return None, ctypes.get_errno()
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as e:
            return None, e.errno or errno.ENOENT
        finally:
            os.close(fd)
    finally:
        os.close(mount_fd)
    if target == root:
        return "/", 0
    if target.startswith(root + "/") and not target.endswith(" (deleted)"):
        return target[len(root):], 0
    return None, errno.ESTALE if target.endswith(" (deleted)") else errno.EXDEV


class CgroupResolver:
    """Bounded cache cgroup id -> (path, identity). Not thread-safe: the sensor's decode thread
    owns it."""

    def __init__(self, root: Optional[Path] = None, max_entries: int = 16384,
                 rewalk_interval_s: float = 1.0) -> None:
        self.root = root if root is not None else cgroup2_mount()
        self.max_entries = max_entries
        self.rewalk_interval_s = rewalk_interval_s
        self._cache: OrderedDict[int, tuple[str, ContainerIdentity]] = OrderedDict()
        self._last_walk = 0.0
        self._gone: OrderedDict[int, None] = OrderedDict()  # removed cgroups (ESTALE)
        self.handles = self.root is not None  # off after an error that will not change
        self.walks = 0
        self.misses = 0
        self.handle_hits = 0
        self.unresolved = 0
        self.walk()

    def stats(self) -> dict[str, int]:
        return {"cgroup_misses": self.misses, "cgroup_walks": self.walks,
                "cgroup_handle_hits": self.handle_hits, "cgroup_unresolved": self.unresolved,
                "cgroup_handles": int(self.handles)}

    def __len__(self) -> int:
        return len(self._cache)

    def _put(self, cgid: int, path: str) -> tuple[str, ContainerIdentity]:
        entry = (path, parse_container(path))
        self._cache[cgid] = entry
        self._cache.move_to_end(cgid)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return entry

    def walk(self) -> None:
        """Index every cgroup directory under the mount (bounded by ``max_entries``)."""
        self._last_walk = time.monotonic()
        self.walks += 1
        if self.root is None:
            return
        root = str(self.root)
        count = 0
        for dirpath, _dirs, _files in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = dirpath[len(root):] or "/"
            self._put(ino, rel)
            count += 1
            if count >= self.max_entries:
                break

    def resolve(self, cgroup_id: int, pid: int = 0) -> tuple[str, ContainerIdentity]:
        """(cgroup path, identity) for ``cgroup_id``; ("", HOST) when it cannot be found."""
        hit = self._cache.get(cgroup_id)
        if hit is not None:
            return hit
        if cgroup_id in self._gone:
            self.unresolved += 1
            return ("", HOST)
        self.misses += 1
        if pid and self.root is not None:
            path = proc_cgroup_path(pid)
            if path is not None:
                try:
                    if os.stat(str(self.root) + path).st_ino == cgroup_id:
                        return self._put(cgroup_id, path)
                except OSError:
                    pass
        if self.handles and self.root is not None and cgroup_id > 0:
            path, err = cgroup_path_by_id(str(self.root), cgroup_id)
            if path is not None:
                self.handle_hits += 1
                return self._put(cgroup_id, path)
            if err == errno.ESTALE:
                self._gone[cgroup_id] = None
                while len(self._gone) > self.max_entries:
                    self._gone.popitem(last=False)
                self.unresolved += 1
                return ("", HOST)
            if err in _HANDLE_ERRORS_FATAL:
                self.handles = False
        if time.monotonic() - self._last_walk >= self.rewalk_interval_s:
            self.walk()
            hit = self._cache.get(cgroup_id)
            if hit is not None:
                return hit
        self.unresolved += 1
        return ("", HOST)
