"""A private containerd for tests: Debian's containerd under a temporary root, state and socket.

It never touches a system containerd: its own ``root``, ``state``, gRPC socket and config (CRI
plugin disabled, so nothing conflicts with a kubelet's containerd); ``run()`` gives runc its own
``--runc-root``. The one shared path is containerd 1.6's shim socket directory
``/run/containerd/s`` (hard-coded there; each socket is named by a hash of our socket address,
so it cannot collide). Used by tests/e2e/test_images.py; a cluster fixture may reuse
:func:`import_archive` against its own socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tests.support.polling import wait_until

CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"""


def missing() -> Optional[str]:
    """Why a private containerd cannot run here (None when it can)."""
    for tool in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install containerd runc)"
    if os.geteuid() != 0:
        return "containerd needs root"
    return None


@dataclass
class Containerd:
    """One running private containerd; ``ctr()`` talks to it in namespace ``k8s.io``."""

    base: Path
    proc: subprocess.Popen[bytes]
    namespace: str = "k8s.io"
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base / "containerd.log"

    @property
    def sock(self) -> Path:
        return self.base / "containerd.sock"

    def ctr(self, *args: str, timeout: float = 120.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["ctr", "-a", str(self.sock), "-n", self.namespace, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def image_refs(self) -> list[str]:
        return [line.split()[0] for line in self.ctr("images", "ls").stdout.splitlines()[1:]
                if line.strip()]

    def run(self, ref: str, args: Sequence[str], options: Sequence[str] = (),
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``ctr run --rm`` of ``ref`` with ``args`` (the image's entrypoint is not prepended
        by ctr, so ``args`` is the whole command line); runc keeps its state under ``base``."""
        cid = f"og-test-{uuid.uuid4().hex[:12]}"
        return self.ctr("run", "--rm", "--runc-root", str(self.base / "runc"), *options,
                        ref, cid, *args, timeout=timeout, check=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # overlay snapshots may still be mounted after a killed task; unmount ours only
        root = str(self.base / "root")
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            mnt = line.split()[1]
            if mnt.startswith(root) or mnt.startswith(str(self.base / "state")):
                subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def start(timeout: float = 30.0) -> Containerd:
    """Start a private containerd under a fresh temporary directory and wait for its socket."""
    base = Path(tempfile.mkdtemp(prefix="og-containerd-"))
    config = base / "config.toml"
    config.write_text(CONFIG.format(root=base / "root", state=base / "state",
                                    sock=base / "containerd.sock"))
    log = open(base / "containerd.log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    cd = Containerd(base, proc)
    ready = wait_until(lambda: cd.sock.exists() and cd.ctr("version", check=False).returncode == 0,
                       timeout, give_up=lambda: proc.poll() is not None)
    if not ready:
        text = (base / "containerd.log").read_text(errors="replace")[-3000:]
        cd.stop()
        raise AssertionError(f"private containerd did not answer within {timeout}s:\n{text}")
    return cd


def import_archive(sock: Path, archive: Path, namespace: str = "k8s.io",
                   timeout: float = 300.0) -> str:
    """``ctr images import`` of one OCI archive into the containerd at ``sock`` (ours or a
    cluster's); the archive's ``org.opencontainers.image.ref.name`` is the full reference, so the
    image lands under exactly that name. Returns ctr's output."""
    cmd = ["ctr", "-a", str(sock), "-n", namespace, "images", "import", str(archive)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n"
                             f"{done.stderr}")
    return done.stdout
