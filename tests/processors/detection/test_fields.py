"""Conformance over the field registry: every available Falco field is exercised
on a real OTLP record with a value we know, and every unavailable one makes a rule "cannot run
on this sensor" with the field named."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest

from otelguard.processors.detection import fields
from otelguard.processors.detection.fields import FIELDS
from otelguard.processors.detection.loader import load_rules_text

from .casefile import BASE_TIME, merge
from .records import CONNECT, EXEC, OPEN, fires

EXEC_FULL = merge(EXEC, {"attrs": {
    "process.vpid": 7, "process.session_leader.pid": 4000,
    "otelguard.process.session_leader.executable.name": "tmux",
    "otelguard.process.duration_ns": 9_000_000_000,
    "otelguard.process.exe_from_memfd": False, "otelguard.process.exe_upper_layer": True,
    "otelguard.process.exe_deleted": False, "otelguard.process.login_uid": 1000,
    "otelguard.process.cap_permitted": ["CAP_NET_RAW"], "otelguard.process.group.id": 100,
    "otelguard.process.group.name": "users", "otelguard.process.ancestor_pids": [4200, 4100, 1],
    "otelguard.process.parent.executable.path": "/usr/bin/python3",
}, "resource": {"otelguard.k8s.pod.privileged": True, "k8s.pod.ip": "10.244.0.9",
                "k8s.pod.label.app": "web", "k8s.node.name": "node-1",
                "container.name": "web", "container.image.tags": ["1.27"],
                "otelguard.k8s.container.mounts": [
                    "/proc:/host/proc:ro:false:rprivate",
                    "/var/lib/kubelet/pods/u/volumes/kubernetes.io~configmap/cfg:/etc/app::true:"
                    "rprivate"],
                "otelguard.k8s.container.liveness_probe": ["bash", "-c",
                                                           "echo aGVsbG8= | base64 -d"],
                "otelguard.k8s.container.readiness_probe": ["cat", "/tmp/ready"]}})
ACCEPT = merge(CONNECT, {"event": "otelguard.network.accept", "attrs": {
    "otelguard.syscall.name": "accept4", "otelguard.syscall.ret": 5, "error.type": None,
    "otelguard.peer.k8s.service.name": "frontend", "otelguard.peer.k8s.namespace.name": "shop"}})
SENDTO = merge(CONNECT, {"event": "otelguard.dns.query", "attrs": {
    "otelguard.syscall.name": "sendto", "otelguard.syscall.ret": 40, "error.type": None,
    "network.transport": "udp", "server.address": "kubernetes.default.svc.cluster.local"}})
SYMLINK = {"event": "otelguard.file.symlink", "attrs": {
    "otelguard.syscall.name": "symlinkat", "otelguard.syscall.ret": 0, "file.path": "/tmp/l",
    "file.symbolic_link.target_path": "/etc/shadow", "file.mode": "0755"}}
CREATE_EXEC = merge(OPEN, {"attrs": {"otelguard.syscall.ret": 3, "error.type": None,
                                     "file.mode": "0755"}})

# field -> (record, condition that must be true on it)
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "evt.type": (EXEC, "evt.type = execve"),
    "syscall.type": (EXEC, "syscall.type = execve"),
    "evt.dir": (EXEC, "evt.dir = <"),
    "evt.res": (EXEC, "evt.res = SUCCESS"),
    "evt.rawres": (EXEC, "evt.rawres = 0"),
    "evt.failed": (OPEN, "evt.failed = true"),
    "evt.is_open_read": (OPEN, "evt.is_open_read = false"),
    "evt.is_open_write": (OPEN, "evt.is_open_write = true"),
    "evt.is_open_create": (OPEN, "evt.is_open_create = true"),
    "evt.is_open_exec": (CREATE_EXEC, "evt.is_open_exec = true"),
    "evt.arg": (SYMLINK, "evt.arg.target = /etc/shadow and evt.arg[linkpath] = /tmp/l"),
    "evt.rawarg": (SYMLINK, "evt.rawarg.target = /etc/shadow"),
    "evt.args": (SYMLINK, "evt.args contains 'target=/etc/shadow'"),
    "evt.time": (EXEC, "evt.time endswith .000000000"),
    "evt.time.iso8601": (EXEC, "evt.time.iso8601 startswith 2025-10-09T"),
    "evt.datetime": (EXEC, "evt.datetime startswith '2025-10-09 '"),
    "evt.rawtime": (EXEC, f"evt.rawtime = {BASE_TIME}"),
    "evt.num": (EXEC, "evt.num = 1"),
    "evt.hostname": (EXEC, "evt.hostname = node-1"),
    "evt.source": (EXEC, "evt.source = syscall"),
    "proc.name": (EXEC, "proc.name = bash"),
    "proc.exe": (EXEC, "proc.exe = bash"),
    "proc.exepath": (EXEC, "proc.exepath = /usr/bin/bash"),
    "proc.args": (EXEC, "proc.args = '-c echo aGVsbG8= | base64 -d'"),
    "proc.cmdline": (EXEC, "proc.cmdline = 'bash -c echo aGVsbG8= | base64 -d'"),
    "proc.pname": (EXEC, "proc.pname = python3"),
    "proc.pcmdline": (EXEC, "proc.pcmdline startswith 'python3 /srv'"),
    "proc.pexe": (EXEC, "proc.pexe = /usr/bin/python3"),
    "proc.pexepath": (EXEC_FULL, "proc.pexepath = /usr/bin/python3"),
    "proc.aname": (EXEC, "proc.aname[2] = gunicorn and proc.aname = containerd-shim"),
    "proc.apid": (EXEC_FULL, "proc.apid[1] = 4200 and proc.apid[3] = 1 and proc.apid = 4100"),
    "proc.aexepath": (EXEC_FULL, "proc.aexepath[1] = /usr/bin/python3"),
    "proc.aexe": (EXEC, "proc.aexe[1] = /usr/bin/python3 and proc.aexe[0] = bash"),
    "proc.pid": (EXEC, "proc.pid = 4242"),
    "proc.ppid": (EXEC, "proc.ppid = 4200"),
    "proc.vpid": (EXEC_FULL, "proc.vpid = 7"),
    "proc.vpgid": (merge(EXEC_FULL, {"attrs": {"otelguard.process.vpgid": 5}}), "proc.vpgid = 5"),
    "proc.is_vpgid_leader": (merge(EXEC_FULL, {"attrs": {"otelguard.process.vpgid": 7}}),
                             "proc.is_vpgid_leader = true"),
    "thread.tid": (EXEC, "thread.tid = 4242"),
    "proc.cwd": (EXEC, "proc.cwd = /dev/shm/"),
    "proc.tty": (EXEC, "proc.tty = 0"),
    "proc.duration": (EXEC_FULL, "proc.duration > 5000000000"),
    "proc.sname": (EXEC_FULL, "proc.sname = tmux"),
    # every variable followed by a space, as Falco; [NAME] is the value, exact name
    "proc.env": (merge(EXEC_FULL, {"attrs": {"otelguard.process.env": [
        "LD_PRELOAD=/tmp/x.so", "http_proxy=http://p:3128"]}}),
        "proc.env = 'LD_PRELOAD=/tmp/x.so http_proxy=http://p:3128 ' "
        "and proc.env[LD_PRELOAD] = /tmp/x.so and proc.env[http_proxy] = 'http://p:3128' "
        "and proc.env[HTTP_PROXY] = '' and proc.env icontains HTTP_PROXY"),
    "proc.sid": (EXEC_FULL, "proc.sid = 4000"),
    "proc.is_exe_from_memfd": (EXEC_FULL, "proc.is_exe_from_memfd = false"),
    "proc.is_exe_upper_layer": (EXEC_FULL, "proc.is_exe_upper_layer = true"),
    "proc.exe_deleted": (EXEC_FULL, "proc.exe_deleted = false"),
    "proc.is_container_healthcheck": (EXEC_FULL, "proc.is_container_healthcheck = false"),
    "proc.is_container_liveness_probe": (EXEC_FULL, "proc.is_container_liveness_probe = true"),
    "proc.is_container_readiness_probe": (EXEC_FULL, "proc.is_container_readiness_probe = false"),
    "thread.cap_effective": (EXEC, "thread.cap_effective = 'CAP_CHOWN CAP_SYS_ADMIN'"),
    "thread.cap_permitted": (EXEC_FULL, "thread.cap_permitted contains CAP_NET_RAW"),
    "user.uid": (EXEC, "user.uid = 1000"),
    "user.name": (EXEC, "user.name = Alice"),
    "user.loginuid": (EXEC_FULL, "user.loginuid = 1000"),
    "user.loginname": (EXEC_FULL, "user.loginname = Alice"),
    "group.gid": (EXEC_FULL, "group.gid = 100"),
    "group.name": (EXEC_FULL, "group.name = users"),
    "fd.name": (OPEN, "fd.name = /etc/ld.so.preload"),
    "fd.nameraw": (OPEN, "fd.nameraw = /etc/ld.so.preload"),
    "fd.directory": (OPEN, "fd.directory = /etc"),
    "fd.filename": (OPEN, "fd.filename = ld.so.preload"),
    "fd.type": (OPEN, "fd.type = file"),
    "fd.typechar": (CONNECT, "fd.typechar = 4"),
    "fd.num": (OPEN, "fd.num = -1"),
    "fd.sockfamily": (CONNECT, "fd.sockfamily = ip"),
    "fd.l4proto": (SENDTO, "fd.l4proto = udp"),
    "fd.cip": (ACCEPT, "fd.cip = 192.168.7.9"),
    "fd.cport": (ACCEPT, "fd.cport = 5432"),
    "fd.sip": (ACCEPT, "fd.sip = 10.1.2.3"),
    "fd.sport": (ACCEPT, "fd.sport = 40000"),
    "fd.lip": (ACCEPT, "fd.lip = 10.1.2.3"),
    "fd.lport": (ACCEPT, "fd.lport = 40000"),
    "fd.rip": (ACCEPT, "fd.rip = 192.168.7.9"),
    "fd.rport": (ACCEPT, "fd.rport = 5432"),
    "fd.ip": (CONNECT, "fd.ip = 192.168.7.9"),
    "fd.port": (CONNECT, "fd.port in (40000)"),
    "fd.net": (CONNECT, "fd.net = 10.0.0.0/8"),
    "fd.cnet": (ACCEPT, "fd.cnet = 192.168.0.0/16"),
    "fd.snet": (ACCEPT, "fd.snet = 10.0.0.0/8"),
    "fd.lnet": (ACCEPT, "fd.lnet = 10.0.0.0/8"),
    "fd.rnet": (ACCEPT, "fd.rnet = 192.168.0.0/16"),
    "fd.sip.name": (SENDTO, "fd.sip.name = kubernetes.default.svc.cluster.local"),
    "fd.rip.name": (ACCEPT, "fd.rip.name = frontend.shop.svc.cluster.local"),
    "fd.cip.name": (ACCEPT, "fd.cip.name = frontend.shop.svc.cluster.local"),
    "fd.connected": (SENDTO, "fd.connected = false"),
    "fd.name_changed": (SENDTO, "fd.name_changed = true"),
    "fd.is_server": (ACCEPT, "fd.is_server = true"),
    "container.id": (EXEC, "container.id = 3f4e5d6c7b8a"),
    "container.full_id": (EXEC, "container.full_id startswith 3f4e5d6c7b8a99"),
    "container.name": (EXEC_FULL, "container.name = web"),
    "container.image.repository": (EXEC, "container.image.repository = docker.io/library/nginx"),
    "container.image.tag": (EXEC, "container.image.tag = '1.27'"),
    "container.image": (EXEC, "container.image = docker.io/library/nginx:1.27"),
    "container.privileged": (EXEC_FULL, "container.privileged = true"),
    "container.mounts": (EXEC_FULL, "container.mounts startswith '/proc:/host/proc:ro:false:'"),
    "container.mount": (EXEC_FULL, "container.mount[0] = '/proc:/host/proc:ro:false:rprivate' "
                        "and container.mount[/nope] = none"),
    "container.mount.source": (EXEC_FULL, "container.mount.source[/etc/*] endswith ~configmap/cfg"),
    "container.mount.dest": (EXEC_FULL, "container.mount.dest[/proc*] = /host/proc and "
                             "container.mount.dest[/etc] = N/A"),
    "container.mount.mode": (EXEC_FULL, "container.mount.mode[/proc] = ro"),
    "container.mount.rdwr": (EXEC_FULL, "container.mount.rdwr[1] = true"),
    "container.mount.propagation": (EXEC_FULL, "container.mount.propagation[0] = rprivate"),
    "k8s.ns.name": (EXEC, "k8s.ns.name = shop"),
    "k8s.pod.name": (EXEC, "k8s.pod.name startswith web-"),
    "k8s.pod.uid": (EXEC, "k8s.pod.uid startswith 0b7a6c1e"),
    "k8s.pod.ip": (EXEC_FULL, "k8s.pod.ip = 10.244.0.9"),
    "k8s.pod.labels": (EXEC_FULL, "k8s.pod.labels contains app:web"),
    "k8s.pod.label": (EXEC_FULL, "k8s.pod.label[app] = web and k8s.pod.label.app = web"),
    "k8s.workload.name": (EXEC, "k8s.workload.name = web"),
    "k8s.node.name": (EXEC_FULL, "k8s.node.name = node-1"),
    # otelguard extensions: state-derived; a lone record has no history (sequences: rule cases)
    "proc.stdin_is_socket": (EXEC, "proc.stdin_is_socket = false"),
    "proc.stdout_is_socket": (EXEC, "proc.stdout_is_socket = false"),
    "proc.exe_written_recently": (EXEC, "proc.exe_written_recently = false"),
}


def test_every_field_has_a_case() -> None:
    available = {n for n, s in FIELDS.items() if s.available}
    assert sorted(available - set(CASES)) == [], "registered fields without a case"
    assert sorted(set(CASES) - available) == [], "cases for fields not registered"


def test_the_package_registers_every_field_class_module() -> None:
    """A field class module the package forgets to import would register its fields only when
    something happens to import it directly: importing every module must add nothing."""
    before = set(FIELDS)
    modules = [m.name for m in pkgutil.iter_modules(fields.__path__)]
    assert {"evt", "proc", "user", "fd", "container", "k8s"} <= set(modules)
    for name in modules:
        importlib.import_module(f"{fields.__name__}.{name}")
    assert sorted(set(FIELDS) - before) == [], "fields registered only on a direct import"


@pytest.mark.parametrize("field", sorted(CASES))
def test_field(field: str) -> None:
    record, cond = CASES[field]
    assert fires(cond, record), f"{field}: {cond}"
    assert not fires(f"not ({cond})", record)


@pytest.mark.parametrize("field", sorted(n for n, s in FIELDS.items() if not s.available))
def test_unavailable_field_makes_rule_cannot_run(field: str) -> None:
    arg = "[x]" if FIELDS[field].arg == "required" else ""
    text = f"""
- rule: r
  desc: d
  condition: not {field}{arg} exists
  output: o
  priority: INFO
"""
    rs = load_rules_text([("t.yaml", text)])
    assert rs.ok and [s.state for s in rs.statuses] == ["cannot-run"]
    assert field in rs.statuses[0].reason and not rs.rules


def _probe_syscalls() -> set[str]:
    """Every evt.type the sensor's probes put on records, read from their own tables and from
    the names their ``make_event`` calls and ``syscall = ...`` assignments spell."""
    import re
    from pathlib import Path

    from otelguard.ebpf import file, network, privilege, process
    from otelguard.processors.detection.fields.evt import _EVENT_TYPE_BY_NAME, _NOT_SYSCALLS

    names = {sc.name for sc in file.SYSCALLS} | set(network.VIA_SYSCALL.values())
    names |= {n for group in privilege.ID_SYSCALLS.values() for n in group}
    names |= set(privilege.KILL_SYSCALLS) | set(privilege.DUP_SYSCALLS)
    names |= set(process.SC_NAMES[:2])  # exec records; the rest are cwd tracking
    names |= set(_EVENT_TYPE_BY_NAME.values()) | set(_NOT_SYSCALLS.values())
    for path in Path(file.__file__).parent.glob("*.py"):
        if path.name == "probe.py":  # defines make_event
            continue
        text = path.read_text()
        calls = [m.group(1) for m in re.finditer(r"make_event\((.*?)\)\n", text, re.S)]
        calls += re.findall(r"syscall = (.*)\n", text)
        for call in calls:
            names |= {s for s in re.findall(r'"([a-z0-9_]+)"', call)}
    return names - {"exit", "exit_group"}  # a process exit is procexit, whatever ended it


def test_sensor_event_types_are_the_probes() -> None:
    assert fields.evt.SENSOR_EVENT_TYPES == _probe_syscalls()


def test_rule_on_event_types_never_emitted_cannot_run() -> None:
    text = """
- rule: never
  desc: d
  condition: evt.type in (recvfrom, recvmsg) and fd.type = ipv4
  output: o
  priority: INFO
- rule: partly
  desc: d
  condition: evt.type in (recvfrom, connect) and fd.type = ipv4
  output: o
  priority: INFO
"""
    rs = load_rules_text([("t.yaml", text)])
    assert rs.ok
    states = {s.name: (s.state, s.reason) for s in rs.statuses}
    assert states["never"][0] == "cannot-run"
    assert "recvfrom, recvmsg" in states["never"][1] and "never emitted" in states["never"][1]
    assert states["partly"] == ("loaded", "")  # connect records can fire it
    assert [r.name for r in rs.rules] == ["partly"] and rs.count("loaded") == 1
