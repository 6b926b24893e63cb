"""The stage's bounded sequence state: reverse shell via dup + exec (own pid, inherited over a
fork, parent pid), drop-and-execute per container, time windows, and eviction bounds."""

from __future__ import annotations

from typing import Any

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.detection.engine import RuleEngine
from otelguard.processors.detection.loader import load_rules
from otelguard.processors.detection.engine import DEFAULT_RULE_FILES
from otelguard.processors.detection.state import DetectionState, StateLimits

from tests.support.metrics import sample
from .casefile import BASE_TIME, batch_of

RULESET = load_rules(DEFAULT_RULE_FILES)
SHELL = "Reverse shell (socket on stdio then shell exec)"
DROP = "Execution of file written in the same container"
SEC = 1_000_000_000


def dup(pid: int, newfd: int = 0, kind: str = "socket", t: int = 0) -> dict[str, Any]:
    return {"event": S.EV_DUP, "time_ns": BASE_TIME + t, "attrs": {
        S.SYSCALL_NAME: "dup2", S.SYSCALL_RET: newfd, S.DUP_OLD_FD: 3, S.DUP_NEW_FD: newfd,
        S.DUP_OLD_FD_TYPE: kind, S.PROCESS_PID: pid, S.PROCESS_EXECUTABLE_NAME: "python3"}}


def fork(child: int, parent: int, t: int = 0) -> dict[str, Any]:
    return {"event": S.EV_PROCESS_FORK, "time_ns": BASE_TIME + t, "attrs": {
        S.PROCESS_PID: child, S.PROCESS_PARENT_PID: parent, S.PROCESS_EXECUTABLE_NAME: "python3"}}


def execve(pid: int, ppid: int, exe: str = "/bin/sh", t: int = 0,
           resource: Any = "container") -> dict[str, Any]:
    name = exe.rsplit("/", 1)[-1]
    return {"event": S.EV_PROCESS_EXEC, "time_ns": BASE_TIME + t, "resource": resource, "attrs": {
        S.SYSCALL_NAME: "execve", S.SYSCALL_RET: 0, S.PROCESS_PID: pid,
        S.PROCESS_PARENT_PID: ppid, S.PROCESS_EXECUTABLE_NAME: name,
        S.PROCESS_EXECUTABLE_PATH: exe, S.PROCESS_COMMAND_ARGS: [name]}}


def write(path: str, t: int = 0, resource: Any = "container") -> dict[str, Any]:
    return {"event": S.EV_FILE_OPEN, "time_ns": BASE_TIME + t, "resource": resource, "attrs": {
        S.SYSCALL_NAME: "openat", S.SYSCALL_RET: 3, S.FILE_OPEN_FLAGS: "O_WRONLY|O_CREAT",
        S.FILE_PATH: path, S.PROCESS_PID: 50, S.PROCESS_EXECUTABLE_NAME: "curl"}}


def fired(*specs: dict[str, Any], limits: StateLimits = StateLimits()) -> list[str]:
    engine = RuleEngine(RULESET, state=DetectionState(limits))
    names: list[str] = []
    for s in specs:
        names = [d.rule.name for d in engine.evaluate(batch_of(s))]
    return names  # of the last record


def test_reverse_shell_same_pid_inherited_and_parent() -> None:
    assert SHELL in fired(dup(10), execve(10, 1))
    assert SHELL in fired(dup(10, newfd=1), execve(10, 1))
    assert SHELL in fired(dup(10), fork(11, 10), execve(11, 10))  # inherited over a fork record
    assert SHELL in fired(dup(10), execve(12, 10))  # no fork record: parent pid checked
    assert SHELL not in fired(dup(10, kind="pipe"), execve(10, 1))
    assert SHELL not in fired(dup(10, newfd=7), execve(10, 1))
    assert SHELL not in fired(dup(10), execve(13, 1))  # unrelated process
    assert SHELL not in fired(dup(10), execve(10, 1, exe="/usr/bin/python3"))  # not a shell


def test_reverse_shell_forgotten_on_exit_and_after_window() -> None:
    exit_rec = {"event": S.EV_PROCESS_EXIT, "attrs": {S.PROCESS_PID: 10}}
    assert SHELL not in fired(dup(10), exit_rec, execve(10, 1))
    short = StateLimits(socket_window_seconds=5)
    assert SHELL in fired(dup(10), execve(10, 1, t=4 * SEC), limits=short)
    assert SHELL not in fired(dup(10), execve(10, 1, t=6 * SEC), limits=short)


def test_drop_and_execute_is_per_container_and_windowed() -> None:
    assert DROP in fired(write("/tmp/x"), execve(60, 1, exe="/tmp/x"))
    other = {S.CONTAINER_ID: "ab" * 32}
    assert DROP not in fired(write("/tmp/x"), execve(60, 1, exe="/tmp/x", resource=other))
    assert DROP not in fired(write("/tmp/y"), execve(60, 1, exe="/tmp/x"))
    short = StateLimits(written_window_seconds=60)
    assert DROP not in fired(write("/tmp/x"), execve(60, 1, exe="/tmp/x", t=61 * SEC),
                             limits=short)
    # a container whose id did not resolve is not the host: a host write is not its own
    unresolved = {S.CONTAINER_ID: None}
    assert DROP not in fired(write("/tmp/x", resource="host"),
                             execve(60, 1, exe="/tmp/x", resource=unresolved))
    assert DROP not in fired(write("/tmp/x", resource="host"),
                             execve(60, 1, exe="/tmp/x", resource="host"))  # host: not a container


def test_bounds_evict_and_count() -> None:
    def evicted() -> float:
        return sample("otelguard_dropped_total", stage="detection", reason="state_evicted")

    before = evicted()
    limits = StateLimits(max_processes=2, max_paths_per_container=2)
    assert SHELL not in fired(dup(1), dup(2), dup(3), execve(1, 0), limits=limits)
    assert DROP not in fired(write("/a"), write("/b"), write("/c"), execve(9, 0, exe="/a"),
                             limits=limits)
    assert DROP in fired(write("/a"), write("/b"), write("/c"), execve(9, 0, exe="/c"),
                         limits=limits)
    assert evicted() >= before + 3


REDIRECT = "Redirect STDOUT/STDIN to Network Connection in Container"


def connect(pid: int, fd: int, t: int = 0) -> dict[str, Any]:
    """As the agent emits it: fd + addresses on the connect record, none on the dup."""
    return {"event": S.EV_NETWORK_CONNECT, "time_ns": BASE_TIME + t, "attrs": {
        S.SYSCALL_NAME: "connect", S.SYSCALL_RET: 0, S.FILE_FD: fd, S.NETWORK_TYPE: "ipv4",
        S.NETWORK_TRANSPORT: "tcp", S.NETWORK_PEER_ADDRESS: "203.0.113.7",
        S.NETWORK_PEER_PORT: 4444, S.NETWORK_LOCAL_ADDRESS: "10.244.1.5",
        S.NETWORK_LOCAL_PORT: 39000, S.PROCESS_PID: pid, S.PROCESS_EXECUTABLE_NAME: "bash"}}


def test_dup_of_a_connected_socket_borrows_its_addresses() -> None:
    bare_dup = dup(20)
    bare_dup["attrs"][S.DUP_OLD_FD] = 3
    engine = RuleEngine(RULESET)
    engine.evaluate(batch_of(connect(20, 3)))
    found = [d for d in engine.evaluate(batch_of(bare_dup)) if d.rule.name == REDIRECT]
    assert found, "the dup of fd 3 should be seen as an ipv4 socket"
    assert "fd.sip=203.0.113.7 connection=10.244.1.5:39000->203.0.113.7:4444 lport=39000 " \
        "rport=4444 fd_type=ipv4 fd_proto=tcp" in found[0].record.body.string_value
    # and cites the socket's peer as its own attributes (what response's block_peer acts on)
    cited = attrs_dict(found[0].record.attributes)
    assert (cited[S.NETWORK_PEER_ADDRESS], cited[S.NETWORK_PEER_PORT]) == ("203.0.113.7", 4444)
    # another fd, another pid, or a closed socket: no borrowed socket, no detection
    assert REDIRECT not in fired(connect(20, 4), bare_dup)
    assert REDIRECT not in fired(connect(21, 3), bare_dup)
    close = {"event": S.EV_NETWORK_CLOSE, "attrs": {S.FILE_FD: 3, S.PROCESS_PID: 20}}
    assert REDIRECT not in fired(connect(20, 3), close, bare_dup)


def _aexe_engine() -> RuleEngine:
    text = """
- rule: a
  desc: d
  condition: evt.type = execve and proc.aexe[2] = java and proc.aexepath[3] = /usr/sbin/init
  output: "%proc.aexe[2]"
  priority: NOTICE
"""
    return RuleEngine.from_text(("a.yaml", text))


def test_ancestor_exes_beyond_the_parent_come_from_earlier_exec_records() -> None:
    def child(pid: int, anc: list[int]) -> dict[str, Any]:
        rec = execve(pid, anc[0], "/bin/sh")
        rec["attrs"][S.PROCESS_ANCESTOR_PIDS] = anc
        return rec

    engine = _aexe_engine()
    gp = execve(20, 1, "/usr/bin/java")
    gp["attrs"][S.PROCESS_COMMAND_ARGS] = ["java", "-jar", "x.jar"]
    gp["attrs"][S.PROCESS_PARENT_COMMAND_LINE] = "/usr/sbin/init splash"
    gp["attrs"][S.PROCESS_PARENT_EXECUTABLE_PATH] = "/usr/sbin/init"
    engine.evaluate(batch_of(gp))  # remembers pid 20 (java) and its parent pid 1 (init)
    engine.evaluate(batch_of(fork(30, 20)))  # the fork runs java's image until it execs
    fired = engine.evaluate(batch_of(child(40, [50, 20, 1])))
    assert [d.rule.name for d in fired] == ["a"] and fired[0].record.body.string_value == "java"
    assert [d.rule.name for d in engine.evaluate(batch_of(child(41, [31, 30, 1])))] == ["a"]
    assert engine.evaluate(batch_of(child(42, [50, 60, 1]))) == []  # pid 60 never seen
    exit_rec = {"event": S.EV_PROCESS_EXIT, "attrs": {S.PROCESS_PID: 20}}
    engine.evaluate(batch_of(exit_rec))
    assert engine.evaluate(batch_of(child(43, [50, 20, 1]))) == []  # forgotten on exit
    # another container's pid 20 is another process
    other = child(44, [50, 20, 1])
    other["resource"] = {S.CONTAINER_ID: "f" * 64}
    assert _aexe_engine().evaluate(batch_of(other)) == []


def test_images_are_tracked_only_for_rules_that_read_them() -> None:
    quiet = RuleEngine.from_text(("q.yaml", """
- rule: q
  desc: d
  condition: evt.type = execve and proc.aexe[1] = x
  output: "%proc.aexepath[1]"
  priority: NOTICE
"""))
    assert quiet.state.images == frozenset()
    quiet.evaluate(batch_of(execve(20, 1, "/usr/bin/java")))
    assert quiet.state.sizes()["images"] == 0
    output_only = RuleEngine.from_text(("o.yaml", """
- rule: o
  desc: d
  condition: evt.type = execve
  output: "%proc.aexepath[2]"
  priority: NOTICE
"""))
    assert output_only.state.images == {"proc.aexepath"}
    output_only.evaluate(batch_of(execve(20, 1, "/usr/bin/java")))
    assert output_only.state.sizes()["images"] == 1
