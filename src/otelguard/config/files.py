"""Files that config-as-code lives in (profiles, response requests), replaced so that a crash
leaves the old content or the new, never a torn file: a temp name beside it, fsync, rename,
directory fsync."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new name in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, flags: int, mode: int = 0o600) -> None:
    """Open ``path`` with ``os.O_WRONLY | flags``, write all of ``data`` (short writes resumed),
    fsync, close. ``flags`` is ``O_CREAT | O_TRUNC`` for a temp file about to be renamed, or
    ``O_CREAT | O_APPEND`` for a log whose acknowledged lines must survive a crash."""
    fd = os.open(path, os.O_WRONLY | flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: Union[str, bytes], mode: int = 0o600) -> os.stat_result:
    """Replace ``path`` with ``data`` (text is UTF-8); returns the new file's stat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write_durably(tmp, data.encode() if isinstance(data, str) else data,
                  os.O_CREAT | os.O_TRUNC, mode)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return os.stat(path)
