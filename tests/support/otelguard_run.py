"""`otelguard run` as its own process for kernel tests: the installed console script, a startup
wait on its stderr, and the records of its JSON lines output."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import attrs_dict

OTELGUARD = str(Path(sys.executable).parent / "otelguard")  # the installed console script


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> str:
    """Read ``proc``'s stderr until a line contains ``needle`` (bounded); returns that line."""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sel.select(timeout=0.5):
            line = proc.stderr.readline()
            seen.append(line)
            if needle in line:
                return line
    raise AssertionError(f"no {needle!r} from otelguard run within {timeout_s}s: {''.join(seen)}")


def output_records(path: Path) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, LogRecord) of every record in a JSON lines output file. The file
    is read while ``otelguard run`` appends to it: a last line without its newline is still
    being written (a 1.6 MB line was caught half-flushed) and waits for the next read."""
    out: list[tuple[dict[str, Any], Any]] = []
    if not path.exists():
        return out
    for line in path.read_text().split("\n")[:-1]:
        if not line.strip():
            continue
        req = jsoncodec.decode_line(line)
        for rl in getattr(req, "resource_logs", ()):
            res = attrs_dict(rl.resource.attributes)
            for sl in rl.scope_logs:
                out.extend((res, rec) for rec in sl.log_records)
    return out
