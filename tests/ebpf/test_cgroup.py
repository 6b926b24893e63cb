"""Container identity from cgroup paths (pure) and from real cgroups (kernel)."""

from __future__ import annotations

import os

import pytest

from otelguard.ebpf.cgroup import HOST, CgroupResolver, ContainerIdentity, parse_container
from tests.ebpf.containers import DRIVERS, RUNTIMES, cgroup_dir, container, container_rel_path

UID = "6a3c1b2e-1111-4222-8333-944455556666"
CID = "0123456789abcdef" * 4
RUNTIME_NAMES = {"containerd": "containerd", "crio": "cri-o", "docker": "docker"}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("qos", ["besteffort", "burstable", "guaranteed"])
def test_kubelet_layouts(runtime: str, driver: str, qos: str) -> None:
    ident = parse_container(container_rel_path(UID, CID, runtime, driver, qos))
    assert ident.container_id == CID and ident.pod_uid == UID
    if driver == "systemd":
        assert ident.runtime == RUNTIME_NAMES[runtime]


@pytest.mark.parametrize("path,want", [
    ("/system.slice/docker-" + CID + ".scope", ContainerIdentity(CID, "", "docker")),
    ("/docker/" + CID, ContainerIdentity(CID, "", "docker")),
    ("/kubepods-besteffort-pod" + UID.replace("-", "_") + ".slice:cri-containerd:" + CID,
     ContainerIdentity(CID, UID, "containerd")),
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + UID.replace("-", "_")
     + ".slice/cri-containerd-" + CID + ".scope/init.scope",
     ContainerIdentity(CID, UID, "containerd")),  # systemd inside the container
    ("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
     "kubelet-kubepods-besteffort-pod" + UID.replace("-", "_") + ".slice/cri-containerd-" + CID
     + ".scope", ContainerIdentity(CID, UID, "containerd")),  # kind-style nesting
])
def test_other_container_layouts(path: str, want: ContainerIdentity) -> None:
    assert parse_container(path) == want


@pytest.mark.parametrize("path", [
    "", "/", "/user.slice/user-0.slice/session-3.scope", "/system.slice/sshd.service",
    "/kubepods.slice/kubepods-besteffort.slice", "/kubepods/besteffort/pod" + UID,
    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + UID.replace("-", "_")
    + ".slice/crio-conmon-" + CID + ".scope",
    "/docker/not-an-id", "/" + CID, "garbage//x/../y", "/kubepods/pod" + UID + "/tooshort",
    "/\x00\xff weird", "/a" * 500,
])
def test_unknown_layouts_are_the_host(path: str) -> None:
    ident = parse_container(path)
    assert ident == HOST and ident.is_host


@pytest.mark.kernel
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("driver", DRIVERS)
def test_resolver_maps_real_cgroup_ids(runtime: str, driver: str) -> None:
    resolver = CgroupResolver(rewalk_interval_s=0.0)
    with container(runtime=runtime, driver=driver) as c:
        path, ident = resolver.resolve(c.cgroup_id)  # created after the first walk: a miss
        assert path == c.rel_path
        assert (ident.container_id, ident.pod_uid) == (c.container_id, c.pod_uid)
        assert resolver.resolve(c.cgroup_id)[0] == c.rel_path  # now cached


@pytest.mark.kernel
def test_resolver_uses_proc_cgroup_of_the_pid_first() -> None:
    resolver = CgroupResolver(rewalk_interval_s=3600.0)  # no rewalk allowed
    with container() as c:
        p = c.popen(["sleep", "5"])
        try:
            for _ in range(100):
                if p.pid in c.pids():
                    break
            path, ident = resolver.resolve(c.cgroup_id, pid=p.pid)
            assert path == c.rel_path and ident.container_id == c.container_id
        finally:
            p.kill()
            p.wait()


@pytest.mark.kernel
def test_a_new_cgroup_whose_process_exited_resolves_by_its_id_without_a_walk() -> None:
    """A container made after the last walk whose only process exited before its records were
    decoded: /proc has nothing and no walk is due, so only the id itself (a kernfs handle)
    names it. Without the handle this read as the host (a short-lived workload's records lost
    their container id)."""
    resolver = CgroupResolver(rewalk_interval_s=3600.0)  # no rewalk allowed
    walks = resolver.walks
    with container() as c:
        p = c.popen(["/bin/true"])
        p.wait()
        path, ident = resolver.resolve(c.cgroup_id, pid=p.pid)
        assert (path, ident.container_id, ident.pod_uid) == (
            c.rel_path, c.container_id, c.pod_uid)
        assert resolver.walks == walks and resolver.stats()["cgroup_handle_hits"] == 1
        gone = c.cgroup_id
    # removed: the handle says so (ESTALE), the host is answered and the id remembered as gone
    fresh = CgroupResolver(rewalk_interval_s=3600.0)
    assert fresh.resolve(gone) == ("", HOST)
    misses = fresh.misses
    assert fresh.resolve(gone) == ("", HOST) and fresh.misses == misses
    assert fresh.stats()["cgroup_unresolved"] == 2 and fresh.handles


@pytest.mark.kernel
def test_resolver_unknown_id_and_host_cgroup() -> None:
    resolver = CgroupResolver(rewalk_interval_s=3600.0)
    assert resolver.resolve(2**62) == ("", HOST)
    with cgroup_dir("/og-unknown-layout/x") as d:
        r2 = CgroupResolver()
        path, ident = r2.resolve(os.stat(d).st_ino)
        assert path == "/og-unknown-layout/x" and ident == HOST


def test_resolver_is_bounded() -> None:
    resolver = CgroupResolver(max_entries=5)
    assert len(resolver) <= 5
