"""Where profiles live between the stage and the humans who review them: a directory of
WorkloadProfile files (single host), or WorkloadProfile objects on the API server (cluster,
:mod:`otelguard.processors.profiles.cluster`). Both obey one rule: what someone else wrote since
the stage last read or wrote it is never overwritten; it is read on the next scan instead, so a
human's edit (an approval, a spec change) wins over learning.

The stage's sync thread is a store's only user (start/shutdown included): stores are not
thread-safe, and ``scan``/``save`` may block on I/O, never ``process``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Protocol

from otelguard.config import ConfigError
from otelguard.processors.profiles import metrics
from otelguard.processors.profiles.document import (
    SUFFIX, ProfileDocument, dump, file_name, load, write_atomic,
)

log = logging.getLogger(__name__)

_Stamp = tuple[int, int, int]


class ProfileStore(Protocol):
    def open(self) -> None:
        """Get ready (create the directory, list the objects); raises ProcessorsError when the
        store cannot work at all (a missing CRD, no API access)."""

    def scan(self) -> list[ProfileDocument]:
        """Profiles new or changed (by someone else) since the last scan or save; invalid ones
        are logged, counted in ``otelguard_profile_file_errors_total{op="load"}`` and skipped."""

    def save(self, doc: ProfileDocument) -> bool:
        """Write a profile unless someone changed it since our last read or write (then their
        version comes with the next scan). True when written."""

    def close(self) -> None: ...


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class DirectoryStore:
    """One file per workload; a file counts as changed when its mtime, size or inode differ from
    our last read or write of it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[str, _Stamp] = {}  # file name -> stamp of our last read or write
        self.paths: dict[str, str] = {}  # workload -> file name it was read from or written to

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pass

    def scan(self) -> list[ProfileDocument]:
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

    def save(self, doc: ProfileDocument) -> bool:
        workload = doc.metadata.workload
        name = self.paths.get(workload, file_name(workload))
        path = self.directory / name
        try:
            current: Optional[_Stamp] = _stamp(path.stat())
        except FileNotFoundError:
            current = None
        if current is not None and self._seen.get(name) != current:
            return False
        try:
            self._seen[name] = _stamp(write_atomic(path, dump(doc)))
        except OSError as exc:
            metrics.file_errors.labels("save").inc()
            log.warning("profile file %s not written: %s", path, exc)
            return False
        self.paths[workload] = name
        return True
