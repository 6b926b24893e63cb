"""The container images `make images` builds (scripts/images/build.sh), checked for real.

Each OCI archive is read as a file (user, entrypoint, labels, reference), imported into a private
containerd (tests/support/containerd.py) under its exact reference, and run there with runc:
the processor as uid 65532 on a read-only root file system, the agent's ``otelguard doctor``
once with the image's fallback headers and once with the host's /lib/modules and /usr/src
mounted, as the DaemonSet mounts them. See docs/architecture.md#images.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import containerd
from tests.support.images import IMAGES, archive, image_key, image_ref, oci_image
from tests.support.prerequisites import missing, require_root

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
LABELS = ("title", "description", "version", "licenses", "source", "base.name")
USERS = {"agent": "0:0", "processor": "65532:65532", "collector": "10001:10001"}


def test_image_references_are_the_shared_names() -> None:
    assert [image_ref(n) for n in IMAGES] == [
        "ghcr.io/otelguard/otelguard-agent:0.1.0",
        "ghcr.io/otelguard/otelguard-processor:0.1.0",
        "ghcr.io/otelguard/otelcol-otelguard:0.1.0",
    ]


def test_cache_key_follows_every_input(tmp_path: Path) -> None:
    """A changed Containerfile, base, name or context file is a different archive; the same
    inputs are the same key (the second `make images` is a cache hit)."""
    file = tmp_path / "x.Containerfile"
    shutil.copy(ROOT / "deploy/images/otelguard.Containerfile", file)
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.py").write_text("x = 1\n")
    key = image_key(file, "base1", "agent", ctx)
    assert len(key) == 16 and image_key(file, "base1", "agent", ctx) == key
    file.write_text(file.read_text() + "\nLABEL changed=1\n")
    changed = image_key(file, "base1", "agent", ctx)
    assert changed != key
    assert image_key(file, "base2", "agent", ctx) != changed
    assert image_key(file, "base1", "processor", ctx) != changed
    (ctx / "src" / "a.py").write_text("x = 2\n")
    assert image_key(file, "base1", "agent", ctx) != changed


@pytest.mark.parametrize("name", IMAGES)
def test_image_config(name: str) -> None:
    path = archive(name)
    assert path.is_symlink() and path.resolve().name.startswith(path.name.split(".")[0] + "-")
    desc, config = oci_image(path)
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == image_ref(name)
    cfg = config["config"]
    assert cfg["User"] == USERS[name]
    binary = ("/usr/local/bin/otelcol-otelguard" if name == "collector"
              else "/opt/otelguard/venv/bin/otelguard")
    assert cfg["Entrypoint"] == [binary]
    labels = cfg["Labels"]
    for key in LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), f"{name}: label {key} missing"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.title"] == image_ref(name).rsplit("/", 1)[1][:-6]
    env = dict(e.split("=", 1) for e in cfg.get("Env", []))
    if name == "agent":
        assert env["OTELGUARD_KERNEL_HEADERS"] == "/opt/otelguard/kernel-headers/current"
    else:
        assert "OTELGUARD_KERNEL_HEADERS" not in env


@pytest.fixture(scope="module")
def node() -> Iterator[containerd.Containerd]:
    """A private containerd with all three archives imported (namespace k8s.io)."""
    require_root()
    why = containerd.missing()
    if why:
        missing(why)
    paths = {n: archive(n) for n in IMAGES}
    cd = containerd.start()
    try:
        for path in paths.values():
            containerd.import_archive(cd.sock, path)
        yield cd
    finally:
        cd.stop()


def test_archives_import_under_their_references(node: containerd.Containerd) -> None:
    refs = node.image_refs()
    for name in IMAGES:
        assert image_ref(name) in refs, f"{image_ref(name)} not in {refs}"


def test_processor_runs_non_root_on_a_read_only_root(node: containerd.Containerd,
                                                     tmp_path: Path) -> None:
    """The processor starts as 65532 with a read-only root and journals into its state dir
    (a writable mount, as the Deployment's emptyDir), nowhere else."""
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65532, 65532)
    config = tmp_path / "pipeline.yaml"
    config.write_text("service:\n  state_dir: /var/lib/otelguard/state\n"
                      "processors:\n  - type: falco_rules\n  - type: noise_control\n    name: noise\n")
    script = ("id -u; id -g; touch /opt/probe 2>/dev/null && echo root-writable; "
              "otelguard processor --insecure --listen 127.0.0.1:4317 --metrics 127.0.0.1:9466 "
              "--config /etc/otelguard/pipeline.yaml --export jsonl:/var/lib/otelguard/state/o "
              "& pid=$!; sleep 6; kill -INT $pid; wait $pid; echo exit=$?")
    done = node.run(image_ref("processor"), ["sh", "-c", script], [
        "--read-only",
        "--mount", f"type=bind,src={state},dst=/var/lib/otelguard/state,options=rbind:rw",
        "--mount", f"type=bind,src={config},dst=/etc/otelguard/pipeline.yaml,options=rbind:ro",
    ], timeout=120)
    out = done.stdout + done.stderr
    lines = done.stdout.split()
    assert lines[:2] == ["65532", "65532"], out
    assert "root-writable" not in out
    assert "exit=0" in done.stdout, out
    journals = sorted(p.name for p in state.iterdir())
    assert "noise.journal" in journals, (journals, out)
    assert all(p.stat().st_uid == 65532 for p in state.iterdir())


def _doctor(node: containerd.Containerd, mounts: list[str]) -> str:
    sys_mounts = ["/sys/kernel/tracing", "/sys/fs/cgroup", "/sys/kernel/security"]
    # the host's PID namespace, as the DaemonSet's hostPID: BPF reports host pids, and the
    # sensor (and doctor's ring-buffer self-test) recognise their own process by its pid
    options = ["--privileged", "--net-host", "--with-ns", f"pid:/proc/{os.getpid()}/ns/pid"]
    for m in sys_mounts + mounts:
        if os.path.isdir(m):
            options += ["--mount", f"type=bind,src={m},dst={m},options=rbind:ro"]
    done = node.run(image_ref("agent"), ["otelguard", "doctor"], options, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "ok ringbuf:" in out and "all required checks passed" in out, out
    return out


def test_agent_doctor_uses_image_headers_without_host_mounts(node: containerd.Containerd) -> None:
    out = _doctor(node, [])
    line = next(x for x in out.splitlines() if "kernel-headers:" in x)
    assert line.startswith("WARN kernel-headers: image fallback "
                           "/opt/otelguard/kernel-headers/current"), line


def test_agent_doctor_prefers_host_headers_when_mounted(node: containerd.Containerd) -> None:
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        missing(f"{build} missing on this host: `make setup` links Debian's headers there")
    out = _doctor(node, ["/lib/modules", "/usr/src"])
    line = next(x for x in out.splitlines() if "kernel-headers:" in x)
    assert "host-mounted /lib/modules" in line and str(build) in line, line
    assert os.path.realpath(build) in line, line
