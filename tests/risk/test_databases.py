"""Package databases read through a root (docs/risk.md#package-databases): dpkg from real
Debian packages (the host's), apk's installed file, Python RECORD with bytecode, Node trees,
JAR coordinates, rpm's sqlite database made by the real rpm (when installed)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from otelguard.risk.packages import databases as db
from otelguard.risk.packages.inventory import Inventory
from otelguard.risk.packages.rootfs import Root, open_dir
from tests.support.rootfs import add_venv, debian_root

SITE_FROM = Path(sys.executable).resolve().parents[1] / "lib/python3.11/site-packages"
if not SITE_FROM.is_dir():
    SITE_FROM = Path(sys.prefix) / "lib/python3.11/site-packages"
APK_INSTALLED = """\
C:Q1hZ0sSbOgBwHN2n8TnpLl6ePZaA0=
P:musl
V:1.2.4-r2
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1EnvBkyZ3IJ3UuXyb/4MCm+VqUTQ=
R:libc.musl-x86_64.so.1
a:0:0:777
Z:Q17yJ3JFNypA4mxhJJr0ou6CzsJVI=

C:Q1Fy7+Z0hR1cNfqVd9ZyzEE0x1RZM=
P:zlib
V:1.3.1-r0
A:x86_64
F:lib
R:libz.so.1
a:0:0:777
R:libz.so.1.3.1
F:usr/share/doc/zlib
R:README
"""


def _inventory(root_dir: Path) -> tuple[Root, Inventory]:
    root = open_dir(str(root_dir), "t")
    assert root is not None
    return root, Inventory.build(root, "k", ("opt/*/lib/python3*/site-packages",),
                                 ("app/node_modules",))


def test_dpkg_of_real_packages_through_merged_usr(tmp_path: Path) -> None:
    versions = debian_root(tmp_path, ["jq", "libjq1"])
    root, inv = _inventory(tmp_path)
    jq = db.Package("deb", "jq", versions["jq"], "debian")
    libjq = db.Package("deb", "libjq1", versions["libjq1"], "debian")
    assert inv.packages == {jq, libjq}
    real = root.resolve("/lib/x86_64-linux-gnu/libjq.so.1")  # listed as /usr/lib/... or /lib/...
    assert real is not None and real.startswith("/usr/lib/x86_64-linux-gnu/libjq.so.1.")
    assert inv.owner(root, real) == libjq
    assert inv.owner(root, "/usr/lib/x86_64-linux-gnu/libjq.so.1") == libjq  # the link itself
    assert inv.owner(root, "/usr/bin/jq") == jq
    assert inv.owner(root, "/usr/share") is None  # a directory is nobody's file
    assert libjq.purl() == f"pkg:deb/debian/libjq1@{versions['libjq1']}"


def test_apk_installed(tmp_path: Path) -> None:
    (tmp_path / "lib/apk/db").mkdir(parents=True)
    (tmp_path / "lib/apk/db/installed").write_text(APK_INSTALLED)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('ID=alpine\nVERSION_ID=3.19.1\n')
    root, inv = _inventory(tmp_path)
    zlib = db.Package("apk", "zlib", "1.3.1-r0", "alpine")
    assert inv.packages == {db.Package("apk", "musl", "1.2.4-r2", "alpine"), zlib}
    assert inv.owner(root, "/lib/libz.so.1.3.1") == zlib
    assert inv.owner(root, "/usr/share/doc/zlib/README") == zlib
    assert zlib.purl() == "pkg:apk/alpine/zlib@1.3.1-r0"


def test_python_record_and_bytecode(tmp_path: Path) -> None:
    dists = add_venv(tmp_path, "/opt/venv", "/usr/bin/python3.11", SITE_FROM, ["idna"])
    root, inv = _inventory(tmp_path)
    idna = db.Package("pypi", "idna", dists["idna"])
    site = "/opt/venv/lib/python3.11/site-packages"
    assert idna in inv.packages
    assert inv.owner(root, f"{site}/idna/core.py") == idna
    # bytecode of a source the RECORD lists, even when the RECORD does not list the pyc
    assert inv.owner(root, f"{site}/idna/__pycache__/core.cpython-311.pyc") == idna
    assert inv.owner(root, f"{site}/idna/nothing.py") is None


def test_a_site_directory_met_in_a_path_is_read(tmp_path: Path) -> None:
    add_venv(tmp_path, "/srv/tool/env", "/usr/bin/python3.11", SITE_FROM, ["idna"])
    root, inv = _inventory(tmp_path)  # /srv/tool/env matches no site glob
    assert not any(p.ecosystem == "pypi" for p in inv.packages)
    pkg = inv.owner(root, "/srv/tool/env/lib/python3.11/site-packages/idna/core.py")
    assert pkg is not None and pkg.name == "idna" and pkg in inv.packages


def test_node_modules(tmp_path: Path) -> None:
    nm = tmp_path / "app/node_modules"
    for name, version in (("express", "4.18.2"), ("@babel/core", "7.23.0")):
        (nm / name / "lib").mkdir(parents=True)
        (nm / name / "package.json").write_text(json.dumps({"name": name, "version": version}))
        (nm / name / "lib/index.js").write_text("")
    (nm / "express/node_modules/qs").mkdir(parents=True)
    (nm / "express/node_modules/qs/package.json").write_text('{"name": "qs", "version": "6.11.0"}')
    (nm / "express/node_modules/qs/index.js").write_text("")
    root, inv = _inventory(tmp_path)
    assert {(p.name, p.version) for p in inv.packages} == {("express", "4.18.2"),
                                                          ("@babel/core", "7.23.0")}
    assert inv.owner(root, "/app/node_modules/express/lib/index.js") == \
        db.Package("npm", "express", "4.18.2")
    assert inv.owner(root, "/app/node_modules/@babel/core/lib/index.js") == \
        db.Package("npm", "@babel/core", "7.23.0")
    nested = inv.owner(root, "/app/node_modules/express/node_modules/qs/index.js")
    assert nested == db.Package("npm", "qs", "6.11.0")  # nested trees belong to their own


def test_jar_coordinates(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        z.writestr("META-INF/maven/org.apache.logging.log4j/log4j-core/pom.properties",
                   "#Created by Apache Maven\nversion=2.14.1\ngroupId=org.apache.logging.log4j\n"
                   "artifactId=log4j-core\n")
    (tmp_path / "app/lib").mkdir(parents=True)
    (tmp_path / "app/lib/log4j-core-2.14.1.jar").write_bytes(buf.getvalue())
    (tmp_path / "app/lib/broken.jar").write_bytes(b"not a zip")
    root, inv = _inventory(tmp_path)
    log4j = db.Package("maven", "org.apache.logging.log4j:log4j-core", "2.14.1")
    assert inv.owner(root, "/app/lib/log4j-core-2.14.1.jar") == log4j
    assert log4j.purl() == "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"
    assert inv.owner(root, "/app/lib/broken.jar") is None


@pytest.mark.skipif(shutil.which("rpmbuild") is None, reason="rpm is not installed "
                    "(scripts/setup.sh installs it)")
def test_rpm_sqlite_made_by_rpm(tmp_path: Path) -> None:
    top = tmp_path / "build"
    for d in ("SPECS", "BUILD", "RPMS", "SOURCES", "BUILDROOT"):
        (top / d).mkdir(parents=True)
    (top / "SPECS/demo.spec").write_text("""\
Name: demo-lib
Version: 1.2.3
Release: 4
Epoch: 1
Summary: demo
License: MIT
BuildArch: noarch
%description
demo
%install
mkdir -p %{buildroot}/usr/lib64
echo x > %{buildroot}/usr/lib64/libdemo.so.1.2.3
ln -s libdemo.so.1.2.3 %{buildroot}/usr/lib64/libdemo.so.1
%files
/usr/lib64/libdemo.so.1.2.3
/usr/lib64/libdemo.so.1
""")
    subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(top / "SPECS/demo.spec")],
                   check=True, capture_output=True)
    (rpm_file,) = (top / "RPMS/noarch").glob("*.rpm")
    root_dir = tmp_path / "root"
    (root_dir / "var/lib/rpm").mkdir(parents=True)
    subprocess.run(["rpm", "--root", str(root_dir), "--dbpath", "/var/lib/rpm", "--define",
                    "_db_backend sqlite", "-i", "--nodeps", "--nosignature", str(rpm_file)],
                   check=True, capture_output=True)
    assert (root_dir / "var/lib/rpm/rpmdb.sqlite").exists()
    root, inv = _inventory(root_dir)
    demo = db.Package("rpm", "demo-lib", "1:1.2.3-4", "redhat")
    assert inv.packages == {demo}
    assert inv.owner(root, "/usr/lib64/libdemo.so.1.2.3") == demo
    real = root.resolve("/usr/lib64/libdemo.so.1")
    assert real == "/usr/lib64/libdemo.so.1.2.3" and inv.owner(root, real) == demo


def test_berkeley_db_rpm_is_reported_unsupported(tmp_path: Path) -> None:
    (tmp_path / "var/lib/rpm").mkdir(parents=True)
    (tmp_path / "var/lib/rpm/Packages").write_bytes(b"\0" * 64)
    _, inv = _inventory(tmp_path)
    assert inv.unsupported == ["/var/lib/rpm/Packages"] and inv.packages == set()
    assert os.path.exists(tmp_path / "var/lib/rpm/Packages")
