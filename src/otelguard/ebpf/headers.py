"""Which kernel headers BCC compiles against, and why: the host's or the agent image's fallback.

BCC compiles the probes at load time with the kernel's headers. Three places may hold them, in
this order (see docs/architecture.md#images for how the agent image is laid out):

1. ``BCC_KERNEL_SOURCE`` set by the operator: BCC's own override, used as given.
2. The host's ``/lib/modules/$(uname -r)/build`` (and ``source``): in a pod, the DaemonSet mounts
   the host's ``/lib/modules`` and ``/usr/src`` at the same paths, so the symlinks resolve. When
   the target does not carry the running release it is a fallback that ``scripts/setup.sh``
   linked (Debian's newest headers).
3. ``OTELGUARD_KERNEL_HEADERS``: one merged header tree (Debian's ``linux-headers-*-common``
   with the ``-amd64`` generated files on top) that the agent image carries outside
   ``/usr/src``, so a host mount there cannot hide it. Chosen only when (2) has none; the
   loader then points BCC at it through ``BCC_KERNEL_SOURCE``.

Fallback headers are safe for otelguard: the probes read tracepoint fields (layouts from tracefs
at load time) and helpers, never kernel struct offsets. ``otelguard doctor`` prints the choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from otelguard.ebpf.settings import kernel_header_env

HeaderSource = Literal["env", "host", "host-fallback", "image", "none"]
MODULES_DIR = Path("/lib/modules")


@dataclass(frozen=True)
class KernelHeaders:
    source: HeaderSource
    path: Optional[Path]  # the tree BCC compiles in (its cwd), None when there is none
    detail: str


def _is_tree(path: Path) -> bool:
    """BCC's own test for a usable tree: ``include/linux/kconfig.h`` under it."""
    return (path / "include" / "linux" / "kconfig.h").is_file()


def _mount_points() -> set[str]:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return set()
    return {line.split()[4] for line in lines if len(line.split()) > 4}


def resolve(release: Optional[str] = None, modules_dir: Path = MODULES_DIR,
            env: Optional[tuple[Optional[str], Optional[str]]] = None) -> KernelHeaders:
    """The headers BCC will use for ``release`` (default: the running kernel's); ``env``:
    (``BCC_KERNEL_SOURCE``, ``OTELGUARD_KERNEL_HEADERS``), default from the environment."""
    override, image = kernel_header_env() if env is None else env
    release = release or os.uname().release
    if override:
        p = Path(override)
        ok = _is_tree(p)
        return KernelHeaders("env" if ok else "none", p if ok else None,
                             f"BCC_KERNEL_SOURCE={p}" + ("" if ok else " has no include/linux/kconfig.h"))
    kdir = modules_dir / release
    build = kdir / "build"
    if build.exists() and (_is_tree(build) or _is_tree(kdir / "source")):
        target = os.path.realpath(build)
        # in a merged-/usr image /lib is a link, so the mount shows up as /usr/lib/modules
        mounted = bool({str(modules_dir), os.path.realpath(modules_dir)} & _mount_points())
        where = f"host-mounted {modules_dir}" if mounted else "host"
        if release in target:
            return KernelHeaders("host", build, f"{where}: {build} -> {target} (matching headers)")
        return KernelHeaders("host-fallback", build,
                             f"{where}: {build} -> {target}: fallback headers (not {release})")
    if image and _is_tree(Path(image)):
        return KernelHeaders("image", Path(image),
                             f"image fallback {image} (no headers for {release} under {kdir})")
    missing = f"{build} missing" if not build.exists() else f"{build} has no headers"
    if image:
        missing += f"; OTELGUARD_KERNEL_HEADERS={image} has no include/linux/kconfig.h"
    return KernelHeaders("none", None, missing)


def apply(headers: KernelHeaders) -> None:
    """Point BCC at the image's tree (libbcc reads ``BCC_KERNEL_SOURCE`` at every compile)."""
    if headers.source == "image" and headers.path is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers.path)
