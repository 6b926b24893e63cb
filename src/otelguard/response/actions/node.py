"""Node actions, carried out as root on the node that hosts the target (docs/response.md#actions).

- ``freeze_container``: the container's cgroup frozen (cgroup v2 ``cgroup.freeze`` when its
  cgroup is on the v2 hierarchy, else the v1 freezer's ``freezer.state``). Processes keep their
  memory and open files for forensics and use no CPU; revert thaws them.
- ``kill_process``: one process, named by pid AND start time (/proc/PID/stat field 22). The
  signal goes through a pidfd opened before the start time is checked, so a pid reused between
  the check and the signal is never hit. Not reversible.
- ``block_peer``: an nftables table of its own (``inet otelguard_block_<hash>``) in the pod's
  network namespace, rejecting (or dropping) traffic to and from one address (and port); revert
  deletes exactly that table. The namespace is found through a process of the container.

Each plans where it cannot see the container (a cluster's processor) too: the plan then names
the container (and pid with its creation time) and the node, and the agent there resolves the
cgroup, process or namespace at apply and makes the checks a plan on the node makes.

None needs kprobes or an LSM. Apply latency is a few ms (bench/response_actions.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Optional

from otelguard.config import Checks
from otelguard.response.actions.base import (
    ActionError, Change, Outcome, Target, build_params, params_json,
)
from otelguard.response.actions.diff import object_diff, unified
from otelguard.response.actions.host import (
    Host, NotOnThisHost, ProcStat, cgroup_pids, container_cgroup, container_netns, find_cgroup,
    netns_inode,
    nft_in_netns,
    proc_cmdline, proc_stat, start_time_matches,
)

# mode -> (state file, thawed value, frozen value)
_FREEZER = {"v2": ("cgroup.freeze", "0", "1"), "v1": ("freezer.state", "THAWED", "FROZEN")}


@dataclass(frozen=True)
class FreezeParams:
    # seconds apply and revert wait for the kernel to report the cgroup frozen / thawed
    timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "timeout_seconds")
        checks.done()


class FreezeContainer:
    """Freeze every process of a container (``Target.container_id``) in place."""

    name: ClassVar[str] = "freeze_container"
    where: ClassVar[Literal["node"]] = "node"
    Params: ClassVar[type[FreezeParams]] = FreezeParams
    reversible: ClassVar[bool] = True

    def __init__(self, host: Host = Host()) -> None:
        self.host = host

    def _locate(self, container_id: Optional[str]) -> tuple[str, Path]:
        if not container_id:
            raise ActionError("freeze_container needs the target's container id")
        root = self.host.cgroup2_root()
        path = find_cgroup(root, container_id) if root else None
        if path is not None and (path / "cgroup.freeze").exists():
            return "v2", path
        path = find_cgroup(self.host.freezer_v1, container_id)
        if path is not None and (path / "freezer.state").exists():
            return "v1", path
        raise NotOnThisHost(f"no freezable cgroup for container {container_id} on this node")

    @staticmethod
    def _state(mode: str, path: Path) -> str:
        """What the kernel reports now: v2 cgroup.events ``frozen``, v1 freezer.state."""
        if mode == "v2":
            for line in (path / "cgroup.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "frozen":
                    return value.strip()
            raise ActionError(f"{path}/cgroup.events has no 'frozen' line")
        return (path / "freezer.state").read_text().strip()

    def _view(self, mode: str, path: Path, state: str) -> dict[str, Any]:
        procs = []
        for pid in sorted(cgroup_pids(path)):
            st = proc_stat(self.host, pid)
            if st is not None:
                procs.append(f"{pid} {st.comm}")
        return {"cgroup": str(path), "freezer": _FREEZER[mode][0], "state": state,
                "processes": procs}

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(FreezeParams, params, self.name)
        try:
            mode, path = self._locate(target.container_id)
        except NotOnThisHost:
            if not target.node:
                raise
            return self._plan_off_node(target, p)
        state = self._state(mode, path)
        frozen = _FREEZER[mode][2]
        view = self._view(mode, path, state)
        after = {**view, "state": frozen}
        return Change(
            self.name, target, params_json(p),
            summary=(f"freeze container {target.container_id} ({len(view['processes'])} "
                     f"processes, cgroup {mode})" if state != frozen
                     else f"container {target.container_id} is already frozen: no change"),
            diff=object_diff(view, after, f"node/cgroup{path}"), where="node",
            planned_state={"mode": mode, "path": str(path), "inode": os.stat(path).st_ino,
                           "state": state})

    def _plan_off_node(self, target: Target, p: FreezeParams) -> Change:
        """A cluster's processor does not see the node's cgroups: the plan names the container,
        and the agent on ``target.node`` finds its cgroup at apply (see ``apply``)."""
        cid = target.container_id or ""
        view = {"node": target.node, "pod": f"{target.namespace}/{target.pod}",
                "container": cid, "cgroup": "resolved on the node at apply", "state": "thawed"}
        return Change(
            self.name, target, params_json(p),
            summary=f"freeze container {cid[:12]} (pod {target.namespace}/{target.pod}) on node "
                    f"{target.node}; its cgroup is found there at apply",
            diff=object_diff(view, {**view, "state": "frozen"},
                             f"node/{target.node}/container/{cid[:12]}/cgroup"),
            where="node", planned_state={"mode": None, "path": None, "inode": None,
                                         "state": None})

    def _set(self, mode: str, path: Path, value: str, timeout: float) -> None:
        (path / _FREEZER[mode][0]).write_text(value)
        deadline = time.monotonic() + timeout
        while self._state(mode, path) != value:
            if time.monotonic() > deadline:
                raise ActionError(f"{path} did not reach {value} within {timeout:.1f}s")
            time.sleep(0.005)

    def apply(self, change: Change) -> Outcome:
        ps = change.planned_state
        mode, path = self._locate(change.target.container_id)
        inode = os.stat(path).st_ino
        if ps["path"] is not None and (str(path) != ps["path"] or inode != ps["inode"]):
            raise ActionError(f"container {change.target.container_id}'s cgroup changed since "
                              f"plan ({ps['path']} -> {path})")
        state = self._state(mode, path)
        if ps["state"] is not None and state != ps["state"]:
            raise ActionError(f"{path} is {state} now, planned from {ps['state']}")
        frozen = _FREEZER[mode][2]
        if state == frozen:
            return Outcome(True, "already frozen: nothing done", {})
        timeout = float(change.params.get("timeout_seconds", 5.0))
        try:
            self._set(mode, path, frozen, timeout)
        except ActionError:
            (path / _FREEZER[mode][0]).write_text(_FREEZER[mode][1])
            raise
        return Outcome(True, f"froze {path}",
                       {"mode": mode, "path": str(path), "inode": inode,
                        "thawed": _FREEZER[mode][1], "timeout_seconds": timeout})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        rs = outcome.revert_state
        if not rs:
            return Outcome(True, "apply changed nothing: nothing to revert")
        path = Path(rs["path"])
        try:
            if os.stat(path).st_ino != rs["inode"]:
                return Outcome(True, f"{path} is another cgroup now: left alone")
        except FileNotFoundError:
            return Outcome(True, f"{path} is gone: nothing to thaw")
        self._set(rs["mode"], path, rs["thawed"], float(rs["timeout_seconds"]))
        return Outcome(True, f"thawed {path}")


@dataclass(frozen=True)
class KillParams:
    signal: Literal["SIGKILL", "SIGTERM"] = "SIGKILL"  # the signal sent
    wait_seconds: float = 5.0  # how long apply waits for the process to exit (0: do not wait)

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 0, "wait_seconds")
        checks.done()


class KillProcess:
    """Signal one process, checked against ``Target.pid`` and its start time: the planned
    /proc start ticks, else ``Target.process_start_ticks``, else the record's
    ``Target.process_creation_time`` (host.start_time_matches).

    Planned where the container is not visible (a cluster's processor; the agent on
    ``Target.node`` applies), the plan names the pid, its creation time and the container, and
    apply makes every check there, through the pidfd, as a plan on the node would have."""

    name: ClassVar[str] = "kill_process"
    where: ClassVar[Literal["node"]] = "node"
    Params: ClassVar[type[KillParams]] = KillParams
    reversible: ClassVar[bool] = False

    def __init__(self, host: Host = Host()) -> None:
        self.host = host

    @staticmethod
    def _needs(target: Target) -> int:
        if target.pid is None or (target.process_start_ticks is None
                                  and not target.process_creation_time):
            raise ActionError("kill_process needs the target's pid and process start time")
        return target.pid

    def _check(self, target: Target, start_ticks: Optional[int] = None) -> ProcStat:
        pid = self._needs(target)
        st = proc_stat(self.host, pid)
        if st is None:
            raise ActionError(f"process {pid} has exited")
        ticks = start_ticks if start_ticks is not None else target.process_start_ticks
        if ticks is not None and st.start_ticks != ticks:
            raise ActionError(
                f"pid {pid} is another process now (start time {st.start_ticks}, "
                f"the detection's was {ticks}): refused")
        if ticks is None and not start_time_matches(st, str(target.process_creation_time)):
            raise ActionError(
                f"pid {pid} is another process now (start time {st.start_ticks} ticks, the "
                f"detection's was {target.process_creation_time}): refused")
        if target.container_id:
            try:
                cgroups = (self.host.proc / str(target.pid) / "cgroup").read_text()
            except OSError:
                cgroups = ""
            if target.container_id not in cgroups:
                raise ActionError(f"pid {target.pid} is not in container {target.container_id}")
        return st

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(KillParams, params, self.name)
        self._needs(target)
        if target.node and target.container_id and \
                container_cgroup(self.host, target.container_id) is None:
            return self._plan_off_node(target, p)
        st = self._check(target)
        view = {"pid": st.pid, "start_ticks": st.start_ticks, "comm": st.comm,
                "cmdline": proc_cmdline(self.host, st.pid), "container": target.container_id,
                "state": "running"}
        return Change(
            self.name, target, params_json(p),
            summary=(f"send {p.signal} to pid {st.pid} ({st.comm}); NOT reversible"),
            diff=object_diff(view, {**view, "state": f"killed by {p.signal}"},
                             f"node/process/{st.pid}"),
            where="node", planned_state={"start_ticks": st.start_ticks})

    def _plan_off_node(self, target: Target, p: KillParams) -> Change:
        cid = target.container_id or ""
        when = target.process_creation_time or f"{target.process_start_ticks} ticks"
        view = {"node": target.node, "pod": f"{target.namespace}/{target.pod}",
                "container": cid, "pid": target.pid, "started": when,
                "executable": target.executable, "state": "running"}
        return Change(
            self.name, target, params_json(p),
            summary=f"send {p.signal} to pid {target.pid} ({target.executable}) in container "
                    f"{cid[:12]} on node {target.node}; the node checks its start time and "
                    f"container at apply; NOT reversible",
            diff=object_diff(view, {**view, "state": f"killed by {p.signal}"},
                             f"node/{target.node}/process/{target.pid}"),
            where="node", planned_state={"start_ticks": None})

    def apply(self, change: Change) -> Outcome:
        target = change.target
        assert target.pid is not None
        try:
            pidfd = os.pidfd_open(target.pid)
        except ProcessLookupError:
            raise ActionError(f"process {target.pid} has exited") from None
        try:
            # The pidfd now pins the process that had this pid; if its start time is the planned
            # one, it is the detection's process and the signal cannot reach a successor.
            self._check(target, change.planned_state.get("start_ticks"))
            sig = signal.Signals[str(change.params.get("signal", "SIGKILL"))]
            signal.pidfd_send_signal(pidfd, sig)
            wait = float(change.params.get("wait_seconds", 5.0))
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            exited = bool(poller.poll(wait * 1000)) if wait > 0 else False
        finally:
            os.close(pidfd)
        state = "exited" if exited else "signalled (not yet exited)"
        return Outcome(True, f"sent {sig.name} to pid {target.pid}: {state}", {})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        return Outcome(False, "kill_process is not reversible: the process is gone")


@dataclass(frozen=True)
class BlockParams:
    mode: Literal["reject", "drop"] = "reject"  # reject: the pod sees a refusal at once
    all_ports: bool = False  # block every port of the peer even when the target names one
    # allow a target whose network namespace is the host's (the block then applies node-wide)
    allow_host_netns: bool = False


class BlockPeer:
    """Block ``Target.peer_address`` (and ``peer_port``) inside the pod's network namespace.

    Planned where the container is visible, the plan names its network namespace (inode) and
    apply refuses another one. Planned elsewhere (a cluster's processor proposes; the agent on
    ``Target.node`` applies), the plan names the container and the node, and apply resolves the
    container's namespace there, refusing the host's as plan would have."""

    name: ClassVar[str] = "block_peer"
    where: ClassVar[Literal["node"]] = "node"
    Params: ClassVar[type[BlockParams]] = BlockParams
    reversible: ClassVar[bool] = True

    def __init__(self, host: Host = Host()) -> None:
        self.host = host

    def _netns(self, target: Target) -> tuple[int, int]:
        if target.container_id:
            return container_netns(self.host, target.container_id)
        if target.pid is not None:
            st = proc_stat(self.host, target.pid)
            ino = netns_inode(self.host, target.pid)
            if st is None or ino is None or (target.process_start_ticks is not None
                                             and st.start_ticks != target.process_start_ticks):
                raise ActionError(f"process {target.pid} is gone: no network namespace")
            return target.pid, ino
        raise ActionError("block_peer needs the target's container id or pid")

    @staticmethod
    def script(table: str, address: str, port: Optional[int], mode: str) -> str:
        """The nft script that creates the table (also what the diff shows)."""
        ip = "ip6" if ipaddress.ip_address(address).version == 6 else "ip"
        verdict_tcp = "reject with tcp reset" if mode == "reject" else "drop"
        verdict = "reject" if mode == "reject" else "drop"
        if port is None:
            out = [f"{ip} daddr {address} meta l4proto tcp {verdict_tcp}",
                   f"{ip} daddr {address} {verdict}"]
            # new connections from the peer; the resets "reject" sends back are not new
            into = [f"{ip} saddr {address} ct state new drop"]
        else:
            out = [f"{ip} daddr {address} tcp dport {port} {verdict_tcp}",
                   f"{ip} daddr {address} udp dport {port} {verdict}"]
            into = []
        lines = [f"table inet {table} {{",
                 "\tchain egress {", "\t\ttype filter hook output priority filter; policy accept;",
                 *(f"\t\t{r}" for r in out), "\t}"]
        if into:
            lines += ["\tchain ingress {",
                      "\t\ttype filter hook input priority filter; policy accept;",
                      *(f"\t\t{r}" for r in into), "\t}"]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def plan(self, target: Target, params: Mapping[str, Any]) -> Change:
        p = build_params(BlockParams, params, self.name)
        if not target.peer_address:
            raise ActionError("block_peer needs the target's peer address")
        try:
            address = str(ipaddress.ip_address(target.peer_address))
        except ValueError:
            raise ActionError(f"peer address {target.peer_address!r} is not an IP address") from None
        port = None if p.all_ports else target.peer_port
        where = f"{address}:{port}" if port is not None else address
        try:
            pid, inode = self._netns(target)
        except NotOnThisHost:
            if not target.node:
                raise
            # planned off the node: the namespace is the container's, resolved at apply there
            key = f"{target.container_id}|{address}|{port}"
            table = "otelguard_block_" + hashlib.sha256(key.encode()).hexdigest()[:12]
            script = self.script(table, address, port, p.mode)
            cid = (target.container_id or "")[:12]
            return Change(
                self.name, target, params_json(p),
                summary=f"{p.mode} traffic with {where} in the netns of container {cid} on "
                        f"node {target.node} (nft table inet {table})",
                diff=unified([], script.splitlines(),
                             f"node/{target.node}/container/{cid}/nft/inet/{table}", created=True),
                where="node", planned_state={"netns": None, "table": table, "script": script})
        self._refuse_host_netns(inode, p.allow_host_netns)
        key = f"{inode}|{address}|{port}"
        table = "otelguard_block_" + hashlib.sha256(key.encode()).hexdigest()[:12]
        script = self.script(table, address, port, p.mode)
        return Change(
            self.name, target, params_json(p),
            summary=f"{p.mode} traffic with {where} in netns {inode} (nft table inet {table})",
            diff=unified([], script.splitlines(), f"node/netns/{inode}/nft/inet/{table}",
                         created=True),
            where="node", planned_state={"netns": inode, "table": table, "script": script})

    def _refuse_host_netns(self, inode: int, allowed: bool) -> None:
        # the host's: pid 1's (unreadable in some sandboxes) or ours (the agent is hostNetwork)
        if inode in (netns_inode(self.host, 1), netns_inode(self.host, os.getpid())) \
                and not allowed:
            raise ActionError("the target is in the host's network namespace: blocking there "
                              "affects the whole node (set allow_host_netns to do it anyway)")

    def apply(self, change: Change) -> Outcome:
        ps = change.planned_state
        pid, inode = self._netns(change.target)
        if ps["netns"] is None:  # planned off the node (see the class docstring)
            self._refuse_host_netns(inode, bool(change.params.get("allow_host_netns")))
        elif inode != ps["netns"]:
            raise ActionError(f"the target's network namespace changed since plan "
                              f"({ps['netns']} -> {inode})")
        if nft_in_netns(self.host, pid, inode, ["list", "table", "inet", ps["table"]]).returncode == 0:
            raise ActionError(f"nft table inet {ps['table']} already exists in netns {inode}")
        res = nft_in_netns(self.host, pid, inode, ["-f", "-"], ps["script"])
        if res.returncode != 0:
            raise ActionError(f"nft failed in netns {inode}: {res.stderr.strip()}")
        return Outcome(True, f"created nft table inet {ps['table']} in netns {inode}",
                       {"netns": inode, "pid": pid, "table": ps["table"]})

    def revert(self, change: Change, outcome: Outcome) -> Outcome:
        rs = outcome.revert_state
        pid, inode = int(rs["pid"]), int(rs["netns"])
        if netns_inode(self.host, pid) != inode:
            try:
                pid, inode = self._netns(change.target)
            except ActionError:
                return Outcome(True, f"network namespace {rs['netns']} is gone with its table")
            if inode != rs["netns"]:
                return Outcome(True, f"network namespace {rs['netns']} is gone with its table")
        res = nft_in_netns(self.host, pid, inode, ["delete", "table", "inet", rs["table"]])
        if res.returncode != 0 and "No such file or directory" not in res.stderr:
            raise ActionError(f"nft delete table inet {rs['table']} failed: {res.stderr.strip()}")
        return Outcome(True, f"deleted nft table inet {rs['table']} in netns {inode}")
