"""What is installed in one root filesystem and which package owns each file
(docs/risk.md#package-databases).

An :class:`Inventory` indexes the files of every package the root's databases list, keyed by
the path with its directory resolved inside the root (Debian's merged /usr lists
``/lib/x86_64-linux-gnu/libc.so.6``; the file is reached as ``/usr/lib/...``), the last
component kept as listed (a package owns its ``libfoo.so.1`` symlink and the
``libfoo.so.1.2.3`` it points to, both). Python site directories and Node module trees met in
used paths are read when first met; a used JAR is read for its coordinates.

Inventories are shared by roots with the same databases (:func:`fingerprint`: a hash of the
database files and site directory listings), so 1,000 replicas of one image hold one index.
Cost: building one reads the databases and lists (~10-20k paths for a Debian image with Python,
~2-4 MB); a lookup is a dict hit.
"""

from __future__ import annotations

import hashlib
from typing import Optional

from otelguard.risk.packages import databases as db
from otelguard.risk.packages.databases import Package
from otelguard.risk.packages.rootfs import Root

_SITE_NAMES = ("site-packages", "dist-packages")


def fingerprint(root: Root, site_globs: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for path in (db.DPKG_STATUS, db.APK_INSTALLED, *db.RPM_SQLITE):
        data = root.read_bytes(path, 1 << 30)
        h.update(path.encode() + b"\0" + (data if data is not None else b"-") + b"\0")
    for pattern in site_globs:
        for site in root.glob(pattern):
            h.update(site.encode() + b"\0" + "\0".join(root.listdir(site)).encode())
    return h.hexdigest()


class Inventory:
    def __init__(self, key: str) -> None:
        self.key = key
        self.packages: set[Package] = set()
        self.files: dict[str, Package] = {}
        self.sites: set[str] = set()
        self.node_dirs: dict[str, Optional[Package]] = {}
        self.unsupported: list[str] = []
        self._dirs: dict[str, str] = {}

    @classmethod
    def build(cls, root: Root, key: str, site_globs: tuple[str, ...],
              node_globs: tuple[str, ...]) -> "Inventory":
        inv = cls(key)
        for owned in (db.dpkg(root), db.apk(root)):
            inv.add(root, owned)
        rpms, inv.unsupported = db.rpm(root)
        inv.add(root, rpms)
        for pattern in site_globs:
            for site in root.glob(pattern):
                inv.add_site(root, site)
        for pattern in node_globs:
            for directory in root.glob(pattern):
                for pkg, pdir in db.node_modules(root, directory):
                    inv.packages.add(pkg)
                    inv.node_dirs[pdir] = pkg
        inv._dirs.clear()  # only needed while indexing
        return inv

    def _dir(self, root: Root, directory: str) -> str:
        real = self._dirs.get(directory)
        if real is None:
            real = self._dirs[directory] = root.resolve(directory) or directory
        return real

    def add(self, root: Root, owned: list[db.Owned]) -> None:
        for pkg, files in owned:
            self.packages.add(pkg)
            for path in files:
                directory, _, base = path.rpartition("/")
                real_dir = self._dir(root, directory or "/")
                self.files[real_dir.rstrip("/") + "/" + base] = pkg

    def add_site(self, root: Root, site: str) -> None:
        if site in self.sites:
            return
        self.sites.add(site)
        self.add(root, db.python_site(root, site))

    def owner(self, root: Root, real: str) -> Optional[Package]:
        """The package owning the (resolved) file ``real``, reading a site directory, a Node
        package or a JAR met here for the first time."""
        pkg = self.files.get(real) or self.files.get(_pyc_source(real))
        if pkg is not None:
            return pkg
        parts = real.split("/")
        for i in range(len(parts) - 1, 0, -1):
            if parts[i] in _SITE_NAMES:
                site = "/".join(parts[: i + 1])
                if site not in self.sites:
                    self.add_site(root, site)
                    self._dirs.clear()
                    return self.files.get(real) or self.files.get(_pyc_source(real))
                break
        for i in range(len(parts) - 2, 0, -1):
            if parts[i] == "node_modules":
                n = i + 3 if parts[i + 1].startswith("@") else i + 2
                directory = "/".join(parts[:n])
                if directory not in self.node_dirs:
                    self.node_dirs[directory] = db.node_package(root, directory)
                found = self.node_dirs[directory]
                if found is not None:
                    self.packages.add(found)
                return found
        if real.endswith(".jar"):
            data = root.read_bytes(real, 256 << 20)
            jar = db.jar_package(data) if data is not None else None
            if jar is not None:
                self.packages.add(jar)
                self.files[real] = jar
            return jar
        return None


def _pyc_source(path: str) -> str:
    """``.../__pycache__/mod.cpython-311.pyc`` -> ``.../mod.py`` (the source a pyc is of)."""
    directory, _, name = path.rpartition("/")
    if not name.endswith(".pyc") or not directory.endswith("/__pycache__"):
        return path
    return directory[: -len("/__pycache__")] + "/" + name.split(".", 1)[0] + ".py"
