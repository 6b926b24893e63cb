"""ProcessTable bookkeeping and trace roots (pure: ghost pids that do not exist in /proc)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otelguard.ebpf.proctable import ProcessTable, cap_names

G = 4_194_100  # above pid_max
S = 1_000_000_000


def test_roots_follow_the_long_lived_rule() -> None:
    t = ProcessTable(long_lived_s=30)
    shell = t.on_exec(G, "/bin/bash", ["bash"], 0, 0, 100 * S, "bash")
    assert (shell.root_pid, shell.root_start_ns) == (G, shell.start_ns)  # parent unknown
    young = t.on_fork(G, G + 1, shell.start_ns + 1 * S)
    assert young.root_pid == G  # joins its young parent's trace
    t.on_exec(G + 1, "/usr/bin/curl", ["curl", "x"], 0, 0, shell.start_ns + 2 * S, "curl")
    assert t.get(G + 1, load=False).root_pid == G  # type: ignore[union-attr]
    grandchild = t.on_fork(G + 1, G + 2, shell.start_ns + 3 * S)
    assert grandchild.root_pid == G
    late = t.on_fork(G, G + 3, shell.start_ns + 60 * S)
    assert late.root_pid == G + 3 and late.root_start_ns == late.start_ns  # long-lived parent


def test_launchers_start_new_roots() -> None:
    t = ProcessTable()
    shim = t.on_exec(G + 10, "/usr/bin/containerd-shim-runc-v2", ["shim"], 0, 0, 5 * S, "shim")
    child = t.on_fork(shim.pid, G + 11, shim.start_ns + S)
    assert child.root_pid == G + 11


def test_exec_fork_exit_bookkeeping() -> None:
    t = ProcessTable()
    p = t.on_exec(G + 20, "/usr/bin/env", ["env", "PASSWORD=x"], 1000, 1000, S, "env")
    assert p.args == ["env", "PASSWORD=***"] and p.command_line == "env PASSWORD=***"
    assert (p.uid, p.gid, p.real_uid) == (1000, 1000, 1000)
    c = t.on_fork(G + 20, G + 21, 2 * S)
    assert (c.exe_path, c.uid, c.args) == ("/usr/bin/env", 1000, p.args)
    t.on_chdir(G + 21, "/tmp")
    assert t.get(G + 21, load=False).cwd == "/tmp"  # type: ignore[union-attr]
    dead = t.on_exit(G + 21, 3 * S, 2)
    assert dead is not None and dead.exit_code == 2
    assert G + 21 not in [i.pid for i in t]
    assert t.get(G + 21, load=False) is dead  # graveyard: late records still resolve


def test_ancestors_are_bounded_and_loop_safe() -> None:
    t = ProcessTable()
    t.on_exec(G + 100, "/bin/sh", ["sh"], 0, 0, S, "sh")
    for i in range(1, 25):
        t.on_fork(G + 100 + i - 1, G + 100 + i, S + i)
    leaf = t.get(G + 124, load=False)
    assert leaf is not None
    anc = t.ancestors(leaf)
    assert len(anc) == 16 and anc[0].pid == G + 123
    a = t.get(G + 100, load=False)
    assert a is not None
    a.ppid = G + 101  # a loop must not hang
    assert len(t.ancestors(t.get(G + 101, load=False))) <= 16  # type: ignore[arg-type]


def test_bounded_size() -> None:
    t = ProcessTable(max_entries=10, graveyard=3)
    for i in range(50):
        t.on_fork(0, G + 200 + i, S)
    assert len(t) == 10
    for i in range(40, 50):
        t.on_exit(G + 200 + i, 2 * S, 0)
    assert len(t._dead) == 3


def test_seed_and_first_sight_of_a_real_process() -> None:
    t = ProcessTable()
    assert t.seed() > 1
    me = t.get(os.getpid())
    assert me is not None and me.cwd == os.getcwd() and me.ppid == os.getppid()
    assert me.start_ns > 0 and me.args
    assert t.user_name(os.getpid(), os.getuid()) != ""


def test_cap_names() -> None:
    assert cap_names(0) == []
    assert cap_names(0b11) == ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]
    assert cap_names(1 << 21) == ["CAP_SYS_ADMIN"]
    assert cap_names(1 << 45) == ["CAP_45"]
    first = cap_names(0b11)  # spelled once per mask, then copied: a caller's edit stays its own
    first.append("CAP_X")
    assert cap_names(0b11) == ["CAP_CHOWN", "CAP_DAC_OVERRIDE"]


def test_names_of_a_root_whose_process_left_before_the_read_are_not_cached_empty(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the stat of /proc/<pid>/root succeeded, then the process exited before /etc/passwd was
    # read through it: an empty map cached for that root would blank every later process there
    t = ProcessTable()
    monkeypatch.setattr(t, "_root_key", lambda pid: (9, 9))
    assert t.id_names(G + 80, 0, 0) == ("", "")
    assert not [k for k in t._passwd if k[:2] == (9, 9)]
    monkeypatch.setattr(t, "_root_key", lambda pid: (8, 8))  # a live root: ours
    assert t.id_names(os.getpid(), 0, 0) == ("root", "root")
    assert t._passwd[(8, 8, "passwd")]


def test_status_fields_are_the_lines_read_proc_uses() -> None:
    from otelguard.ebpf.procfs import _status_fields

    text = Path(f"/proc/{os.getpid()}/status").read_text()
    every = {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
    got = _status_fields(text)
    assert set(got) == {"Name", "PPid", "Uid", "Gid", "CapEff", "CapPrm", "NSpid", "NSpgid"}
    assert got == {k: every[k] for k in got}
    # a key that is a prefix of another (NSpid / NSpgid) or missing, the last line unterminated
    assert _status_fields("Name:\tx\nNSpgid:\t7 1\nNSpid:\t9 2") == {
        "Name": "x", "NSpgid": "7 1", "NSpid": "9 2"}


@pytest.mark.kernel
def test_user_names_come_from_the_process_root(tmp_path: Path) -> None:
    """A process chrooted into a tree with its own /etc/passwd gets names from that file."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nogtester:x:4242:4242::/:/x\n")
    code = ("import os, sys, time\nos.chroot(sys.argv[1])\nprint('ready', flush=True)\n"
            "time.sleep(5)")
    with subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                          stdout=subprocess.PIPE) as p:
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
            t = ProcessTable()
            assert t.user_name(p.pid, 4242) == "ogtester"
            assert t.user_name(os.getpid(), 4242) == ""  # not in the host's passwd
            assert t.user_name(p.pid, 0) == "root"
            # a child of the chrooted process, gone before its record was decoded: the names
            # of the root it had at fork (still held by its parent), not the host's
            t.on_fork(p.pid, G + 70, 5 * S)
            assert t.user_name(G + 70, 4242) == "ogtester"
            assert t.group_name(G + 70, 0) == ""  # that root has no /etc/group
            t.on_fork(os.getpid(), G + 71, 5 * S)  # one of ours: the host's names
            assert t.user_name(G + 71, 0) == "root" and t.user_name(G + 71, 4242) == ""
        finally:
            p.kill()


def test_exec_of_a_process_already_gone_keeps_no_flag_of_the_old_image() -> None:
    # ghost pids: /proc cannot be read, as for a process that exited before its exec decoded
    t = ProcessTable()
    dropped = t.on_exec(G + 20, "/payload-sh", ["sh"], 0, 0, 5 * S, "payload-sh")
    dropped.exe_upper_layer = dropped.exe_deleted = True  # as read from /proc for that image
    t.on_fork(G + 20, G + 21, 6 * S)
    child = t.on_exec(G + 21, "/usr/bin/true", ["true"], 0, 0, 7 * S, "true")
    assert (child.exe_upper_layer, child.exe_deleted, child.exe_from_memfd) == (False, False, False)


def test_exec_of_a_process_already_gone_names_the_file_as_its_exe_link_would() -> None:
    # `sh -c true` can exit before its exec is decoded: the exec's path (/bin/sh) is resolved
    # in the parent's root (here: ours) as /proc/<pid>/exe would have named it (seen on the
    # real kernel: profiles learned /usr/bin/dash and alerted on /bin/sh, or the other way)
    link = "/bin/sh" if os.path.islink("/bin/sh") else "/proc/self/cwd"
    t = ProcessTable()
    t.on_fork(os.getpid(), G + 50, 5 * S)
    gone = t.on_exec(G + 50, link, ["sh", "-c", "true"], 0, 0, 6 * S, "sh")
    assert gone.exe_path == os.path.realpath(link) != link
    t.on_fork(os.getpid(), G + 51, 5 * S)
    missing = t.on_exec(G + 51, "/usr/bin/../no/such/og-x", ["x"], 0, 0, 6 * S, "x")
    assert missing.exe_path == "/usr/bin/../no/such/og-x"  # unchanged when not resolvable
    orphan = t.on_exec(G + 52, link, ["sh"], 0, 0, 6 * S, "sh")  # no readable root
    assert orphan.exe_path == link


def test_exec_decoded_after_the_process_and_its_parent_are_gone_uses_the_root_seen_at_fork(
        ) -> None:
    # a service (ghost G+60, forked by us while we lived) ran `sh -c true` and both exited
    # before either exec was decoded (a busy agent): the root the service had at its fork is
    # still held by a live process (us), which names /bin/sh as the exe link would have
    link = "/bin/sh" if os.path.islink("/bin/sh") else "/proc/self/cwd"
    t = ProcessTable()
    t.on_fork(os.getpid(), G + 60, 5 * S)
    t.on_exec(G + 60, sys.executable, ["python3", "app.py"], 0, 0, 6 * S, "python3")
    t.on_fork(G + 60, G + 61, 7 * S)
    gone = t.on_exec(G + 61, link, ["sh", "-c", "true"], 0, 0, 8 * S, "sh")
    assert gone.exe_path == os.path.realpath(link) != link
    # a root nobody alive holds any more (its last holder gone): the path stays as exec'd
    t2 = ProcessTable()
    t2.on_fork(os.getpid(), G + 62, 5 * S)
    t2._root_holder = {k: G + 63 for k in t2._root_holder}  # the holder is a ghost now
    t2.on_fork(G + 62, G + 64, 7 * S)
    assert t2.on_exec(G + 64, link, ["sh"], 0, 0, 8 * S, "sh").exe_path == link
    assert t2._root_holder == {}  # forgotten, not asked again


def test_exec_of_proc_self_exe_keeps_the_image_it_re_executes() -> None:
    # busybox's sh runs an applet as execve("/proc/self/exe", ["cat", ...]); the process is gone
    # before /proc can be read: the executable is the one the caller already ran, with its flags
    t = ProcessTable()
    shell = t.on_exec(G + 40, "/bin/busybox", ["sh"], 0, 0, 5 * S, "sh")
    shell.exe_upper_layer = True  # as read from /proc for that image
    t.on_fork(G + 40, G + 41, 6 * S)
    cat = t.on_exec(G + 41, "/proc/self/exe", ["cat", "/etc/shadow"], 0, 0, 7 * S, "cat")
    assert (cat.exe_path, cat.exe_name, cat.exe_upper_layer) == ("/bin/busybox", "busybox", True)
    t.on_fork(G + 41, G + 42, 8 * S)
    own = t.on_exec(G + 42, f"/proc/{G + 42}/exe", ["cat"], 0, 0, 9 * S, "cat")
    assert own.exe_path == "/bin/busybox"
    other = t.on_exec(G + 43, "/proc/1/exe", ["x"], 0, 0, 9 * S, "x")  # another process's image
    assert other.exe_path == "/proc/1/exe"


def test_fd_exec_of_a_memfd_already_gone_is_fileless() -> None:
    t = ProcessTable()
    fileless = t.on_exec(G + 30, "", ["payload"], 0, 0, 5 * S, "memfd:payload")
    assert fileless.exe_from_memfd and fileless.exe_name == "memfd:payload"
    by_path = t.on_exec(G + 31, "/tmp/memfd:x", ["x"], 0, 0, 5 * S, "memfd:x")
    assert not by_path.exe_from_memfd  # a file that is only named so


def test_fd_exec_decoded_while_the_process_is_a_zombie_is_fileless() -> None:
    # exiting: /proc/<pid>/status is still there, the exe link is not
    proc = subprocess.Popen(["/bin/true"])
    try:
        for _ in range(200):
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        with pytest.raises(OSError):
            os.readlink(f"/proc/{proc.pid}/exe")
        info = ProcessTable().on_exec(proc.pid, "", ["payload"], 0, 0, 5 * S, "memfd:payload")
        assert info.exe_from_memfd
        # a memfd remembered from memfd_create names the executable; the missing link must not
        # erase that name (tests/attacks/test_evasion.py's /proc/self/fd exec lost it)
        t = ProcessTable()
        t.on_memfd(proc.pid, 3, "payload", False)
        named = t.on_exec(proc.pid, "/proc/self/fd/3", ["payload"], 0, 0, 6 * S, "3", exec_fd=3)
        assert named.exe_from_memfd and named.exe_path == "/memfd:payload"
    finally:
        proc.wait()
