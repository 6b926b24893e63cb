"""Hand-made event streams shaped like the sensor's output, shared by exporter tests and benches."""

from __future__ import annotations

import queue
from typing import Sequence

from otelguard import semconv as sc
from otelguard.ebpf.events import Event
from otelguard.exporter.settings import NodeIdentity

CID = "3f" * 32
POD = "0d6c9a4e-2f6b-4b8e-9a51-8f0c6a1d2e33"
T0 = 1_763_900_000_000_000_000
NODE = NodeIdentity("node-a", "host-a", "4f1c0e6c9d1e4a37b3a2a1c6d9e8f7a0")
OBSERVED = T0 + 10**9  # the builder's clock in golden tests


def proc_attrs(pid: int, ppid: int, exe: str, path: str, uid: int = 0) -> dict[str, object]:
    return {
        sc.PROCESS_PID: pid,
        sc.PROCESS_PARENT_PID: ppid,
        sc.PROCESS_EXECUTABLE_NAME: exe,
        sc.PROCESS_EXECUTABLE_PATH: path,
        sc.PROCESS_COMMAND_LINE: f"{path} --flag",
        sc.PROCESS_USER_ID: uid,
        sc.PROCESS_USER_NAME: "root" if uid == 0 else "app",
        sc.PROCESS_WORKING_DIRECTORY: "/app",
        sc.PROCESS_ANCESTORS: ["bash", "containerd-shim"],
    }


def ev(name: str, t: int, pid: int, syscall: str, ret: int, attrs: dict[str, object],
       container: bool = True, start: int = 0, root: tuple[int, int] = (0, 0), body: str = "") -> Event:
    return Event(
        name=name, time_ns=T0 + t, pid=pid, tid=pid, syscall=syscall, ret=ret,
        container_id=CID if container else "", pod_uid=POD if container else "",
        process_start_ns=T0 + start, root_pid=root[0], root_start_ns=T0 + root[1] if root[0] else 0,
        attrs=attrs, body=body,  # type: ignore[arg-type]
    )


def shell_session() -> list[Event]:
    """bash (root of the trace) runs curl, which connects out; then a host process opens a file;
    then cron (long-lived) spawns a job that starts a new trace."""
    bash = proc_attrs(100, 1, "bash", "/usr/bin/bash")
    curl = proc_attrs(101, 100, "curl", "/usr/bin/curl", uid=1000)
    net = {sc.NETWORK_TRANSPORT: "tcp", sc.NETWORK_TYPE: "ipv4",
           sc.NETWORK_PEER_ADDRESS: "10.0.0.7", sc.NETWORK_PEER_PORT: 443,
           sc.NETWORK_LOCAL_ADDRESS: "10.0.0.2", sc.NETWORK_LOCAL_PORT: 40001}
    cron = proc_attrs(300, 1, "cron", "/usr/sbin/cron")
    job = proc_attrs(301, 300, "sh", "/bin/sh")
    return [
        ev(sc.EV_PROCESS_EXEC, 0, 100, "execve", 0, bash, start=0, root=(100, 0),
           body="exec /usr/bin/bash by uid 0"),
        ev(sc.EV_PROCESS_EXEC, 1000, 101, "execve", 0, curl, start=900, root=(100, 0),
           body="exec /usr/bin/curl by uid 1000"),
        ev(sc.EV_NETWORK_CONNECT, 2000, 101, "connect", 0, {**curl, **net}, start=900, root=(100, 0),
           body="connect 10.0.0.7:443"),
        ev(sc.EV_FILE_OPEN, 2500, 101, "openat", 3,
           {**curl, sc.FILE_PATH: "/etc/ssl/certs/ca.pem", sc.FILE_OPEN_FLAGS: "O_RDONLY"},
           start=900, root=(100, 0)),
        ev(sc.EV_NETWORK_CONNECT, 2600, 101, "connect", -111,
           {**curl, **net, sc.NETWORK_PEER_PORT: 8443, sc.ERROR_TYPE: "ECONNREFUSED"},
           start=900, root=(100, 0)),
        ev(sc.EV_NETWORK_CLOSE, 5000, 0, "", 0, dict(net), container=False),
        ev(sc.EV_PROCESS_EXIT, 6000, 101, "exit_group", 0, {**curl, sc.PROCESS_EXIT_CODE: 0},
           start=900, root=(100, 0)),
        ev(sc.EV_FILE_OPEN, 7000, 55, "openat", -13,
           {**proc_attrs(55, 1, "sshd", "/usr/sbin/sshd"), sc.FILE_PATH: "/etc/shadow",
            sc.FILE_OPEN_FLAGS: "O_RDONLY", sc.ERROR_TYPE: "EACCES"},
           container=False, start=-10_000),
        ev(sc.EV_PROCESS_EXEC, 8000, 300, "execve", 0, cron, start=8000, root=(300, 8000)),
        ev(sc.EV_PROCESS_EXEC, 9000, 301, "execve", 0, job, start=8900, root=(301, 8900)),
    ]


def sorted_attrs(req: object) -> object:
    """Attributes are a map in OTLP: the wire path writes list values last."""
    for rl in req.resource_logs:  # type: ignore[attr-defined]
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                kvs = sorted(rec.attributes, key=lambda kv: kv.key)
                copies = [type(kv)() for kv in kvs]
                for c, kv in zip(copies, kvs):
                    c.CopyFrom(kv)
                del rec.attributes[:]
                rec.attributes.extend(copies)
    return req


class QueueSource:
    """Shaped like Sensor.drain(max_events, timeout_s)."""

    def __init__(self) -> None:
        self.q: "queue.Queue[Event]" = queue.Queue()

    def __call__(self, max_events: int, timeout_s: float) -> Sequence[Event]:
        out: list[Event] = []
        try:
            out.append(self.q.get(timeout=timeout_s) if timeout_s > 0 else self.q.get_nowait())
            while len(out) < max_events:
                out.append(self.q.get_nowait())
        except queue.Empty:
            pass
        return out
