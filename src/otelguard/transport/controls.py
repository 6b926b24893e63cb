"""Characters that never reach an output raw: what a process name, argv or path could use to
forge a log line or repaint a terminal.

Anyone who can run a process controls its name, argv and the paths it opens, so the console
and JSON lines outputs escape, in every value they print:

- C0 controls and DEL (newline, carriage return, ESC of ANSI sequences, ...) and C1 controls
  (NEL, 8-bit CSI);
- the Unicode line and paragraph separators (U+2028, U+2029; ``str.splitlines`` and many log
  viewers break lines there);
- the bidirectional overrides and isolates (U+200E/F, U+202A-U+202E, U+2066-U+2069) that make
  text display in a different order than it is stored.

The console shows them as ``\\n``, ``\\r``, ``\\t``, ``\\xNN`` or ``\\uNNNN``; a backslash
itself is left alone (console lines are for people; the JSON lines are the exact record). Cost: one
regex search per value, a substitution only when something matched.
"""

from __future__ import annotations

import re

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def visible(text: str) -> str:
    """``text`` as one line with every unsafe character shown as an escape."""
    return text if UNSAFE.search(text) is None else UNSAFE.sub(_visible, text)


def json_safe(line: str) -> str:
    """A JSON text with the unsafe characters that JSON allows raw (DEL, C1, the separators and
    bidi controls; C0 is always escaped) written as ``\\uNNNN`` instead: the same JSON value,
    still one line for every line splitter. Such characters only occur inside JSON strings,
    where the escape means the same character."""
    return line if UNSAFE.search(line) is None else UNSAFE.sub(_json_escape, line)
