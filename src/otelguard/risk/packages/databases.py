"""Package databases read through a container's root (docs/risk.md#package-databases).

Each reader returns ``(Package, [path, ...])`` pairs: the files a package owns, as its database
lists them (absolute, not yet resolved). Supported:

- dpkg: ``/var/lib/dpkg/status`` (packages whose status is ``install ok installed``, version
  with epoch) and ``/var/lib/dpkg/info/<name>[:<arch>].list``; directories are left out (an
  entry followed by entries under it);
- apk: ``/lib/apk/db/installed`` (``P:``, ``V:``, ``F:`` directory, ``R:`` file);
- rpm: the sqlite database (``/var/lib/rpm/rpmdb.sqlite``, ``/usr/lib/sysimage/rpm/
  rpmdb.sqlite``: the ``Packages`` table's header blobs; name, epoch, version, release,
  basenames/dirnames). The Berkeley DB and ndb formats (older RHEL/CentOS, SUSE) are not read:
  such a root has no rpm packages here, and says so (``unsupported`` in the inventory);
- Python: ``*.dist-info/METADATA`` (name, version) and ``RECORD`` (paths relative to the site
  directory) of each site directory given;
- Node: ``node_modules/<name>/package.json`` and ``node_modules/@scope/<name>/package.json``
  (a package owns every file under its directory but nested ``node_modules``);
- Java: a JAR's ``META-INF/maven/*/*/pom.properties`` (else its manifest's
  ``Implementation-Title``/``-Version``), read when the JAR is used.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import struct
import zipfile
from dataclasses import dataclass
from typing import Iterator, Optional

from otelguard.risk.packages.rootfs import Root

DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_INFO = "/var/lib/dpkg/info"
APK_INSTALLED = "/lib/apk/db/installed"
RPM_SQLITE = ("/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite")
RPM_OTHER = ("/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db",
             "/usr/lib/sysimage/rpm/Packages.db")


@dataclass(frozen=True)
class Package:
    ecosystem: str  # deb | apk | rpm | pypi | npm | maven
    name: str
    version: str
    distro: str = ""  # purl qualifier namespace: debian, alpine, ...

    @property
    def key(self) -> str:
        return f"{self.ecosystem}:{self.name}"

    def purl(self) -> str:
        kind = {"pypi": "pypi", "npm": "npm", "maven": "maven"}.get(self.ecosystem)
        if kind == "maven" and ":" in self.name:
            group, artifact = self.name.split(":", 1)
            return f"pkg:maven/{group}/{artifact}@{self.version}"
        if kind:
            return f"pkg:{kind}/{self.name}@{self.version}"
        return f"pkg:{self.ecosystem}/{self.distro or 'unknown'}/{self.name}@{self.version}"


Owned = tuple[Package, list[str]]


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and last:
                continue  # a continuation (Description, Conffiles): not needed
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip()
                fields[last] = value.strip()
        if fields:
            yield fields


def _distro(root: Root) -> str:
    text = root.read_text("/etc/os-release", 1 << 16) or ""
    m = re.search(r'^ID="?([A-Za-z0-9._-]+)"?', text, re.M)
    return m.group(1) if m else ""


def dpkg(root: Root) -> list[Owned]:
    text = root.read_text(DPKG_STATUS)
    if text is None:
        return []
    distro = _distro(root) or "debian"
    out: list[Owned] = []
    for st in _stanzas(text):
        name, status = st.get("Package", ""), st.get("Status", "")
        if not name or not status.endswith(" installed"):
            continue
        arch = st.get("Architecture", "")
        listing = root.read_text(f"{DPKG_INFO}/{name}:{arch}.list") if arch else None
        if listing is None:
            listing = root.read_text(f"{DPKG_INFO}/{name}.list") or ""
        out.append((Package("deb", name, st.get("Version", ""), distro), _files(listing)))
    return out


def _files(listing: str) -> list[str]:
    """Entries of a dpkg .list that are not directories of later entries."""
    entries = sorted({e for e in listing.splitlines() if e.startswith("/") and e != "/."})
    return [e for i, e in enumerate(entries)
            if not (i + 1 < len(entries) and entries[i + 1].startswith(e + "/"))]


def apk(root: Root) -> list[Owned]:
    text = root.read_text(APK_INSTALLED)
    if text is None:
        return []
    out: list[Owned] = []
    for block in re.split(r"\n\s*\n", text):
        name = version = directory = ""
        files: list[str] = []
        for line in block.splitlines():
            tag, _, value = line.partition(":")
            if tag == "P":
                name = value
            elif tag == "V":
                version = value
            elif tag == "F":
                directory = value
            elif tag == "R":
                files.append(f"/{directory}/{value}" if directory else f"/{value}")
        if name:
            out.append((Package("apk", name, version, _distro(root) or "alpine"), files))
    return out


def rpm(root: Root) -> tuple[list[Owned], list[str]]:
    """(packages, unsupported databases found)."""
    unsupported = [p for p in RPM_OTHER if root.resolve(p) is not None]
    for path in RPM_SQLITE:
        data = root.read_bytes(path, 1 << 30)
        if data is None:
            continue
        return _rpm_sqlite(data, _distro(root) or "redhat"), unsupported
    return [], unsupported


def _rpm_sqlite(data: bytes, distro: str) -> list[Owned]:
    if len(data) > 20 and data[18:20] == b"\x02\x02":
        # WAL mode (rpm's default): read as a rollback-journal file, as of its last checkpoint
        data = data[:18] + b"\x01\x01" + data[20:]
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(data)
        rows = db.execute("SELECT blob FROM Packages").fetchall()
    except sqlite3.Error:
        db.close()
        return []
    out: list[Owned] = []
    for (blob,) in rows:
        h = rpm_header(bytes(blob))
        name = h.get(1000)
        if not isinstance(name, str) or name == "gpg-pubkey":
            continue
        epoch = h.get(1003)
        version = f"{h.get(1001, '')}-{h.get(1002, '')}"
        if isinstance(epoch, list) and epoch and epoch[0]:
            version = f"{epoch[0]}:{version}"
        bases, dirs, idx = (_list(h.get(t)) for t in (1117, 1118, 1116))
        files = [str(dirs[i]) + b for b, i in zip(bases, idx)
                 if isinstance(b, str) and isinstance(i, int) and 0 <= i < len(dirs)]
        out.append((Package("rpm", name, version, distro), files))
    db.close()
    return out


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def rpm_header(blob: bytes) -> dict[int, object]:
    """Tags of an rpm header blob (no lead): strings, string arrays, int32 arrays."""
    if len(blob) < 8:
        return {}
    il, dl = struct.unpack(">II", blob[:8])
    store = 8 + il * 16
    if store + dl > len(blob):
        return {}
    out: dict[int, object] = {}
    for i in range(il):
        tag, typ, off, count = struct.unpack(">IIiI", blob[8 + i * 16: 24 + i * 16])
        at = store + off
        if typ == 6 or typ == 9:  # STRING, I18NSTRING (first)
            out[tag] = blob[at: blob.index(b"\0", at)].decode("utf-8", "replace")
        elif typ == 8:  # STRING_ARRAY
            items: list[str] = []
            for _ in range(count):
                end = blob.index(b"\0", at)
                items.append(blob[at:end].decode("utf-8", "replace"))
                at = end + 1
            out[tag] = items
        elif typ == 4:  # INT32
            out[tag] = list(struct.unpack(f">{count}i", blob[at: at + 4 * count]))
    return out


def normalise_pypi(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_site(root: Root, site: str) -> list[Owned]:
    """The dist-info packages of one site directory (``site`` resolved, absolute)."""
    out: list[Owned] = []
    for entry in root.listdir(site):
        if not entry.endswith(".dist-info"):
            continue
        meta = root.read_text(f"{site}/{entry}/METADATA", 1 << 20) or ""
        name = _header(meta, "Name")
        version = _header(meta, "Version")
        if not name:
            continue
        record = root.read_text(f"{site}/{entry}/RECORD") or ""
        files = []
        for line in record.splitlines():
            rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
            if rel:
                files.append(_join(site, rel))
        out.append((Package("pypi", normalise_pypi(name), version), files))
    return out


def _header(meta: str, key: str) -> str:
    m = re.search(rf"^{key}:\s*(.+?)\s*$", meta, re.M)
    return m.group(1) if m else ""


def _join(base: str, rel: str) -> str:
    parts: list[str] = [p for p in base.split("/") if p]
    for comp in rel.split("/"):
        if comp == "..":
            if parts:
                parts.pop()
        elif comp and comp != ".":
            parts.append(comp)
    return "/" + "/".join(parts)


def node_package(root: Root, directory: str) -> Optional[Package]:
    """The npm package whose directory is ``directory`` (has a package.json with a name)."""
    text = root.read_text(f"{directory}/package.json", 1 << 20)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        return None
    return Package("npm", doc["name"], str(doc.get("version", "")))


def node_modules(root: Root, directory: str) -> list[tuple[Package, str]]:
    """(package, its directory) of each package directly in one node_modules directory."""
    out: list[tuple[Package, str]] = []
    for name in root.listdir(directory):
        dirs = [f"{directory}/{name}/{n}" for n in root.listdir(f"{directory}/{name}")] \
            if name.startswith("@") else [f"{directory}/{name}"]
        for d in dirs:
            pkg = node_package(root, d)
            if pkg is not None:
                out.append((pkg, d))
    return out


def jar_package(data: bytes) -> Optional[Package]:
    """The Maven coordinates of a JAR (its pom.properties), else its manifest's title."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
            for n in names:
                if n.startswith("META-INF/maven/") and n.endswith("/pom.properties"):
                    props = dict(line.split("=", 1) for line in
                                 z.read(n).decode("utf-8", "replace").splitlines()
                                 if "=" in line and not line.startswith("#"))
                    if props.get("groupId") and props.get("artifactId"):
                        return Package("maven", f"{props['groupId'].strip()}:"
                                       f"{props['artifactId'].strip()}",
                                       props.get("version", "").strip())
            if "META-INF/MANIFEST.MF" in names:
                mf = z.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
                title = _header(mf, "Implementation-Title")
                if title:
                    return Package("maven", title, _header(mf, "Implementation-Version"))
    except (zipfile.BadZipFile, OSError, ValueError, KeyError):
        return None
    return None
