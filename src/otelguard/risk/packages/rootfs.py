"""A container's root filesystem, reached through ``/proc/<pid>/root`` and walked with every
symlink resolved relative to that root, never the host's (docs/risk.md#resolving-paths).

:class:`Root` holds an ``O_PATH`` directory fd of the root: opened once from any live process of
the container, it stays valid after that process exits (it pins the mount), so short-lived
processes' paths resolve too. :func:`Root.resolve` walks a path component by component with
``lstat``/``readlink`` relative to the fd; an absolute link target restarts at the root, ``..``
never climbs above it, 40 links at most (the kernel's limit). Only already-resolved prefixes are
ever handed to the kernel, so no symlink is followed by the host's lookup.

:class:`Roots` finds and keeps them per instance (LRU, ``max_roots`` open fds): for a container
it tries the record's pid, its parent and the container's recently seen pids, and accepts a pid
only while ``/proc/<pid>/cgroup`` names the container id (a reused pid is refused). The host's
root is ``/``. ``overrides`` maps an instance (or container id) to a directory, for a root that
no process shows (tests, an image unpacked for an offline check).
"""

from __future__ import annotations

import os
import stat
from collections import OrderedDict
from typing import Iterable, Optional

MAX_LINKS = 40
_O_PATH = getattr(os, "O_PATH", 0o10000000)


class Root:
    """One root filesystem; ``key`` names it (instance or directory)."""

    def __init__(self, fd: int, key: str, host_view: str = "/") -> None:
        self.fd = fd
        self.key = key
        # where the host sees this root ("/" for a root in its own mount namespace): the kernel
        # names a chrooted process's executable by its host path, which is stripped of it
        self.host_view = host_view.rstrip("/")

    def inside(self, path: str) -> str:
        """``path`` as the container sees it (an executable path the kernel gave as the host's
        view of the root is made relative to the root again)."""
        if self.host_view and path.startswith(self.host_view + "/"):
            return path[len(self.host_view):]
        return path

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass

    def resolve(self, path: str) -> Optional[str]:
        """The absolute path (inside the root) ``path`` names after every symlink, or None when
        a component does not exist, a loop or a non-directory is met."""
        todo = [c for c in reversed(path.split("/")) if c]
        done: list[str] = []
        links = 0
        while todo:
            comp = todo.pop()
            if comp == ".":
                continue
            if comp == "..":
                if done:
                    done.pop()
                continue
            rel = "/".join(done + [comp])
            try:
                st = os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    return None
                try:
                    target = os.readlink(rel, dir_fd=self.fd)
                except OSError:
                    return None
                if target.startswith("/"):
                    done = []
                todo.extend(c for c in reversed(target.split("/")) if c)
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                return None
            done.append(comp)
        return "/" + "/".join(done)

    def _rel(self, path: str) -> str:
        return path.lstrip("/") or "."

    def read_bytes(self, path: str, limit: int = 64 << 20) -> Optional[bytes]:
        """The content of ``path`` (resolved inside the root first), None when unreadable."""
        real = self.resolve(path)
        if real is None:
            return None
        try:
            fd = os.open(self._rel(real), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                return f.read(limit)
        except OSError:
            return None

    def read_text(self, path: str, limit: int = 64 << 20) -> Optional[str]:
        data = self.read_bytes(path, limit)
        return None if data is None else data.decode("utf-8", "replace")

    def listdir(self, path: str) -> list[str]:
        real = self.resolve(path)
        if real is None:
            return []
        try:
            fd = os.open(self._rel(real), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                         dir_fd=self.fd)
        except OSError:
            return []
        try:
            return sorted(os.listdir(fd))
        except OSError:
            return []
        finally:
            os.close(fd)

    def is_dir(self, path: str) -> bool:
        real = self.resolve(path)
        if real is None:
            return False
        try:
            return stat.S_ISDIR(os.stat(self._rel(real), dir_fd=self.fd).st_mode)
        except OSError:
            return False

    def glob(self, pattern: str) -> list[str]:
        """Directories matching a relative glob (``*`` within one component), resolved."""
        import fnmatch

        found = ["/"]
        for comp in [c for c in pattern.split("/") if c]:
            nxt: list[str] = []
            for base in found:
                if any(ch in comp for ch in "*?["):
                    names = [n for n in self.listdir(base) if fnmatch.fnmatchcase(n, comp)]
                else:
                    names = [comp]
                for n in names:
                    p = base.rstrip("/") + "/" + n
                    if self.is_dir(p):
                        nxt.append(p)
            found = nxt
        out: list[str] = []
        for p in found:
            real = self.resolve(p)
            if real is not None and real not in out:
                out.append(real)
        return out


def open_dir(path: str, key: str) -> Optional[Root]:
    try:
        return Root(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | _O_PATH), key)
    except OSError:
        return None


def _pid_in(pid: int, container_id: str, proc: str) -> bool:
    if not container_id:
        return True
    try:
        with open(f"{proc}/{pid}/cgroup", "rb") as f:
            return container_id.encode() in f.read()
    except OSError:
        return False


class Roots:
    """Root handles per instance, at most ``max_roots`` open (least recently used closed)."""

    def __init__(self, max_roots: int, overrides: Optional[dict[str, str]] = None,
                 proc: str = "/proc") -> None:
        self.max_roots = max_roots
        self.overrides = dict(overrides or {})
        self.proc = proc
        self._roots: OrderedDict[str, Root] = OrderedDict()

    def get(self, instance: str, container_id: str, pids: Iterable[int]) -> Optional[Root]:
        root = self._roots.get(instance)
        if root is not None:
            self._roots.move_to_end(instance)
            return root
        override = self.overrides.get(instance) or self.overrides.get(container_id)
        if override:
            root = open_dir(override, instance)
        elif not container_id:
            root = open_dir("/", instance)
        else:
            for pid in pids:
                if pid <= 0 or not _pid_in(pid, container_id, self.proc):
                    continue
                root = open_dir(f"{self.proc}/{pid}/root", instance)
                if root is not None and _pid_in(pid, container_id, self.proc):
                    try:
                        root.host_view = os.readlink(f"{self.proc}/{pid}/root").rstrip("/")
                    except OSError:
                        pass
                    break
                if root is not None:
                    root.close()
                    root = None
        if root is None:
            return None
        self._roots[instance] = root
        while len(self._roots) > self.max_roots:
            _, old = self._roots.popitem(last=False)
            old.close()
        return root

    def forget(self, instance: str) -> None:
        root = self._roots.pop(instance, None)
        if root is not None:
            root.close()

    def close(self) -> None:
        for root in self._roots.values():
            root.close()
        self._roots.clear()
