"""otelguard's container images as tests see them: references, archives, cache keys, configs.

The names and keys come from scripts/images/keys.sh (the build's own functions, called through
bash), so a test checks what the build does, not a copy of it.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from tests.support.prerequisites import require_file
from tests.support.stack import CACHE

ROOT = Path(__file__).resolve().parents[2]
KEYS = ROOT / "scripts" / "images" / "keys.sh"
IMAGES = ("agent", "processor", "collector")
ARCHIVE_DIR = CACHE / "images"


def _keys(*call: str) -> str:
    script = f'source "{KEYS}"; "$@"'
    done = subprocess.run(["bash", "-c", script, "keys", *call], capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.strip()


def image_ref(name: str) -> str:
    return _keys("image_ref", name)


def image_key(containerfile: Path, base_key: str, name: str, context: Path) -> str:
    return _keys("image_key", str(containerfile), base_key, name, str(context))


def archive(name: str) -> Path:
    """The stable archive path of an image (a symlink to its content-keyed file)."""
    repo = image_ref(name).rsplit("/", 1)[1].split(":", 1)[0]
    path = ARCHIVE_DIR / f"{repo}.oci.tar"
    require_file(path, "run `make images` (scripts/images/build.sh)")
    return path


def _blob(tar: tarfile.TarFile, digest: str) -> Any:
    algo, hexd = digest.split(":", 1)
    member = tar.extractfile(f"blobs/{algo}/{hexd}")
    assert member is not None, f"{digest} missing from the archive"
    return json.load(member)


def oci_image(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index.json's manifest descriptor, the image config) of a one-image OCI archive."""
    with tarfile.open(path) as tar:
        member = tar.extractfile("index.json")
        assert member is not None, f"{path} has no index.json"
        index = json.load(member)
        assert len(index["manifests"]) == 1, index
        desc = index["manifests"][0]
        manifest = _blob(tar, desc["digest"])
        return desc, _blob(tar, manifest["config"]["digest"])
