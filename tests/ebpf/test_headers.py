"""Which kernel headers BCC gets (otelguard.ebpf.headers), on header trees laid out in tmp dirs
the way Debian, a host mount and the agent image lay them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otelguard.ebpf import headers

REL = "6.18.1-test"


def _tree(path: Path) -> Path:
    (path / "include" / "linux").mkdir(parents=True)
    (path / "include" / "linux" / "kconfig.h").write_text("")
    return path


def _debian_split(src: Path, abi: str, modules: Path, release: str) -> None:
    """/usr/src/linux-headers-ABI-{amd64,common} with build/source links, as Debian installs."""
    (src / f"linux-headers-{abi}-amd64" / "include" / "generated").mkdir(parents=True)
    _tree(src / f"linux-headers-{abi}-common")
    (modules / release).mkdir(parents=True)
    (modules / release / "build").symlink_to(src / f"linux-headers-{abi}-amd64")
    (modules / release / "source").symlink_to(src / f"linux-headers-{abi}-common")


def test_matching_host_headers(tmp_path: Path) -> None:
    _debian_split(tmp_path / "src", REL, tmp_path / "modules", REL)
    found = headers.resolve(REL, tmp_path / "modules", (None, None))
    assert found.source == "host" and "matching headers" in found.detail
    assert found.path == tmp_path / "modules" / REL / "build"


def test_linked_fallback_on_the_host(tmp_path: Path) -> None:
    _debian_split(tmp_path / "src", "6.1.0-57", tmp_path / "modules", REL)
    found = headers.resolve(REL, tmp_path / "modules", (None, None))
    assert found.source == "host-fallback"
    assert f"linux-headers-6.1.0-57-amd64: fallback headers (not {REL})" in found.detail


def test_image_tree_when_the_host_has_none(tmp_path: Path) -> None:
    image = _tree(tmp_path / "image")
    (tmp_path / "modules").mkdir()
    found = headers.resolve(REL, tmp_path / "modules", (None, str(image)))
    assert found.source == "image" and found.path == image
    assert found.detail.startswith(f"image fallback {image} (no headers for {REL}")


def test_host_wins_over_the_image(tmp_path: Path) -> None:
    _debian_split(tmp_path / "src", REL, tmp_path / "modules", REL)
    image = _tree(tmp_path / "image")
    assert headers.resolve(REL, tmp_path / "modules", (None, str(image))).source == "host"


def test_broken_build_link_falls_to_the_image(tmp_path: Path) -> None:
    """A host /lib/modules mounted without /usr/src: build points nowhere."""
    (tmp_path / "modules" / REL).mkdir(parents=True)
    (tmp_path / "modules" / REL / "build").symlink_to(tmp_path / "nowhere")
    image = _tree(tmp_path / "image")
    assert headers.resolve(REL, tmp_path / "modules", (None, str(image))).source == "image"


def test_none_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "modules").mkdir()
    found = headers.resolve(REL, tmp_path / "modules", (None, str(tmp_path / "empty")))
    assert found.source == "none" and found.path is None
    assert f"{REL}/build missing" in found.detail and "has no include/linux/kconfig.h" in found.detail


def test_bcc_kernel_source_wins(tmp_path: Path) -> None:
    _debian_split(tmp_path / "src", REL, tmp_path / "modules", REL)
    own = _tree(tmp_path / "own")
    found = headers.resolve(REL, tmp_path / "modules", (str(own), None))
    assert found.source == "env" and found.detail == f"BCC_KERNEL_SOURCE={own}"


def test_apply_points_bcc_at_the_image_tree_only(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "")  # recorded, so the test's value is undone
    monkeypatch.delenv("BCC_KERNEL_SOURCE")
    image = _tree(tmp_path / "image")
    headers.apply(headers.KernelHeaders("host", tmp_path, "x"))
    assert "BCC_KERNEL_SOURCE" not in os.environ
    headers.apply(headers.KernelHeaders("image", image, "x"))
    assert os.environ["BCC_KERNEL_SOURCE"] == str(image)
