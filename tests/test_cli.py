"""The ``otelguard`` command as operators meet it, through the real CLI in a subprocess:
``--version``, and operator mistakes ending in one line naming cause and fix, exit code 2,
never a traceback (a second run whose metrics port is taken, no root, BCC missing, a config
that cannot be read). Flags without help are caught by tests/config/test_reference.py, which
walks the whole argparse tree."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import pytest

import otelguard
from otelguard import telemetry
from tests.support.endpoints import free_port

ROOT = Path(__file__).resolve().parents[1]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the preflight passes)")


def otelguard_cli(*argv: str, tmp: Path, env: Optional[dict[str, str]] = None,
                  user: Optional[int] = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "otelguard.cli", *argv], capture_output=True, text=True,
        env=environ, cwd=tmp, timeout=120,
        preexec_fn=(lambda: (os.setgroups([]), os.setgid(user), os.setuid(user)) and None)
        if user is not None else None)


def one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    ours = [line for line in result.stderr.splitlines() if line.startswith("otelguard ")]
    assert len(ours) == 1, result.stderr
    for needle in needles:
        assert needle in ours[0], (needle, ours[0])
    return ours[0]


def test_version(tmp_path: Path) -> None:
    result = otelguard_cli("--version", tmp=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"otelguard {otelguard.__version__}"


@root_only
def test_second_run_whose_metrics_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = otelguard_cli("run", "--metrics", f"127.0.0.1:{port}", "--duration", "1",
                               "--output", f"jsonl:{tmp_path / 'out.jsonl'}", tmp=tmp_path)
    one_line_exit_2(result, f"127.0.0.1:{port}", "already in use", "--metrics")


def test_processor_whose_metrics_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = otelguard_cli("processor", "--listen", f"127.0.0.1:{free_port()}",
                               "--metrics", f"127.0.0.1:{port}", "--export",
                               f"jsonl:{tmp_path / 'out.jsonl'}", tmp=tmp_path)
    one_line_exit_2(result, "already in use", "--metrics")


@pytest.mark.parametrize("flag", ["--listen", "--listen-http"])
def test_processor_whose_otlp_port_is_taken(tmp_path: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--listen": f"127.0.0.1:{free_port()}",
                 "--listen-http": f"127.0.0.1:{free_port()}"}
        ports[flag] = f"127.0.0.1:{port}"
        result = otelguard_cli("processor", "--insecure", *[x for kv in ports.items() for x in kv],
                               "--metrics", "127.0.0.1:0",
                               "--export", f"jsonl:{tmp_path / 'out.jsonl'}", tmp=tmp_path)
    one_line_exit_2(result, f"{flag} 127.0.0.1:{port}", "fix:")


@root_only
def test_run_without_root() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:  # reachable by nobody
        os.chmod(scratch, 0o777)
        result = otelguard_cli("run", "--duration", "1", "--metrics", "127.0.0.1:0",
                               "--output", f"jsonl:{scratch}/out.jsonl", tmp=Path(scratch),
                               user=65534)
    one_line_exit_2(result, "CAP_BPF", "fix: run as root")


def test_run_without_bcc(tmp_path: Path) -> None:
    """An interpreter where ``import bcc`` fails as it does when python3-bpfcc is absent."""
    shadow = tmp_path / "no-bcc" / "bcc"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("No module named \'bcc\'")\n')
    result = otelguard_cli("run", "--duration", "1", "--metrics", "127.0.0.1:0",
                           "--output", f"jsonl:{tmp_path / 'out.jsonl'}", tmp=tmp_path,
                           env={"PYTHONPATH": f"{shadow.parent}:{ROOT / 'src'}"})
    if os.geteuid() != 0:
        one_line_exit_2(result, "privileges")
    else:
        one_line_exit_2(result, "bcc", "python3-bpfcc")


@pytest.mark.parametrize("command", [["run"], ["agent", "--otlp-endpoint", "127.0.0.1:4317"]])
def test_unreadable_config(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "missing.yaml"
    result = otelguard_cli(*command, "--config", str(missing), "--duration", "1", tmp=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr and "No such file" in result.stderr


def test_json_logs_carry_the_fields_operators_filter_on() -> None:
    stream = io.StringIO()
    telemetry.configure_logging("otelguard-agent", "info", "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        logging.getLogger("otelguard.agent").info("spool %s", "/var/lib/x",
                                                  extra={"requests": 3})
        logging.getLogger("otelguard.agent").debug("not shown")
    finally:
        telemetry.configure_logging("pytest", "warning", "text")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    doc: dict[str, Any] = json.loads(lines[0])
    assert doc["level"] == "info" and doc["logger"] == "otelguard.agent"
    assert doc["message"] == "spool /var/lib/x" and doc["service"] == "otelguard-agent"
    assert doc["requests"] == 3 and doc["pid"] == os.getpid()
    assert doc["time"].endswith("Z") and "T" in doc["time"]
