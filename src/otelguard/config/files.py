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


def write_atomic(path: Path, data: Union[str, bytes], mode: int = 0o600) -> os.stat_result:
    """Replace ``path`` with ``data`` (text is UTF-8); returns the new file's stat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data.encode() if isinstance(data, str) else data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return os.stat(path)
