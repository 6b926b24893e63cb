"""A directory shaped like a Kubernetes ConfigMap volume, updated the way the kubelet does it.

The kubelet writes each version of the ConfigMap into a new hidden directory
``..<timestamp>``, points a temporary symlink at it and renames that over ``..data`` (one atomic
step), and exposes each key as a visible symlink ``<key> -> ..data/<key>``; then it removes the
old version's directory. A file's own mtime and inode therefore never change in place: only the
path its symlink resolves to does. Tests use :class:`ConfigMapDir` to reproduce exactly that.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_versions = itertools.count(1)


class ConfigMapDir:
    """``path`` holds the keys of the current version; :meth:`update` swaps in a new one."""

    def __init__(self, path: Path, files: dict[str, str]) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.update(files)

    def update(self, files: dict[str, str]) -> None:
        """Publish ``files`` (key -> content) as the new version, atomically."""
        version = self.path / f"..2025_01_01_00_00_{next(_versions):02d}.{os.getpid()}"
        version.mkdir()
        for key, text in files.items():
            (version / key).write_text(text)
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.path / "..data_tmp"
        os.symlink(version.name, tmp)
        os.rename(tmp, data)  # the one atomic step readers can observe
        for key in files:
            link = self.path / key
            if not link.is_symlink():
                os.symlink(f"..data/{key}", link)
        for stale in self.path.iterdir():  # keys the new version dropped
            if stale.is_symlink() and not stale.name.startswith(".") and not stale.exists():
                stale.unlink()
        if old is not None:
            shutil.rmtree(self.path / old)
