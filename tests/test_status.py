"""``otelguard run``'s status line (otelguard/status.py, transport/terminal.py): refreshed in
place on a real pseudo-terminal with detections printed above it and log lines erasing it
first; plain lines without one escape sequence on a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from otelguard.status import Sample, render
from otelguard.transport.terminal import ERASE_LINE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "TERM": "xterm"}
DRIVER = [sys.executable, "-m", "tests.support.status_driver"]
STATUS = re.compile(r"otelguard \| [\d,]+ events/s \| [\d,]+ dropped")
FULL_STATUS = re.compile(STATUS.pattern + r"( \(\+[\d,]+\))? \| [\d,]+ detections?( \([^)]*\))? "
                         r"\| [\d,]+ incidents?( \([\d,]+ open\))? \| up \d+m\d\ds")



def _readable(fd: int, timeout_s: float) -> bool:
    """``fd`` has data (or hung up) within ``timeout_s``: poll(2), which, unlike select(2),
    takes descriptors above 1023 (a long test session holds many)."""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout_s * 1000))

def test_render_names_what_matters() -> None:
    prev = Sample(at=10.0, events=1000, dropped=3)
    cur = Sample(at=12.0, events=5000, dropped=10, detections={"CRITICAL": 1, "WARNING": 2,
                                                                  "DEBUG": 4},
                 incidents=2, open_incidents=1)
    assert render(prev, cur, started=0.0) == (
        "otelguard | 2,000 events/s | 10 dropped (+7) | 7 detections (1 CRITICAL, 2 WARNING) "
        "| 2 incidents (1 open) | up 0m12s")
    idle = render(cur, Sample(at=3714.0, events=5000, dropped=10), started=0.0)
    assert idle == ("otelguard | 0 events/s | 10 dropped | 0 detections | 0 incidents "
                    "| up 1h01m")


def _on_pty(mode: str, interval: float) -> str:
    """The driver with stdout and stderr on one pseudo-terminal; everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([*DRIVER, mode, str(interval)], stdin=slave, stdout=slave,
                            stderr=slave, env=ENV, cwd=ROOT)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if _readable(master, 0.5):
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the driver exited and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        proc.wait(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
    return out.decode().replace("\r\n", "\n")  # the tty's onlcr


def test_live_status_on_a_pseudo_terminal() -> None:
    text = _on_pty("auto", 0.2)
    # refreshed in place: many draws, each after an erase (or at the start of a fresh line,
    # below console lines), never sharing its line with other text, never ending a line
    draws = [m.start() for m in STATUS.finditer(text)]
    assert len(draws) >= 5, text
    assert all(text[d - len(ERASE_LINE):d] == ERASE_LINE or text[d - 1] == "\n"
               for d in draws), text
    pieces = re.split(r"\r\x1b\[K|\n", text)
    assert all(FULL_STATUS.fullmatch(p) for p in pieces if STATUS.search(p)), pieces
    assert not re.search(STATUS.pattern + r"[^\r]*\n", text)
    # the detection: coloured, on its own line, written where the status was erased
    det = next(p for p in pieces if "!! CRITICAL Read sensitive file untrusted" in p)
    assert "\x1b[1;31m!! CRITICAL" in det
    assert ERASE_LINE + det + "\n" in text
    assert "open /etc/shadow" not in text  # raw events are not printed without --events
    # ... and the status is drawn again below it, with the new counts
    after = text[text.index(det):]
    assert re.search(r"1 detection \(1 CRITICAL\) \| 1 incident", after), after
    assert "7 dropped" in after
    # a log line erases the status first, so it starts at column 0 of its own line
    log = next(p for p in pieces if "a warning while the status is shown" in p)
    assert ERASE_LINE + log + "\n" in text and "WARNING otelguard.run" in log
    # stopped: erased, so the summary starts on a clean line
    assert text.endswith(ERASE_LINE + "SUMMARY\n"), repr(text[-200:])


def test_plain_status_lines_on_a_pipe() -> None:
    proc = subprocess.run([*DRIVER, "auto", "0.2"], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout
    lines = proc.stdout.splitlines()
    status = [x for x in lines if STATUS.match(x)]
    assert len(status) >= 5 and all(FULL_STATUS.fullmatch(x) for x in status)
    dets = [x for x in lines if "!! CRITICAL Read sensitive file untrusted" in x]
    assert len(dets) == 1 and not STATUS.search(dets[0])
    assert lines.index(dets[0]) > lines.index(status[0])
    assert "1 detection (1 CRITICAL)" in status[-1] and "1 incident" in status[-1]
    assert proc.stderr.endswith("SUMMARY\n")


def test_status_off_and_forced_plain_on_a_terminal() -> None:
    assert not STATUS.search(_on_pty("off", 0.2))
    text = _on_pty("plain", 0.2)
    assert ERASE_LINE not in text
    assert len([x for x in text.splitlines() if FULL_STATUS.fullmatch(x)]) >= 5


@pytest.mark.kernel
@pytest.mark.timeout(300)
def test_otelguard_run_on_a_pseudo_terminal(tmp_path: Path) -> None:
    """The real ``otelguard run`` (sensor, pipeline, console) on a pseudo-terminal: the
    detection of a marker file prints above the live status, which then counts it."""
    marker = tmp_path / "marker"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "- rule: Status test marker written\n  desc: a test marker\n"
        f"  condition: evt.type in (open, openat, creat) and fd.name = {marker}\n"
        "  output: marker written by %proc.name\n  priority: CRITICAL\n")
    argv = [str(Path(sys.executable).parent / "otelguard"), "run", "--rules", str(rules),
            "--output", "console", "--metrics", "127.0.0.1:0", "--status-interval", "0.5",
            "--duration", "45"]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=ENV,
                            cwd=tmp_path)
    os.close(slave)
    out = b""
    touched = stopping = False
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if _readable(master, 0.5):
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if not touched and out.count(b"events/s") >= 2:
                marker.write_text("x")  # an open with O_CREAT by this process
                touched = True
            if not stopping and b"Status test marker written" in out and \
                    b"1 detection (1 CRITICAL)" in out:
                stopping = True
                proc.send_signal(signal.SIGINT)
                deadline = min(deadline, time.monotonic() + 60)
            if proc.poll() is not None and not _readable(master, 0.2):
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        proc.wait(timeout=60)
    text = out.decode(errors="replace").replace("\r\n", "\n")
    assert proc.returncode == 0, text[-3000:]
    assert "otelguard run: watching (" in text
    pieces = re.split(r"\r\x1b\[K|\n", text)
    assert all(FULL_STATUS.fullmatch(p) for p in pieces if STATUS.search(p)), pieces
    det = next(p for p in pieces if "!! CRITICAL Status test marker written" in p)
    assert ERASE_LINE + det + "\n" in text
    assert re.search(r"1 detection \(1 CRITICAL\)", text[text.index(det):])
    assert ERASE_LINE + "otelguard run summary" in text
