"""Node actions on the real kernel, against fake kubepods containers (tests/ebpf/containers.py):
a frozen cgroup's processes stop using CPU and resume on revert; a kill hits the named process
and refuses a pid whose start time differs; an nft block in the pod's netns refuses the peer
(measured) while other peers and the host stay reachable, and revert removes exactly it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from otelguard.response.actions.base import ActionError, Change, Target
from otelguard.response.actions.host import Host, parse_creation_time, proc_stat, ticks_to_wall_ns
from otelguard.response.actions.node import BlockPeer, FreezeContainer, KillProcess
from tests.ebpf.containers import Container, container
from tests.support.polling import wait_for

pytestmark = pytest.mark.kernel

BUSY = [sys.executable, "-c", "while True: pass"]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def start_ticks(pid: int) -> int:
    st = proc_stat(Host(), pid)
    assert st is not None
    return st.start_ticks


@pytest.fixture
def box() -> Iterator[Container]:
    with container() as c:
        yield c


def test_freeze_stops_the_container_and_revert_resumes_it(box: Container) -> None:
    busy = box.popen(BUSY)
    other = subprocess.Popen(BUSY)  # outside the container: must keep running
    try:
        wait_for(lambda: cpu_ticks(busy.pid) > 5, 10, "the busy loop to run")
        action = FreezeContainer()
        change = action.plan(Target(container_id=box.container_id), {})
        assert change.planned_state["mode"] == "v2"  # the fake containers live on cgroup v2
        assert "-state: '0'" in change.diff and "+state: '1'" in change.diff
        assert f"{busy.pid} python" in change.diff
        assert (box.path / "cgroup.freeze").read_text().strip() == "0"  # plan changed nothing

        outcome = action.apply(change)
        assert outcome.ok and (box.path / "cgroup.freeze").read_text().strip() == "1"
        before, other_before = cpu_ticks(busy.pid), cpu_ticks(other.pid)
        time.sleep(0.5)
        assert cpu_ticks(busy.pid) == before  # frozen: not one tick more
        assert cpu_ticks(other.pid) > other_before
        assert proc_stat(Host(), busy.pid) is not None  # alive, memory kept

        assert action.revert(change, outcome).ok
        wait_for(lambda: cpu_ticks(busy.pid) > before + 5, 10, "the thawed loop to run again")
        assert action.revert(change, outcome).ok  # twice is harmless
        assert (box.path / "cgroup.freeze").read_text().strip() == "0"
    finally:
        other.kill()
        other.wait()


def test_freeze_apply_refuses_a_cgroup_that_moved_since_plan(box: Container) -> None:
    action = FreezeContainer()
    change = action.plan(Target(container_id=box.container_id), {})
    (box.path / "cgroup.freeze").write_text("1")  # someone froze it meanwhile
    wait_for(lambda: "frozen 1" in (box.path / "cgroup.events").read_text(), 5, "frozen")
    with pytest.raises(ActionError, match="is 1 now, planned from 0"):
        action.apply(change)
    (box.path / "cgroup.freeze").write_text("0")


def test_freeze_uses_the_v1_freezer_when_the_cgroup_is_only_there() -> None:
    cid = uuid.uuid4().hex * 2
    path = Path("/sys/fs/cgroup/freezer") / f"otelguard-test-{cid[:8]}" / cid
    if not Path("/sys/fs/cgroup/freezer/cgroup.procs").exists():
        pytest.skip("this host has no cgroup v1 freezer hierarchy")
    path.mkdir(parents=True)
    busy = subprocess.Popen(BUSY)
    try:
        (path / "cgroup.procs").write_text(str(busy.pid))
        action = FreezeContainer()
        change = action.plan(Target(container_id=cid), {"timeout_seconds": 2})
        assert change.planned_state["mode"] == "v1" and "+state: FROZEN" in change.diff
        outcome = action.apply(change)
        before = cpu_ticks(busy.pid)
        time.sleep(0.3)
        assert cpu_ticks(busy.pid) == before
        action.revert(change, outcome)
        assert (path / "freezer.state").read_text().strip() == "THAWED"
        wait_for(lambda: cpu_ticks(busy.pid) > before, 10, "the thawed loop to run")
    finally:
        busy.kill()
        busy.wait()
        path.rmdir()
        path.parent.rmdir()


def test_freeze_of_an_unknown_container_is_refused() -> None:
    with pytest.raises(ActionError, match="no freezable cgroup"):
        FreezeContainer().plan(Target(container_id="f" * 64), {})


def test_kill_hits_the_named_process_only(box: Container) -> None:
    target_proc = box.popen(["sleep", "60"])
    sibling = box.popen(["sleep", "60"])
    try:
        action = KillProcess()
        target = Target(container_id=box.container_id, pid=target_proc.pid,
                        process_start_ticks=start_ticks(target_proc.pid))
        change = action.plan(target, {})
        assert "NOT reversible" in change.summary and "+state: killed by SIGKILL" in change.diff
        assert change.params == {"signal": "SIGKILL", "wait_seconds": 5.0}  # defaults filled in
        assert target_proc.poll() is None  # plan has no side effect
        outcome = action.apply(change)
        assert outcome.ok and "exited" in outcome.message
        assert target_proc.wait(5) == -9
        assert sibling.poll() is None
        assert not action.revert(change, outcome).ok
    finally:
        sibling.kill()
        sibling.wait()


def test_kill_refuses_a_pid_with_another_start_time(box: Container) -> None:
    victim = box.popen(["sleep", "60"])
    try:
        true_start = start_ticks(victim.pid)
        action = KillProcess()
        with pytest.raises(ActionError, match="another process now"):
            action.plan(Target(pid=victim.pid, process_start_ticks=true_start + 1), {})
        # Approved for one process; by apply time the pid names another (a reused pid).
        first = box.popen(["sleep", "60"])
        change = action.plan(Target(pid=first.pid, process_start_ticks=start_ticks(first.pid)), {})
        first.kill()
        first.wait()
        reused = Change(change.action, Target(pid=victim.pid,
                                              process_start_ticks=change.target.process_start_ticks),
                        change.params, change.summary, change.diff, "node", change.planned_state)
        with pytest.raises(ActionError, match="another process now"):
            action.apply(reused)
        assert victim.poll() is None
        with pytest.raises(ActionError, match="has exited"):
            action.apply(change)
        with pytest.raises(ActionError, match="not in container"):
            action.plan(Target(pid=os.getpid(), process_start_ticks=start_ticks(os.getpid()),
                               container_id=box.container_id), {})
    finally:
        victim.kill()
        victim.wait()


# -- block_peer: a pod netns on loopback addresses --

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

CLIENT = """
import json, socket, sys, time
out = {}
for arg in sys.argv[1:]:  # "dst" or "src>dst"
    src, _, addr = arg.rpartition(">")
    t = time.monotonic()
    try:
        socket.create_connection((addr, 8080), timeout=1,
                                 source_address=(src, 0) if src else None).close(); r = "ok"
    except ConnectionRefusedError: r = "refused"
    except OSError as e: r = type(e).__name__
    out[arg] = [r, round((time.monotonic() - t) * 1000, 2)]
print(json.dumps(out))
"""


def connect(ns: str, *addrs: str) -> dict[str, list[object]]:
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, *addrs],
                         capture_output=True, text=True, timeout=30, check=True)
    data: dict[str, list[object]] = json.loads(res.stdout)
    return data


@pytest.fixture
def pod_netns(box: Container) -> Iterator[tuple[Container, str]]:
    ns = f"otelguard-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        server = box.popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER],
                           stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        yield box, ns
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_block_peer_in_the_pods_netns(pod_netns: tuple[Container, str]) -> None:
    box, ns = pod_netns
    assert {r[0] for r in connect(ns, "127.0.0.2", "127.0.0.3").values()} == {"ok"}
    action = BlockPeer()
    target = Target(container_id=box.container_id, peer_address="127.0.0.2", peer_port=8080)
    change = action.plan(target, {})
    table = change.planned_state["table"]
    assert "+\t\tip daddr 127.0.0.2 tcp dport 8080 reject with tcp reset" in change.diff
    assert connect(ns, "127.0.0.2")["127.0.0.2"][0] == "ok"  # plan changed nothing

    outcome = action.apply(change)
    got = connect(ns, "127.0.0.2", "127.0.0.3")
    assert got["127.0.0.2"][0] == "refused" and got["127.0.0.3"][0] == "ok", got
    refused_ms = got["127.0.0.2"][1]
    assert isinstance(refused_ms, float) and refused_ms < 100  # a reset, not a timeout
    print(f"blocked peer: connection refused after {refused_ms} ms")
    host = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    assert table not in host.stdout  # only the pod's namespace has it
    with pytest.raises(ActionError, match="already exists"):
        action.apply(change)

    assert action.revert(change, outcome).ok
    assert connect(ns, "127.0.0.2")["127.0.0.2"][0] == "ok"
    listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                            capture_output=True, text=True, check=True)
    assert table not in listed.stdout
    assert action.revert(change, outcome).ok  # twice is harmless


def test_block_peer_all_ports_drop_mode(pod_netns: tuple[Container, str]) -> None:
    box, ns = pod_netns
    action = BlockPeer()
    change = action.plan(Target(container_id=box.container_id, peer_address="127.0.0.2",
                                peer_port=8080), {"mode": "drop", "all_ports": True})
    assert "ct state new drop" in change.diff and "dport" not in change.diff
    outcome = action.apply(change)
    try:
        got = connect(ns, "127.0.0.2", "127.0.0.2>127.0.0.1", "127.0.0.3")
        assert got["127.0.0.2"][0] == "TimeoutError", got            # to the peer
        assert got["127.0.0.2>127.0.0.1"][0] == "TimeoutError", got  # from the peer
        assert got["127.0.0.3"][0] == "ok", got
    finally:
        action.revert(change, outcome)
    assert {r[0] for r in connect(ns, "127.0.0.2", "127.0.0.2>127.0.0.1").values()} == {"ok"}


def test_block_peer_refusals(pod_netns: tuple[Container, str]) -> None:
    box, _ = pod_netns
    action = BlockPeer()
    with pytest.raises(ActionError, match="host's network namespace"):
        action.plan(Target(pid=os.getpid(), peer_address="127.0.0.2"), {})
    with pytest.raises(ActionError, match="not an IP address"):
        action.plan(Target(container_id=box.container_id, peer_address="example.com"), {})
    with pytest.raises(ActionError, match=r"block_peer.params.mode: expected one of"):
        action.plan(Target(container_id=box.container_id, peer_address="127.0.0.2"),
                    {"mode": "explode"})


def test_block_peer_planned_off_the_node_applies_on_it(pod_netns: tuple[Container, str],
                                                        tmp_path: Path) -> None:
    """A cluster's processor plans without seeing the container (a cgroup tree without it
    here); the node's agent applies in the container's namespace, and refuses the host's."""
    box, ns = pod_netns
    elsewhere = BlockPeer(Host(cgroup2=tmp_path))
    target = Target(container_id=box.container_id, node="n1", peer_address="127.0.0.2",
                    peer_port=8080)
    with pytest.raises(ActionError, match="no cgroup for container"):
        elsewhere.plan(replace(target, node=None), {})
    change = elsewhere.plan(target, {})
    assert change.planned_state["netns"] is None
    assert f"+++ b/node/n1/container/{box.container_id[:12]}/nft/inet/" in change.diff
    assert connect(ns, "127.0.0.2")["127.0.0.2"][0] == "ok"

    on_node = BlockPeer()
    outcome = on_node.apply(change)
    try:
        got = connect(ns, "127.0.0.2", "127.0.0.3")
        assert got["127.0.0.2"][0] == "refused" and got["127.0.0.3"][0] == "ok", got
    finally:
        assert on_node.revert(change, outcome).ok
    assert connect(ns, "127.0.0.2")["127.0.0.2"][0] == "ok"
    host_target = Target(pid=os.getpid(), node="n1", peer_address="127.0.0.2")
    host_change = replace(change, target=host_target)
    with pytest.raises(ActionError, match="host's network namespace"):
        on_node.apply(host_change)


def _creation_time(pid: int) -> str:
    """The record's process.creation.time for ``pid``, as the sensor writes it."""
    wall = ticks_to_wall_ns(start_ticks(pid))
    secs, ns = divmod(wall, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"


def test_freeze_and_kill_planned_off_the_node_apply_on_it(box: Container, tmp_path: Path
                                                           ) -> None:
    """A cluster's processor plans without the node's cgroups and /proc (empty trees here);
    the node's actions (what NodeExecutor runs) find the container and check the pid there."""
    elsewhere = Host(proc=tmp_path, cgroup2=tmp_path, freezer_v1=tmp_path)
    busy = box.popen(BUSY)
    other = box.popen(["sleep", "60"])
    victim = box.popen(["sleep", "60"])
    try:
        base = Target(node="n1", namespace="shop", pod="web-1", container_id=box.container_id)
        freeze = FreezeContainer(elsewhere).plan(base, {})
        assert freeze.planned_state["path"] is None and "+state: frozen" in freeze.diff
        assert f"node/n1/container/{box.container_id[:12]}/cgroup" in freeze.diff
        on_node = FreezeContainer()
        outcome = on_node.apply(freeze)
        assert (box.path / "cgroup.freeze").read_text().strip() == "1"
        before = cpu_ticks(busy.pid)
        time.sleep(0.3)
        assert cpu_ticks(busy.pid) == before
        assert on_node.revert(freeze, outcome).ok
        assert (box.path / "cgroup.freeze").read_text().strip() == "0"

        # kill: pid + the record's creation time; a pid whose start time differs is refused
        target = replace(base, pid=victim.pid, process_creation_time=_creation_time(victim.pid),
                         executable="/usr/bin/sleep")
        kill = KillProcess(elsewhere).plan(target, {})
        assert kill.planned_state == {"start_ticks": None}
        assert f"node/n1/process/{victim.pid}" in kill.diff and "NOT reversible" in kill.summary
        reused = replace(kill, target=replace(target, pid=other.pid,
                                              process_creation_time="2000-01-01T00:00:00.000000Z"))
        with pytest.raises(ActionError, match="another process now"):
            KillProcess().apply(reused)
        assert other.poll() is None
        outside = subprocess.Popen(["sleep", "60"])
        try:
            with pytest.raises(ActionError, match="not in container"):
                KillProcess().apply(replace(kill, target=replace(
                    target, pid=outside.pid, process_creation_time=_creation_time(outside.pid))))
        finally:
            outside.kill()
            outside.wait()
        assert KillProcess().apply(kill).ok
        assert victim.wait(5) == -9 and other.poll() is None
    finally:
        for p in (busy, other, victim):
            p.kill()
            p.wait()


def test_off_node_plans_need_the_node_and_the_start_time(tmp_path: Path) -> None:
    elsewhere = Host(proc=tmp_path, cgroup2=tmp_path, freezer_v1=tmp_path)
    target = Target(namespace="shop", pod="web-1", container_id="c" * 64, pid=4242,
                    process_creation_time="2026-11-23T12:55:13.123456Z")
    with pytest.raises(ActionError, match="no freezable cgroup"):
        FreezeContainer(elsewhere).plan(target, {})  # no node: nobody could apply it
    with pytest.raises(ActionError, match="pid and process start time"):
        KillProcess(elsewhere).plan(replace(target, node="n1", process_creation_time=None), {})
    change = KillProcess(elsewhere).plan(replace(target, node="n1"), {"signal": "SIGTERM"})
    assert "+state: killed by SIGTERM" in change.diff
    assert "started: '2026-11-23T12:55:13.123456Z'" in change.diff, change.diff


def test_creation_time_parses_to_unix_ns() -> None:
    assert parse_creation_time("1970-01-01T00:00:01.000002Z") == 1_000_002_000
    with pytest.raises(ActionError, match="not ISO 8601"):
        parse_creation_time("yesterday")
