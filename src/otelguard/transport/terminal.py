"""Terminal: the one stream the console output and a status line share.

On a terminal (``live``) the status line is the last line, redrawn in place (carriage return,
erase line, no newline); every block of console lines first erases it and then redraws it
below them, under one lock, so a detection never lands in the middle of the status and the
status never scrolls the detections away. Not on a terminal, a status is one plain line
(``status ...``) like any other, and no escape sequence is ever written.

Cost: a console write takes the lock and adds two short writes when a status is shown; the
status itself is drawn by its own thread (otelguard/status.py), never on the export path.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import IO

from otelguard.transport.settings import dumb_terminal

ERASE_LINE = "\r\x1b[K"


def is_live(stream: IO[str]) -> bool:
    """A terminal that understands the erase sequence (not ``TERM=dumb``)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and not dumb_terminal()


class Terminal:
    def __init__(self, stream: IO[str], live: bool) -> None:
        self.stream = stream
        self.live = live
        self._status = ""  # the status line now on screen (live only)
        self._lock = threading.Lock()

    def width(self) -> int:
        """Columns of the terminal (80 when it reports none, as a fresh pty does)."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = shutil.get_terminal_size().columns
        return columns if columns > 0 else 80

    def write(self, text: str) -> None:
        """Complete lines (``text`` ends with a newline); raises OSError/ValueError as the
        stream does."""
        with self._lock:
            if self._status:
                self.stream.write(ERASE_LINE + text + self._status)
            else:
                self.stream.write(text)
            self.stream.flush()

    def status(self, line: str) -> None:
        """Show ``line`` as the status: redrawn in place when live (cut to the width), else
        written as a plain line."""
        with self._lock:
            if self.live:
                width = max(self.width() - 1, 10)
                self._status = line[:width]
                self.stream.write(ERASE_LINE + self._status)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Erase the status line (before someone else writes to the same terminal, and at
        exit); the next :meth:`status` draws it again."""
        with self._lock:
            if self._status:
                self._status = ""
                try:
                    self.stream.write(ERASE_LINE)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
