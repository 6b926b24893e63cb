"""docs/rules.md: its field table is what otelguard/reference/fields.py generates from the
engine's field registry (so it cannot drift), and its example rules load, can run on this
sensor, fire on records carrying the attributes the guide says each field reads, and stay
quiet on a near miss."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict, set_attrs
from otelguard.processors.detection.fields import FIELDS
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.processor import Config, create
from otelguard.reference.fields import BEGIN, END, main, splice, table

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
CONTAINER = {S.CONTAINER_ID: "ab" * 32, S.K8S_NAMESPACE_NAME: "shop",
             S.K8S_POD_NAME: "web-6d4b9c7f5-x2x9q"}
Record = tuple[str, dict[str, Any]]


def test_the_published_field_table_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert splice(text, table()) == text, (
        "docs/rules.md is stale: python -m otelguard.reference.fields --write docs/rules.md")
    section = text[text.index(BEGIN):text.index(END)]
    for name, spec in FIELDS.items():
        assert f"| `{name}" in section, name
        if not spec.available:
            assert re.search(rf"\| `{re.escape(name)}(\[\w+\])?` \|[^\n]*\*\*not available\*\*",
                             section), name


def test_write_replaces_only_the_generated_part(tmp_path: Path) -> None:
    doc = tmp_path / "rules.md"
    doc.write_text(f"# head\n\n{BEGIN}\nSTALE TABLE\n{END}\ntail\n")
    assert main(["--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"# head\n\n{BEGIN}\n\n") and text.endswith(f"\n\n{END}\ntail\n")
    assert "| `proc.name` | string | `process.executable.name`" in text and "STALE TABLE" not in text
    doc.write_text("no markers\n")
    assert main(["--write", str(doc)]) == 2


def _examples(tmp_path: Path) -> Path:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    path = tmp_path / "examples.yaml"
    path.write_text("\n".join(blocks))
    return path


def _proc(comm: str, pid: int = 50, uid: int = 1000, parent: str = "bash") -> dict[str, Any]:
    return {S.PROCESS_COMM: comm, S.PROCESS_EXECUTABLE_NAME: comm,
            S.PROCESS_EXECUTABLE_PATH: f"/usr/bin/{comm}", S.PROCESS_COMMAND_ARGS: [comm],
            S.PROCESS_COMMAND_LINE: comm, S.PROCESS_PID: pid, S.PROCESS_PARENT_PID: 1,
            S.PROCESS_USER_ID: uid, S.PROCESS_ANCESTORS: [parent], S.SYSCALL_RET: 0}


def _open(comm: str, path: str) -> Record:
    return S.EV_FILE_OPEN, {**_proc(comm), S.SYSCALL_NAME: "openat", S.FILE_PATH: path,
                            S.FILE_OPEN_FLAGS: "O_WRONLY|O_CREAT|O_TRUNC", S.SYSCALL_RET: 3}


def _exec(comm: str, parent: str, pid: int = 50) -> Record:
    return S.EV_PROCESS_EXEC, {**_proc(comm, pid, parent=parent), S.SYSCALL_NAME: "execve"}


def _connect(port: int, peer: str = "203.0.113.9") -> Record:
    return S.EV_NETWORK_CONNECT, {
        **_proc("python3"), S.SYSCALL_NAME: "connect", S.NETWORK_PEER_ADDRESS: peer,
        S.NETWORK_PEER_PORT: port, S.NETWORK_LOCAL_ADDRESS: "10.244.1.17",
        S.NETWORK_LOCAL_PORT: 40000, S.NETWORK_TRANSPORT: "tcp", S.NETWORK_TYPE: "ipv4"}


def _setuid(uid: int) -> Record:
    return S.EV_PRIV_SETUID, {**_proc("su", uid=uid), S.SYSCALL_NAME: "setuid", S.NEW_UID: 0}


def _dup_socket_to_stdin(pid: int = 50) -> Record:
    return S.EV_DUP, {**_proc("python3", pid), S.SYSCALL_NAME: "dup2", S.DUP_OLD_FD: 3,
                      S.DUP_NEW_FD: 0, S.DUP_OLD_FD_TYPE: "socket"}


def _fired(path: Path, resource: dict[str, Any], *records: Record) -> list[str]:
    stage = create(Config(rules=(str(path),)))
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, resource)
    sl = rl.scope_logs.add()
    for i, (name, attrs) in enumerate(records):
        rec = sl.log_records.add()
        rec.event_name = name
        rec.time_unix_nano = 1_700_000_000_000_000_000 + i
        set_attrs(rec.attributes, {**attrs, S.LOG_RECORD_UID: f"r{i}"})
    out = stage.process(req)
    assert isinstance(out, ExportLogsServiceRequest)
    return [str(attrs_dict(r.attributes)[S.SECURITY_RULE_NAME]) for rl in out.resource_logs
            for sl in rl.scope_logs for r in sl.log_records if r.event_name == S.EV_DETECTION]


def test_the_examples_load_and_can_run(tmp_path: Path) -> None:
    rs = load_rules([_examples(tmp_path)])
    assert rs.ok, rs.errors
    assert rs.count("loaded") == 5 and rs.count("cannot-run") == rs.count("skipped") == 0


OTHER_NS = {**CONTAINER, S.K8S_NAMESPACE_NAME: "billing"}
HOST = {S.HOST_NAME: "node-1", S.HOST_PROCESS: True}


@pytest.mark.parametrize("rule, fires, misses", [
    ("Write below etc in container", (CONTAINER, [_open("python3", "/etc/cron.d/job")]),
     (CONTAINER, [_open("dpkg", "/etc/cron.d/job")])),
    ("Write below etc in container", (CONTAINER, [_open("python3", "/etc/passwd")]),
     (HOST, [_open("python3", "/etc/passwd")])),
    ("Shell from a web server in shop", (CONTAINER, [_exec("sh", "nginx")]),
     (OTHER_NS, [_exec("sh", "nginx")])),
    ("Unexpected outbound port from shop", (CONTAINER, [_connect(4444)]),
     (CONTAINER, [_connect(443)])),
    ("Unexpected outbound port from shop", (CONTAINER, [_connect(4444)]),
     (CONTAINER, [_connect(4444, peer="127.0.0.1")])),
    ("Setuid to root by a non-root process", (HOST, [_setuid(1000)]), (HOST, [_setuid(0)])),
    ("Shell reading from a socket",
     (CONTAINER, [_dup_socket_to_stdin(), _exec("sh", "python3")]),
     (CONTAINER, [_exec("sh", "python3")])),
])
def test_each_example_fires_on_the_attributes_it_names(
        tmp_path: Path, rule: str, fires: tuple[dict[str, Any], list[Record]],
        misses: tuple[dict[str, Any], list[Record]]) -> None:
    path = _examples(tmp_path)
    assert rule in _fired(path, fires[0], *fires[1])
    assert rule not in _fired(path, misses[0], *misses[1])
