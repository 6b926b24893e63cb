"""Ground-truth container roots for the risk tests, built from the host's real Debian packages.

``debian_root`` copies each named package's files (as its ``/var/lib/dpkg/info/*.list`` lists
them, symlinks kept as symlinks) into a directory laid out like a merged-/usr Debian image
(``/lib -> usr/lib``, ...), and writes the dpkg database for exactly those packages (their
``status`` stanzas from ``dpkg-query``, their ``.list`` files). ``add_venv`` adds a venv whose
``bin/python`` is an absolute symlink (resolved against the container's root, or it points to the
host's python) and copies real installed distributions (their files as their ``RECORD`` lists
them) into its site directory. ``overlay`` mounts the result as an overlay lower layer, as a
container runtime would.

``dpkg_owner`` is the independent oracle: the host's own ``dpkg-query -S`` for a path (the root's
files are the host's, at the same paths).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Optional, Sequence

USRMERGE = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


def _list_file(package: str) -> Path:
    info = Path("/var/lib/dpkg/info")
    for name in (f"{package}.list", f"{package}:amd64.list"):
        if (info / name).exists():
            return info / name
    raise FileNotFoundError(f"{package} is not installed on this host (scripts/setup.sh)")


def _copy(src: Path, dst: Path) -> None:
    if src.is_symlink():
        if not dst.is_symlink() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    elif src.is_file() and not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _inside(root: Path, path: str) -> Path:
    """``path`` under ``root``, following symlinks of ``root``'s own directories (merged /usr)."""
    parts = [p for p in path.split("/") if p]
    cur = root
    for i, comp in enumerate(parts):
        nxt = cur / comp
        if i < len(parts) - 1 and nxt.is_symlink():
            target = os.readlink(nxt)
            nxt = (root / target.lstrip("/")) if target.startswith("/") else (cur / target)
        cur = nxt
    return cur


def debian_root(dest: Path, packages: Sequence[str]) -> dict[str, str]:
    """Build the root; returns {package: version}."""
    for name, target in USRMERGE.items():
        (dest / target).mkdir(parents=True, exist_ok=True)
        os.symlink(target, dest / name)
    (dest / "etc").mkdir(exist_ok=True)
    shutil.copy2("/etc/os-release", dest / "etc/os-release")
    info = dest / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    versions: dict[str, str] = {}
    stanzas = []
    for package in packages:
        listing = _list_file(package)
        for line in listing.read_text().splitlines():
            if line.startswith("/") and line != "/.":
                _copy(Path(line), _inside(dest, line))
        shutil.copy2(listing, info / listing.name)
        stanza = subprocess.run(["dpkg-query", "-s", package], check=True, capture_output=True,
                                text=True).stdout.strip()
        stanzas.append(stanza)
        versions[package] = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], check=True, capture_output=True,
            text=True).stdout
    (dest / "var/lib/dpkg/status").write_text("\n\n".join(stanzas) + "\n")
    return versions


def add_venv(dest: Path, venv: str, python: str, site_from: Path,
             distributions: Sequence[str]) -> dict[str, str]:
    """A venv at ``venv`` (absolute, inside the root) whose python is ``python``; copies the
    named distributions (dist-info directory names without version, e.g. ``idna``) from
    ``site_from``. Returns {normalised name: version}."""
    vdir = dest / venv.lstrip("/")
    site = vdir / "lib/python3.11/site-packages"
    site.mkdir(parents=True)
    (vdir / "bin").mkdir()
    os.symlink(python, vdir / "bin/python")  # absolute: only right inside the container's root
    os.symlink("python", vdir / "bin/python3")
    (vdir / "pyvenv.cfg").write_text(f"home = {os.path.dirname(python)}\n"
                                     "include-system-site-packages = false\nversion = 3.11.2\n")
    found: dict[str, str] = {}
    for dist in distributions:
        (info,) = [d for d in site_from.iterdir()
                   if d.name.endswith(".dist-info") and d.name.split("-")[0].lower() == dist]
        for line in (info / "RECORD").read_text().splitlines():
            rel = line.rsplit(",", 2)[0]
            src = site_from / rel
            if src.is_file() and ".." not in rel:
                dst = site / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        found[dist] = info.name[: -len(".dist-info")].split("-", 1)[1]
    return found


@contextlib.contextmanager
def overlay(lower: Path, work: Path) -> Iterator[Path]:
    """``lower`` mounted read-only under an overlay (upper and work dirs in ``work``)."""
    upper, wdir, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, wdir, merged):
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={wdir}", str(merged)],
                   check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False)


def dpkg_owner(path: str) -> Optional[str]:
    """The host's dpkg's answer for ``path`` (also tried as its pre-merged-/usr spelling, as
    Debian 12 lists /lib/... for files living in /usr/lib/...)."""
    candidates = [path]
    for short, long_ in USRMERGE.items():
        if path.startswith(f"/{long_}/"):
            candidates.append(f"/{short}/" + path[len(long_) + 2:])
    for candidate in candidates:
        out = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            owners, _, listed = line.rpartition(": ")
            if listed == candidate:
                return owners.split(",")[0].strip().split(":")[0]
    return None
