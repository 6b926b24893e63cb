"""Network attacks performed for real in a container: stdio redirected to a TCP connection, a
reverse shell, a packet socket, SSH to a non-standard port and the cloud metadata endpoint.

Addresses that are not loopback live in the attack's own network namespace (only ``lo``, with
the address added to it), so the machine's network is never touched and nothing leaves it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typing import Any

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.processors.detection.processor import FalcoRulesProcessor
from tests.attacks.harness import PYTHON_NAME, Attack, named_binary, python_attack
from tests.attacks.payloads import CONNECTED, PIPE_SHELL, REVERSE_SHELL

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(90)]

REDIRECT = CONNECTED + r"""
os.dup2(client.fileno(), 0)
os.dup2(client.fileno(), 1)
time.sleep(0.3)           # the agent reads /proc/<pid>/fd at decode time
print(srv.getsockname()[1], file=sys.stderr)
"""

REDIRECT_PIPE = r"""
import os, time
r, w = os.pipe()
os.dup2(r, 0)
time.sleep(0.3)
"""


# dup(2) returns the lowest free fd: with fd 0 closed, dup(sock) puts the socket on stdin.
# (Python's os.dup is fcntl(F_DUPFD_CLOEXEC): libc's dup is the syscall.)
DUP_ONTO_STDIN = CONNECTED + r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
os.close(0)
assert libc.dup(client.fileno()) == 0
time.sleep(0.3)
print(srv.getsockname()[1], file=sys.stderr)
"""

# an ordinary dup of the same socket lands on fd >= 3: not stdio, not sent by the kernel
DUP_ELSEWHERE = CONNECTED + r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
assert libc.dup(client.fileno()) > 2
time.sleep(0.3)
"""


def _dups(attack: Attack) -> list[dict[str, Any]]:
    return attack.records(S.EV_DUP)


def test_stdin_stdout_redirected_to_tcp_connection(sensor: Sensor,
                                                   stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, REDIRECT)
    port = int(attack.stderr.decode().split()[-1])
    hits = attack.fired("Redirect STDOUT/STDIN to Network Connection in Container")
    assert sorted(int(h.trigger_attrs[S.SYSCALL_RET]) for h in hits) == [0, 1]
    d = attack.detection(
        "Redirect STDOUT/STDIN to Network Connection in Container", "NOTICE", S.EV_DUP,
        body=["Redirect stdout/stdin to network connection", "fd_type=ipv4", "fd_proto=tcp",
              f"rport={port}", "evt_type=dup2", f"process={PYTHON_NAME}"],
        evidence={S.DUP_OLD_FD_TYPE: "socket"})
    assert d.attrs[S.SYSCALL_RET] in (0, 1)
    # the dup record names fds only: the stage pairs it with the connect record of that fd
    assert f"connection=127.0.0.1:" in d.body and f"->127.0.0.1:{port}" in d.body


def test_dup_of_a_tcp_connection_onto_stdin(sensor: Sensor,
                                            stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, DUP_ONTO_STDIN)
    port = int(attack.stderr.decode().split()[-1])
    d = attack.detection(
        "Redirect STDOUT/STDIN to Network Connection in Container", "NOTICE", S.EV_DUP,
        body=["Redirect stdout/stdin to network connection", "fd_type=ipv4", "fd_proto=tcp",
              f"rport={port}", "evt_type=dup ", f"process={PYTHON_NAME}"],
        evidence={S.DUP_OLD_FD_TYPE: "socket", S.SYSCALL_NAME: "dup", S.SYSCALL_RET: 0})
    # the new fd is dup's result; the old one, saved at entry, is the client socket (> 2)
    assert d.trigger_attrs[S.DUP_NEW_FD] == 0 and d.trigger_attrs[S.DUP_OLD_FD] > 2


def test_ordinary_dup_is_not_sent(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, DUP_ELSEWHERE)
    assert attack.records(S.EV_NETWORK_CONNECT)  # the run was seen
    assert _dups(attack) == []
    assert not attack.fired("Redirect STDOUT/STDIN to Network Connection in Container")


def test_pipe_redirected_to_stdin_does_not_fire(sensor: Sensor,
                                                stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, REDIRECT_PIPE)
    assert [d[S.DUP_OLD_FD_TYPE] for d in _dups(attack)] == ["pipe"]
    assert not attack.fired("Redirect STDOUT/STDIN to Network Connection in Container")


def test_reverse_shell(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, REVERSE_SHELL)
    assert attack.container is not None
    d = attack.detection(
        "Reverse shell (socket on stdio then shell exec)", "CRITICAL", S.EV_PROCESS_EXEC,
        body=["Reverse shell - shell exec'ed with a socket on stdio", "stdin_socket=true",
              "stdout_socket=true", " -c sleep 0.3",
              f"container_id={attack.container.container_id[:12]}"])
    assert d.trigger_attrs[S.PROCESS_PID] == attack.pid  # the exec replaced the dup'ing python
    assert d.trigger_attrs[S.PROCESS_EXECUTABLE_NAME] in ("sh", "dash")
    assert d.attrs[S.THREAT_TECHNIQUE_ID] == ["T1059.004"]
    # the dup records that built the state are there too, each a detection of its own
    assert len(attack.fired("Redirect STDOUT/STDIN to Network Connection in Container")) == 3


def test_shell_with_a_pipe_on_stdin_is_no_reverse_shell(sensor: Sensor,
                                                        stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, PIPE_SHELL)
    assert [d[S.DUP_OLD_FD_TYPE] for d in _dups(attack)] == ["pipe"]
    assert [a for a in attack.records(S.EV_PROCESS_EXEC)
            if a.get(S.PROCESS_EXECUTABLE_NAME) in ("sh", "dash")]
    assert not attack.fired("Reverse shell (socket on stdio then shell exec)")


PACKET_SOCKET = r"""
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))   # ETH_P_ALL
s.close()
"""


def test_packet_socket_in_container(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, PACKET_SOCKET)
    d = attack.detection(
        "Packet socket created in container", "NOTICE", S.EV_NETWORK_SOCKET,
        body=["Packet socket was created in a container", "domain=AF_PACKET",
              f"process={PYTHON_NAME}", "evt_type=socket"],
        evidence={S.SOCKET_FAMILY: "AF_PACKET"})
    assert int(d.trigger_attrs[S.SYSCALL_RET]) >= 0


def test_packet_socket_on_the_host_does_not_fire(sensor: Sensor,
                                                 stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, PACKET_SOCKET, host=True)
    assert [a[S.SOCKET_FAMILY] for a in attack.records(S.EV_NETWORK_SOCKET)] == ["AF_PACKET"]
    assert not attack.fired("Packet socket created in container")


# The attack's own network namespace: lo up, plus an address that is not loopback or RFC 1918.
OWN_NETNS = r"""
import ctypes, socket, subprocess
libc = ctypes.CDLL(None, use_errno=True)
assert libc.unshare(0x40000000) == 0, ctypes.get_errno()           # CLONE_NEWNET
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "198.51.100.7/32", "dev", "lo"], check=True)
"""

SSH_CONNECTS = OWN_NETNS + r"""
for port in (4444, 22):
    srv = socket.socket(); srv.bind(("198.51.100.7", port)); srv.listen(1)
    socket.create_connection(("198.51.100.7", port)).close()
    srv.close()
"""


def test_ssh_to_non_standard_port(sensor: Sensor, stage: FalcoRulesProcessor,
                                  bindir: Path) -> None:
    ssh = named_binary(bindir, "ssh")
    attack = python_attack(sensor, stage, SSH_CONNECTS, exe=ssh)
    connects = attack.records(S.EV_NETWORK_CONNECT)
    assert sorted((a[S.NETWORK_PEER_ADDRESS], a[S.NETWORK_PEER_PORT], a[S.SYSCALL_RET])
                  for a in connects) == [("198.51.100.7", 22, 0), ("198.51.100.7", 4444, 0)]
    d = attack.detection(
        "Disallowed SSH Connection Non Standard Port", "NOTICE", S.EV_NETWORK_CONNECT,
        body=["Disallowed SSH Connection", "rport=4444", "fd_proto=tcp", "process=ssh",
              "->198.51.100.7:4444"],
        evidence={S.NETWORK_PEER_PORT: 4444, S.NETWORK_PEER_ADDRESS: "198.51.100.7"})
    assert d.trigger_attrs[S.PROCESS_COMMAND_ARGS][0] == ssh
    # near miss in the same run: the standard port 22 is not reported
    assert len(attack.fired("Disallowed SSH Connection Non Standard Port")) == 1


def test_other_client_to_the_same_port_does_not_fire(sensor: Sensor,
                                                     stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, SSH_CONNECTS)
    assert len(attack.records(S.EV_NETWORK_CONNECT)) == 2
    assert not attack.fired("Disallowed SSH Connection Non Standard Port")


METADATA = OWN_NETNS.replace('subprocess.run(["ip", "addr"', '# no address: ("ip", "addr"') + r"""
import errno
for addr in ("169.254.169.254", "127.0.0.1"):
    s = socket.socket()
    rc = s.connect_ex((addr, 80))
    assert rc in (errno.ENETUNREACH, errno.ECONNREFUSED), rc
    s.close()
"""


def test_cloud_metadata_endpoint(sensor: Sensor, stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, METADATA)
    d = attack.detection(
        "Contact cloud metadata endpoint from container", "WARNING", S.EV_NETWORK_CONNECT,
        body=["Cloud metadata endpoint contacted from container", "sip=169.254.169.254",
              "sport=80", "res=ENETUNREACH", f"process={PYTHON_NAME}"],
        evidence={S.NETWORK_PEER_ADDRESS: "169.254.169.254", S.NETWORK_PEER_PORT: 80})
    assert d.trigger_attrs[S.ERROR_TYPE] == "ENETUNREACH"
    # near miss in the same run: the refused loopback connect is captured and not reported
    refused = [a for a in attack.records(S.EV_NETWORK_CONNECT)
               if a.get(S.NETWORK_PEER_ADDRESS) == "127.0.0.1"]
    assert refused and refused[0][S.ERROR_TYPE] == "ECONNREFUSED"
    assert len(attack.fired("Contact cloud metadata endpoint from container")) == 1
