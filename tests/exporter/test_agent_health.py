"""``otelguard agent``'s health endpoints on the real kernel: ``/readyz`` beside ``/metrics``
turns 200 once the real probes are attached, the ring buffer is polled and the export loop runs;
``/healthz`` answers without compiling anything (docs/architecture.md#health)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.transport.receivers import GrpcReceiver, free_port

pytestmark = pytest.mark.kernel

OTELGUARD = Path(sys.executable).parent / "otelguard"
READY_WITHIN_S = 45.0  # the process probe compiles in seconds; the whole test stays <= 60 s


def _get(url: str) -> Optional[tuple[int, dict[str, Any]]]:
    """(status, JSON body), or None while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return None


def test_agent_readyz_turns_200_and_healthz_answers(tmp_path: Path) -> None:
    receiver = GrpcReceiver().start()
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text("sensor:\n  probes: [process]\n")
    proc = subprocess.Popen(
        [str(OTELGUARD), "agent", "--otlp-endpoint", receiver.endpoint, "--otlp-insecure",
         "--config", str(config),
         "--spool-dir", str(tmp_path / "spool"), "--metrics", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        seen: list[tuple[int, dict[str, Any]]] = []
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline and proc.poll() is None:
            got = _get(base + "/readyz")
            if got is not None:
                seen.append(got)
                if got[0] == 200:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert seen and seen[-1][0] == 200, seen[-3:]
        status, body = seen[-1]
        checks = {c["name"]: c for c in body["checks"]}
        assert body["status"] == "ready" and body["failing"] == []
        assert set(checks) == {"probes", "ring_buffer", "exporter"}
        assert checks["probes"]["detail"].startswith("attached: process")
        # Every 503 seen while starting named what was missing.
        assert all(s == 503 and b["failing"] for s, b in seen[:-1]), seen[:-1]
        assert _get(base + "/healthz") == (200, {"status": "alive"})
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            assert b"otelguard_events_total" in resp.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        receiver.stop()

