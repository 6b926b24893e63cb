"""The profiles directory: one WorkloadProfile file per workload, shared by the stage and the
humans (and Git) that review them.

The stage's sync thread reads files that changed since it last saw them (by mtime, size and
inode; its own writes are remembered, so it reads only edits made by others) and writes the
profiles that changed in memory. A file someone changed after the stage's last read or write is
never overwritten: it is read on the next scan instead, so a human's edit wins over learning.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

from otelguard.config import ConfigError
from otelguard.processors.profiles import metrics
from otelguard.processors.profiles.document import SUFFIX, ProfileDocument, load, write_atomic

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int]


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ProfileStore:
    """Not thread-safe: the stage's sync thread (and start/shutdown) is its only user."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[str, _Stamp] = {}  # file name -> stamp of our last read or write
        self.paths: dict[str, str] = {}  # workload -> file name it was read from or written to

    def scan(self) -> list[ProfileDocument]:
        """Documents of files new or changed since the last scan or save (bad files are logged
        and counted in ``otelguard_profile_file_errors_total{op="load"}``, and skipped)."""
        out: list[ProfileDocument] = []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(SUFFIX) or name.startswith("."):
                continue
            path = self.directory / name
            try:
                stamp = _stamp(path.stat())
            except FileNotFoundError:
                continue
            if self._seen.get(name) == stamp:
                continue
            self._seen[name] = stamp
            try:
                doc = load(path)
            except (ConfigError, OSError, ValueError) as exc:
                metrics.file_errors.labels("load").inc()
                log.warning("profile file %s not loaded: %s", path, exc)
                continue
            self.paths[doc.metadata.workload] = name
            out.append(doc)
        return out

    def save(self, workload: str, default_name: str, text: str) -> bool:
        """Write a profile unless its file changed since we last read or wrote it (then a
        human's edit is pending: the next scan reads it). True when written."""
        name = self.paths.get(workload, default_name)
        path = self.directory / name
        try:
            current: Optional[_Stamp] = _stamp(path.stat())
        except FileNotFoundError:
            current = None
        if current is not None and self._seen.get(name) != current:
            return False
        try:
            self._seen[name] = _stamp(write_atomic(path, text))
        except OSError as exc:
            metrics.file_errors.labels("save").inc()
            log.warning("profile file %s not written: %s", path, exc)
            return False
        self.paths[workload] = name
        return True
