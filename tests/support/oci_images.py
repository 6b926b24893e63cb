"""The one-node cluster's test images, written as OCI image archives with the standard library,
and imported into its containerd (no registry anywhere).

- ``pause``: the pod sandbox image, a static C program (scripts/cluster/pause.c, ``gcc -static``)
  under containerd 1.6's default ``sandbox_image`` reference, so nothing ever pulls it.
- ``testbox``: Debian's ``busybox-static`` as ``/bin/busybox`` plus one symlink per applet (sh, cat,
  nc with ``-e``, wget, nslookup, httpd, sleep, ...) and an ``/etc/passwd``/``group``/``shadow``.

Each archive is ``$OTELGUARD_CACHE/images/<name>-<digest12>.oci.tar`` (content-keyed: tar
entries sorted, mtimes 0, gzip without a timestamp, so the same inputs give the same bytes) with
the stable name ``<name>.oci.tar`` a symlink to it. The image reference is in the index's
``io.containerd.image.name`` annotation, which ``ctr images import`` uses as the image's name.

Which archives :func:`stable_archives` imports: every ``*.oci.tar`` in the directory that is a
symlink, or a plain file whose name does not end in ``-<8+ hex digits>.oci.tar`` (a content-keyed
file is reached through its symlink; an old one nobody points to must not re-tag a name).

Stdlib only: ``scripts/cluster/up.sh`` runs ``python3 -m tests.support.oci_images`` with Debian's
Python before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
PAUSE_SOURCE = ROOT / "scripts" / "cluster" / "pause.c"
BUSYBOX = Path("/bin/busybox")
# containerd 1.6's default [plugins."io.containerd.grpc.v1.cri"] sandbox_image.
PAUSE_REF = "registry.k8s.io/pause:3.6"
TESTBOX_REF = "ghcr.io/otelguard/testbox:0.1.0"
_KEYED = re.compile(r"-[0-9a-f]{8,}\.oci\.tar$")

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def images_dir() -> Path:
    cache = Path(os.environ.get("OTELGUARD_CACHE", Path.home() / ".cache" / "otelguard"))
    return cache / "images"


@dataclass(frozen=True)
class Entry:
    """One file system entry of a layer: a file (``data``), a directory, or a symlink."""

    path: str
    mode: int = 0o755
    data: bytes | None = None
    link: str | None = None


def _layer(entries: Sequence[Entry]) -> bytes:
    """A deterministic uncompressed tar of ``entries`` (sorted, owner root, mtime 0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(e.path.lstrip("/"))
            info.mode, info.mtime, info.uid, info.gid = e.mode, 0, 0, 0
            if e.link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, e.link
                tar.addfile(info)
            elif e.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_archive(out_dir: Path, name: str, ref: str, entries: Sequence[Entry],
                  config: dict[str, object]) -> Path:
    """Write ``<name>-<digest12>.oci.tar`` (one layer) and point ``<name>.oci.tar`` at it."""
    layer = _layer(entries)
    blob = _gzip(layer)
    image_config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "otelguard tests/support/oci_images.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": _digest(image_config), "size": len(image_config)},
        "layers": [{"mediaType": LAYER, "digest": _digest(blob), "size": len(blob)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST, "digest": _digest(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]},
        }],
    }, sort_keys=True).encode()
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for data in (blob, image_config, manifest):
        files["blobs/sha256/" + hashlib.sha256(data).hexdigest()] = data
    out_dir.mkdir(parents=True, exist_ok=True)
    keyed = out_dir / f"{name}-{hashlib.sha256(manifest).hexdigest()[:12]}.oci.tar"
    if not keyed.exists():
        entries_ = [Entry("blobs", 0o755), Entry("blobs/sha256", 0o755)]
        entries_ += [Entry(p, 0o644, d) for p, d in files.items()]
        tmp = keyed.with_suffix(".tmp")
        tmp.write_bytes(_layer(entries_))
        tmp.rename(keyed)
    stable = out_dir / f"{name}.oci.tar"
    link_tmp = out_dir / f".{name}.oci.tar.link"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(keyed.name)
    link_tmp.rename(stable)
    return stable


def build_pause(out_dir: Path) -> Path:
    """The sandbox image: /pause, compiled here with ``gcc -static``."""
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(["gcc", "-static", "-Os", "-s", "-o", str(binary), str(PAUSE_SOURCE)],
                       check=True, capture_output=True, timeout=120)
        data = binary.read_bytes()
    return write_archive(out_dir, "pause", PAUSE_REF, [Entry("pause", 0o755, data)],
                         {"Entrypoint": ["/pause"], "Env": ["PATH=/"]})


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True,
                         timeout=30).stdout
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def build_testbox(out_dir: Path) -> Path:
    """ghcr.io/otelguard/testbox: busybox-static and the files an attack scenario reads."""
    if not BUSYBOX.exists():
        raise FileNotFoundError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    entries = [Entry(d, 0o755) for d in ("bin", "etc", "root", "proc", "sys", "dev", "var", "home")]
    entries += [Entry("tmp", 0o1777), Entry("bin/busybox", 0o755, BUSYBOX.read_bytes())]
    entries += [Entry(f"bin/{a}", 0o777, link="busybox") for a in _applets()]
    entries += [
        Entry("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n"
                                   b"nobody:x:65534:65534:nobody:/home:/bin/false\n"),
        Entry("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n"),
        Entry("etc/shadow", 0o600, b"root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"),
    ]
    return write_archive(out_dir, "testbox", TESTBOX_REF, entries,
                         {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "/"})


def stable_archives(directory: Path) -> list[Path]:
    """The archives to import from ``directory`` (see the module docstring for the rule)."""
    found = []
    for path in sorted(directory.glob("*.oci.tar")):
        if path.is_symlink() or not _KEYED.search(path.name):
            if path.exists():
                found.append(path)
    return found


def import_archive(archive: Path, address: str, namespace: str = "k8s.io",
                   timeout: float = 600.0) -> list[str]:
    """``ctr -n k8s.io images import`` into the containerd at ``address`` (unpacked for its
    default snapshotter, so the CRI sees it at once); returns the names ctr reports."""
    ctr = shutil.which("ctr") or "/usr/bin/ctr"
    proc = subprocess.run([ctr, "--address", address, "-n", namespace, "images", "import",
                           str(archive.resolve())],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ctr images import {archive} failed ({proc.returncode}):\n"
                           f"{proc.stdout}{proc.stderr}")
    # "unpacking ghcr.io/otelguard/testbox:0.1.0 (sha256:...)...done", one line per image
    names = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("unpacking ")]
    if not names:
        raise RuntimeError(f"ctr images import {archive} named no image:\n{proc.stdout}{proc.stderr}")
    return names


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.support.oci_images")
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="write pause.oci.tar and testbox.oci.tar")
    build.add_argument("--dir", type=Path, default=images_dir())
    imp = sub.add_parser("import", help="import every stable archive of --dir into containerd")
    imp.add_argument("--dir", type=Path, default=images_dir())
    imp.add_argument("--address", required=True, help="containerd socket")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        for path in (build_pause(args.dir), build_testbox(args.dir)):
            print(f"{path} -> {path.resolve().name}")
        return 0
    for path in stable_archives(args.dir):
        print(f"imported {path.name}: {', '.join(import_archive(path, args.address))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
