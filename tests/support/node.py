"""The real one-node cluster (scripts/cluster/up.sh) for tests: start one, or attach to the one
``make cluster`` runs, and stop only what this session started.

Usage (the session fixture ``node`` below does this)::

    node = start_node(tmp / "cluster")   # attaches when a cluster already runs on this host
    node.kubeconfig                      # admin kubeconfig (system:masters)
    node.name, node.host_ip              # the node's name; 198.51.100.1, how pods reach the host
    node.import_image(archive)           # an OCI archive into its containerd (k8s.io namespace)
    node.kubectl("get", "pods", "-A")    # the kubectl built with it
    node.stop()                          # scripts/cluster/down.sh, only if this session started it

One cluster per host (its bridge, addresses and kube-proxy's iptables chains are host-wide):
when ``OTELGUARD_CLUSTER_DIR`` names a running cluster, or ``/run/otelguard-cluster.active``
names one, the tests use it and leave it running. Starting one costs ~30-90 s on 2 busy cores
(the Kubernetes binaries must be built: ``scripts/stack/build.sh kubernetes coredns``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from tests.support import oci_images
from tests.support.prerequisites import missing, require_file, require_root

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "scripts" / "cluster" / "up.sh"
DOWN = ROOT / "scripts" / "cluster" / "down.sh"
ACTIVE = Path("/run/otelguard-cluster.active")
CACHE = Path(os.environ.get("OTELGUARD_CACHE", Path.home() / ".cache" / "otelguard"))
START_TIMEOUT = 900.0  # apt installs on a fresh machine, then up.sh's own bounded waits


@dataclass
class Node:
    """A running one-node cluster; ``owned`` when this process started it."""

    state_dir: Path
    env: dict[str, str]
    owned: bool

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"])

    @property
    def name(self) -> str:
        return self.env["OTELGUARD_CLUSTER_NODE"]

    @property
    def host_ip(self) -> str:
        return self.env["OTELGUARD_CLUSTER_HOST_IP"]

    @property
    def dns_ip(self) -> str:
        return self.env["OTELGUARD_CLUSTER_DNS"]

    @property
    def containerd(self) -> str:
        return self.env["OTELGUARD_CLUSTER_CONTAINERD"]

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI archive into the node's containerd; returns the image names."""
        return oci_images.import_archive(archive, self.containerd)

    def kubectl(self, *args: str, timeout: float = 120.0, input: Optional[str] = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.env["OTELGUARD_CLUSTER_KUBECTL"], "--kubeconfig",
                               str(self.kubeconfig), *args], input=input, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout}{proc.stderr}")
        return proc

    def stop(self) -> None:
        if self.owned:
            _script(DOWN, self.state_dir, 300.0)
            self.owned = False


def _read_env(state_dir: Path) -> dict[str, str]:
    env = {}
    for line in (state_dir / "cluster.env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


def _running(state_dir: Path) -> bool:
    """The cluster in ``state_dir`` is up (its env written, its API server's pid alive)."""
    pidfile = state_dir / "run" / "kube-apiserver.pid"
    if not (state_dir / "cluster.env").exists() or not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _script(script: Path, state_dir: Path, timeout: float) -> str:
    env = dict(os.environ, OTELGUARD_CLUSTER_DIR=str(state_dir), OTELGUARD_CACHE=str(CACHE))
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return proc.stdout


def running_cluster() -> Optional[Path]:
    """The state dir of the cluster this host runs, if any (``OTELGUARD_CLUSTER_DIR`` first)."""
    candidates = [os.environ.get("OTELGUARD_CLUSTER_DIR", "")]
    if ACTIVE.exists():
        candidates.append(ACTIVE.read_text().strip())
    for c in candidates:
        if c and _running(Path(c)):
            return Path(c)
    return None


def start_node(state_dir: Path) -> Node:
    """Attach to the running cluster, or start one in ``state_dir`` (then ``owned``)."""
    attached = running_cluster()
    if attached is not None:
        # up.sh is idempotent: it re-imports the cache's images and waits for readiness.
        _script(UP, attached, START_TIMEOUT)
        return Node(attached, _read_env(attached), owned=False)
    try:
        _script(UP, state_dir, START_TIMEOUT)
    except (RuntimeError, subprocess.TimeoutExpired):
        _script(DOWN, state_dir, 300.0)
        raise
    return Node(state_dir, _read_env(state_dir), owned=True)


def require_node_prerequisites() -> None:
    require_root()
    for b in ("kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler",
              "kube-proxy", "kubectl"):
        require_file(CACHE / "kubernetes" / b, "run `bash scripts/stack/build.sh kubernetes`")
    require_file(CACHE / "coredns" / "coredns", "run `bash scripts/stack/build.sh coredns`")
    if not Path("/sys/fs/cgroup").exists():
        missing("no /sys/fs/cgroup")


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The one-node cluster for the session; stopped at the end if the session started it."""
    require_node_prerequisites()
    n = start_node(tmp_path_factory.mktemp("cluster"))
    try:
        yield n
    finally:
        n.stop()
