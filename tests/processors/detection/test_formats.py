"""Field values formatted as libs formats them (chmod mode bit names, setuid user names, IPv6
socket names), and missing values that must not make a condition true by default."""

from __future__ import annotations

from typing import Any

import pytest

from otelguard.processors.detection.engine import RuleEngine

from .casefile import batch_of, merge
from .records import CONNECT, EXEC, OPEN, fires

CHMOD: dict[str, Any] = {"event": "otelguard.file.chmod", "attrs": {
    "otelguard.syscall.name": "fchmodat", "otelguard.syscall.ret": 0, "file.path": "/tmp/x",
    "file.mode": "6755", "process.executable.name": "chmod", "process.user.id": 0}}
SETUID: dict[str, Any] = {"event": "otelguard.privilege.setuid", "attrs": {
    "otelguard.syscall.name": "setuid", "otelguard.syscall.ret": 0,
    "otelguard.privilege.new_uid": 33, "process.user.id": 33, "process.user.name": "www-data",
    "process.executable.name": "php-fpm"}}


def _render(output: str, record: dict[str, Any]) -> str:
    text = f"""
- rule: r
  desc: d
  condition: evt.num > 0
  output: {output!r}
  priority: NOTICE
"""
    [det] = RuleEngine.from_text(("r.yaml", text)).evaluate(batch_of(record))
    return det.record.body.string_value


@pytest.mark.parametrize("mode,text", [
    ("6755", "S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR|S_ISGID|S_ISUID"),
    ("4000", "S_ISUID"), ("0644", "S_IROTH|S_IRGRP|S_IWUSR|S_IRUSR"),
])
def test_chmod_mode_is_printed_as_libs_bit_names(mode: str, text: str) -> None:
    rec = merge(CHMOD, {"attrs": {"file.mode": mode}})
    assert _render("%evt.arg.mode", rec) == text
    assert _render("%evt.rawarg.mode", rec) == str(int(mode, 8))


def test_setuid_bit_rule_condition_fires_on_mode_names() -> None:
    cond = 'evt.arg.mode contains "S_ISUID" or evt.arg.mode contains "S_ISGID"'
    assert fires(cond, CHMOD)
    assert fires(cond, merge(CHMOD, {"attrs": {"file.mode": "2700"}}))
    assert not fires(cond, merge(CHMOD, {"attrs": {"file.mode": "0755"}}))
    assert fires('evt.arg.mode contains "S_IXUSR"', merge(CHMOD, {"attrs": {"file.mode": "0700"}}))


def test_setuid_uid_compares_to_user_names_as_falco_resolves_them() -> None:
    assert fires("user.name = www-data and evt.arg.uid = www-data", SETUID)
    assert fires("evt.rawarg.uid = 33", SETUID)
    assert fires("evt.arg.uid = root", merge(SETUID, {"attrs": {"otelguard.privilege.new_uid": 0}}))
    other = merge(SETUID, {"attrs": {"otelguard.privilege.new_uid": 1000}})
    assert not fires("evt.arg.uid = www-data", other)
    assert fires("evt.arg.uid = 1000", other)


def test_ipv6_socket_name_has_no_brackets() -> None:
    v6 = merge(CONNECT, {"attrs": {"network.type": "ipv6", "network.peer.address": "2001:db8::9",
                                   "network.local.address": "fd00::3"}})
    assert _render("%fd.name", v6) == "fd00::3:40000->2001:db8::9:5432"
    assert fires("fd.name = fd00::3:40000->2001:db8::9:5432", v6)


def test_open_without_flags_is_neither_read_nor_write() -> None:
    bare = merge(OPEN, {"attrs": {"otelguard.file.open_flags": None}})
    for field in ("evt.is_open_read", "evt.is_open_write", "evt.is_open_create"):
        assert not fires(f"{field} = true", bare), field
        assert not fires(f"{field} = false", bare), field
    assert fires("evt.is_open_read = false", OPEN)


def test_unresolved_container_is_not_the_host() -> None:
    unknown = merge(EXEC, {"resource": {"container.id": None}})
    assert not fires("container.id = host", unknown)
    assert fires("container.id != host", unknown)
    assert not fires("not container.id != host", unknown)
    assert not fires("container.name exists", unknown)
    host = merge(EXEC, {"resource": "host"})
    assert fires("container.id = host and container.name = host", host)


def test_exec_flags_missing_when_the_record_says_nothing() -> None:
    assert not fires("evt.arg.flags exists", EXEC)
    known = merge(EXEC, {"attrs": {"otelguard.process.exe_from_memfd": False,
                                   "otelguard.process.exe_upper_layer": True}})
    assert fires("evt.arg.flags = EXE_UPPER_LAYER", known)
    none = merge(known, {"attrs": {"otelguard.process.exe_upper_layer": False}})
    assert fires("evt.arg.flags = 0", none)


SENSITIVE = 'not container.mount.dest[/var/run/docker.sock] in ("<NA>","N/A")'


def test_container_mounts_are_na_when_absent_or_unknown() -> None:
    sock = "/var/run/docker.sock:/var/run/docker.sock::true:rprivate"
    with_sock = merge(EXEC, {"resource": {"otelguard.k8s.container.mounts": [sock]}})
    assert fires(SENSITIVE, with_sock)
    assert not fires(SENSITIVE, merge(EXEC, {"resource": {"otelguard.k8s.container.mounts": []}}))
    assert not fires(SENSITIVE, EXEC)  # the pod spec is unknown: no mount was seen
    assert not fires("container.mounts exists", merge(EXEC, {"resource": "host"}))


def test_probe_flags_from_the_pod_spec_exec_command() -> None:
    probe = {"otelguard.k8s.container.mounts": [],
             "otelguard.k8s.container.readiness_probe": ["cat", "/tmp/ready"]}
    cat = merge(EXEC, {"resource": probe, "attrs": {"process.command_args": ["cat", "/tmp/ready"]}})
    assert fires("proc.is_container_readiness_probe = true", cat)
    assert fires("proc.is_container_liveness_probe = false", cat)
    child = merge(cat, {"attrs": {"process.command_args": ["head", "-1"],
                                  "otelguard.process.parent.command_line": "cat /tmp/ready"}})
    assert fires("proc.is_container_readiness_probe = true", child)
    other = merge(cat, {"attrs": {"process.command_args": ["cat", "/etc/shadow"]}})
    assert fires("proc.is_container_readiness_probe = false", other)
    # unknown pod spec: neither true nor false; the host: false
    assert not fires("proc.is_container_readiness_probe exists", EXEC)
    assert fires("proc.is_container_readiness_probe = false", merge(EXEC, {"resource": "host"}))


def test_create_without_mode_and_connect_without_result_say_nothing() -> None:
    create = merge(OPEN, {"attrs": {"otelguard.file.open_flags": "O_WRONLY|O_CREAT"}})
    assert not fires("evt.is_open_exec = false", create)
    assert not fires("evt.is_open_exec = true", create)
    assert fires("evt.is_open_exec = true", merge(create, {"attrs": {"file.mode": "0755"}}))
    assert fires("evt.is_open_exec = false", merge(create, {"attrs": {"file.mode": "0644"}}))
    bare = merge(CONNECT, {"attrs": {"otelguard.syscall.ret": None, "error.type": None}})
    assert not fires("fd.connected = true", bare)
    assert not fires("fd.connected = false", bare)
    assert fires("fd.connected = true", CONNECT)  # EINPROGRESS
