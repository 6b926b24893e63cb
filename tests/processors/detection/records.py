"""Three typical records (exec, connect, open) and a one-rule check, for the language and
field-map tests."""

from __future__ import annotations

from typing import Any

from otelguard.processors.detection.engine import RuleEngine

from .casefile import batch_of

EXEC: dict[str, Any] = {
    "event": "otelguard.process.exec",
    "attrs": {
        "otelguard.syscall.name": "execve",
        "otelguard.syscall.ret": 0,
        "process.pid": 4242,
        "process.parent_pid": 4200,
        "process.executable.name": "bash",
        "process.executable.path": "/usr/bin/bash",
        "process.command_args": ["bash", "-c", "echo aGVsbG8= | base64 -d"],
        "process.working_directory": "/dev/shm",
        "process.user.id": 1000,
        "process.user.name": "Alice",
        "otelguard.process.parent.executable.name": "python3",
        "otelguard.process.parent.command_line": "/usr/bin/python3 /srv/app.py --port 80",
        "otelguard.process.ancestors": ["python3", "gunicorn", "containerd-shim"],
        "otelguard.process.cap_effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
        "otelguard.process.tty": 0,
    },
}
CONNECT: dict[str, Any] = {
    "event": "otelguard.network.connect",
    "attrs": {
        "otelguard.syscall.name": "connect",
        "otelguard.syscall.ret": -115,
        "error.type": "EINPROGRESS",
        "network.type": "ipv4",
        "network.transport": "tcp",
        "network.peer.address": "192.168.7.9",
        "network.peer.port": 5432,
        "network.local.address": "10.1.2.3",
        "network.local.port": 40000,
        "process.executable.name": "psql",
    },
}
OPEN: dict[str, Any] = {
    "event": "otelguard.file.open",
    "attrs": {
        "otelguard.syscall.name": "openat",
        "otelguard.syscall.ret": -2,
        "error.type": "ENOENT",
        "otelguard.file.open_flags": "O_WRONLY|O_CREAT|O_TRUNC",
        "file.path": "/etc/ld.so.preload",
        "process.executable.name": "cp",
    },
}


def fires(condition: str, record: dict[str, Any] = EXEC, extra: str = "") -> bool:
    text = f"""
{extra}
- rule: t
  desc: test
  condition: {condition!r}
  output: "out %proc.name"
  priority: NOTICE
"""
    engine = RuleEngine.from_text(("t.yaml", text))
    return [d.rule.name for d in engine.evaluate(batch_of(record))] == ["t"]
