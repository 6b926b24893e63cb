"""Paths resolve inside a root, never the host's: absolute links restart at the root, ``..``
stops there, loops end, a pid of another container is refused (docs/risk.md#resolving-paths)."""

from __future__ import annotations

import os
from pathlib import Path

from otelguard.risk.packages.rootfs import Roots, open_dir


def _root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (r / "usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3").write_bytes(b"\x7fELF")
    os.symlink("libfoo.so.1.2.3", r / "usr/lib/x86_64-linux-gnu/libfoo.so.1")
    os.symlink("usr/lib", r / "lib")
    os.symlink("/usr/lib/x86_64-linux-gnu/libfoo.so.1", r / "abs-link")  # absolute
    os.symlink("/etc/passwd", r / "host-file")  # exists on the host, not in the root
    os.symlink("../../../../../../usr/lib", r / "climb")
    os.symlink("loop-b", r / "loop-a")
    os.symlink("loop-a", r / "loop-b")
    return r


def test_links_resolve_relative_to_the_root(tmp_path: Path) -> None:
    root = open_dir(str(_root(tmp_path)), "t")
    assert root is not None
    assert root.resolve("/lib/x86_64-linux-gnu/libfoo.so.1") == \
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3"
    assert root.resolve("/abs-link") == "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3"
    assert root.resolve("/climb/x86_64-linux-gnu/libfoo.so.1") == \
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3"  # .. stops at the root
    assert root.resolve("/../../lib/./x86_64-linux-gnu//libfoo.so.1") == \
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3"
    assert os.path.exists("/etc/passwd")
    assert root.resolve("/host-file") is None  # never the host's /etc/passwd
    assert root.read_bytes("/host-file") is None
    assert root.resolve("/loop-a") is None
    assert root.resolve("/usr/lib/x86_64-linux-gnu/libfoo.so.1.2.3/x") is None  # not a dir
    assert root.read_bytes("/lib/x86_64-linux-gnu/libfoo.so.1") == b"\x7fELF"
    root.close()


def test_a_pid_of_another_container_is_refused(tmp_path: Path) -> None:
    roots = Roots(2)
    # this process's cgroup does not name that container id: its root is not taken
    assert roots.get("c1", "f" * 64, [os.getpid()]) is None
    host = roots.get("host:node", "", [])
    assert host is not None and host.resolve("/etc/passwd") is not None
    roots.overrides["c2"] = str(_root(tmp_path))
    assert roots.get("i2", "c2", []) is not None
    assert roots.get("i3", "", []) is not None  # beyond max_roots: the oldest is closed
    assert len(roots._roots) == 2  # noqa: SLF001 - the bound itself
    roots.close()


def test_the_host_view_of_a_chroot_is_stripped(tmp_path: Path) -> None:
    root = open_dir(str(_root(tmp_path)), "t")
    assert root is not None
    root.host_view = str(tmp_path / "root")
    assert root.inside(f"{tmp_path}/root/usr/bin/jq") == "/usr/bin/jq"
    assert root.inside("/usr/bin/jq") == "/usr/bin/jq"
    root.close()
