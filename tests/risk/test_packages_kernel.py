"""In-use packages on the real kernel, end to end through `otelguard run` (its own process:
the real sensor with the kernel read filter the risk stage widens, the risk stage, snapshots,
`otelguard risk show`).

The ground truth is a container root made here: an overlay whose lower layer holds real Debian
packages (the host's files, copied as their dpkg lists name them, in a merged-/usr layout, with
their dpkg database) and a venv (an absolute ``bin/python`` symlink, real distributions with
their RECORD). In a fake kubepods container chrooted into it: ``jq`` runs (it loads ``libjq``
and ``libonig`` through their soname symlinks ``libjq.so.1 -> libjq.so.1.0.4``), the venv's
python imports ``idna``; ``bzip2``, ``libbz2-1.0``, ``libmagic-mgc``, ``certifi`` and
``sortedcontainers`` are never touched. The expected verdicts come from an independent oracle:
what the kernel mapped into each process (``/proc/<pid>/maps``, its ``exe``) and the modules
the interpreter says it imported from files, mapped to packages by the host's own
``dpkg-query -S`` and the distributions' RECORD files. Precision and recall of every state must
be 100%, and a vulnerability report (CycloneDX with VEX, grype, trivy) is labelled exactly.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otelguard import semconv as S
from tests.ebpf.containers import container
from tests.support.otelguard_run import output_records, wait_for_line
from tests.support.risk_reports import Entry, cyclonedx, grype, trivy
from tests.support.rootfs import add_venv, debian_root, dpkg_owner, overlay

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
OTELGUARD = [sys.executable, "-m", "otelguard.cli"]
SITE_FROM = Path(sys.executable).resolve().parents[1] / "lib/python3.11/site-packages"
if not SITE_FROM.is_dir():
    SITE_FROM = Path(sys.prefix) / "lib/python3.11/site-packages"
DEBS = ["jq", "libjq1", "libonig5", "libc6", "zlib1g", "libexpat1", "python3.11-minimal",
        "libpython3.11-minimal", "bzip2", "libbz2-1.0", "libmagic-mgc"]
DISTS = ["idna", "certifi", "sortedcontainers"]
VENV_SITE = "/opt/venv/lib/python3.11/site-packages"
IMPORTER = textwrap.dedent("""\
    import sys, idna, importlib.machinery as m
    files = set()
    for mod in list(sys.modules.values()):
        spec = getattr(mod, "__spec__", None)
        if spec is not None and spec.loader is not m.FrozenImporter and spec.origin \\
                and spec.origin.startswith("/"):
            files.add(spec.origin)
    print(repr(sorted(files)), flush=True)
    sys.stdin.read()
    """)


def _mapped(pid: int, merged: str) -> tuple[str, set[str]]:
    """(exe, files mapped) of a live process, as paths inside its root."""
    exe = os.readlink(f"/proc/{pid}/exe")[len(merged):]
    files = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith(merged + "/"):
            files.add(parts[5][len(merged):])
    return exe, files


def _record_owner(path: str, site: Path) -> str | None:
    """The distribution whose RECORD lists ``path`` (a file of the venv's site directory)."""
    if not path.startswith(VENV_SITE + "/"):
        return None
    rel = path[len(VENV_SITE) + 1:]
    for info in site.glob("*.dist-info"):
        if any(line.rsplit(",", 2)[0] == rel for line in (info / "RECORD").read_text().splitlines()):
            return info.name.split("-")[0].lower()
    return None


def _oracle(executed: set[str], loaded: set[str], site: Path) -> dict[str, str]:
    """{ecosystem:name: state} from the files the kernel and the interpreter name."""
    state: dict[str, str] = {}
    for path in sorted(loaded):
        dist = _record_owner(path, site)
        owner = f"pypi:{dist}" if dist else (f"deb:{o}" if (o := dpkg_owner(path)) else None)
        assert owner is not None, f"the oracle knows no owner of {path}"
        state.setdefault(owner, "loaded")
    for path in executed:
        owner = dpkg_owner(path)
        assert owner is not None, path
        state[f"deb:{owner}"] = "executed"
    return state


def _entries(versions: dict[str, str], dists: dict[str, str]) -> list[Entry]:
    return [
        Entry("CVE-2099-0001", "critical", "deb", "libjq1", versions["libjq1"]),
        Entry("CVE-2099-0002", "critical", "deb", "bzip2", versions["bzip2"]),
        Entry("CVE-2099-0003", "critical", "deb", "zlib1g", versions["zlib1g"],
              vex="not_affected"),
        Entry("CVE-2099-0004", "high", "deb", "jq", versions["jq"]),
        Entry("CVE-2099-0005", "high", "deb", "libmagic-mgc", versions["libmagic-mgc"]),
        Entry("GHSA-0000-0000-0006", "medium", "pypi", "idna", dists["idna"]),
        Entry("GHSA-0000-0000-0007", "low", "pypi", "certifi", dists["certifi"]),
        Entry("CVE-2099-0008", "critical", "deb", "openssl", "3.0.0-1"),  # not in the root
        Entry("CVE-2099-0009", "high", "deb", "libonig5", "0.0-old"),  # another build
    ]


def test_in_use_packages_of_a_container_root(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    versions = debian_root(lower, DEBS)
    dists = add_venv(lower, "/opt/venv", "/usr/bin/python3.11", SITE_FROM, DISTS)
    entries = _entries(versions, dists)
    reports = {"cdx": cyclonedx(tmp_path / "r.cdx.json", entries),
               "grype": grype(tmp_path / "r.grype.json", entries),
               "trivy": trivy(tmp_path / "r.trivy.json", entries)}
    snapshots, out = tmp_path / "risk", tmp_path / "out.jsonl"
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""\
        sensor:
          cgroup_scope: [/kubepods.slice, /kubepods]
        processors:
          - type: risk
            config:
              report_interval_seconds: 1
              directory: {snapshots}
              packages:
                reports:
                  - file: {reports['cdx']}
        """))
    argv = [*OTELGUARD, "run", "--config", str(config), "--output", f"jsonl:{out}",
            "--metrics", "127.0.0.1:0", "--no-incidents"]
    with overlay(lower, tmp_path / "ovl") as merged, \
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=ENV) as run:
        try:
            widened = wait_for_line(run, "risk: the kernel read filter also sends", 240)
            assert "/usr/lib/" in widened and "/opt/" in widened
            wait_for_line(run, "watching (", 240)  # the sensor is attached
            with container() as box:
                jq = box.popen(["/usr/bin/jq", "-c", "."], root=str(merged),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                py = box.popen(["/opt/venv/bin/python", "-B", "-c", IMPORTER], root=str(merged),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                assert py.stdout is not None and jq.stdin is not None and py.stdin is not None
                imported = set(ast.literal_eval(py.stdout.readline().decode()))
                time.sleep(0.5)  # jq has mapped its libraries by now
                jq_exe, jq_maps = _mapped(jq.pid, str(merged))
                py_exe, py_maps = _mapped(py.pid, str(merged))
                expected = _oracle({jq_exe, py_exe}, jq_maps | py_maps | imported,
                                   lower / VENV_SITE.lstrip("/"))
                workload = f"container/{box.container_id}"
                snap = snapshots / f"container%2F{box.container_id}.json"

                def states() -> dict[str, str]:
                    if not snap.exists():
                        return {}
                    doc = json.loads(snap.read_text())
                    return {f["subject"]: f["state"] for f in doc["findings"]
                            if f["kind"] == "package"}

                def in_use() -> dict[str, str]:
                    return {k: v for k, v in states().items() if v != "installed-only"}

                deadline = time.monotonic() + 30
                while in_use() != expected and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert in_use() == expected, (sorted(set(in_use().items()) - set(expected.items())),
                                              sorted(set(expected.items()) - set(in_use().items())))
                for p in (jq, py):
                    p.stdin.close()  # type: ignore[union-attr]
                    p.wait(timeout=10)
        finally:
            run.terminate()
            _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-3000:]

    # -- precision and recall of every state, against the oracle ----------------------------
    installed = {f"deb:{d}" for d in DEBS} | {f"pypi:{d}" for d in DISTS}
    truth = {k: expected.get(k, "installed-only") for k in installed}
    assert set(expected) <= installed  # the oracle found nothing outside the root's packages
    got = states()
    assert set(got) == installed
    for state in ("executed", "loaded", "installed-only"):
        want = {k for k, v in truth.items() if v == state}
        have = {k for k, v in got.items() if v == state}
        assert have == want, (state, sorted(have - want), sorted(want - have))
    # the ground truth has every kind the issue names (so a pass is not vacuous)
    assert truth["deb:jq"] == "executed" and truth["deb:python3.11-minimal"] == "executed"
    assert truth["deb:libjq1"] == "loaded" and truth["deb:libonig5"] == "loaded"  # via symlinks
    assert truth["pypi:idna"] == "loaded" and truth["deb:libpython3.11-minimal"] == "loaded"
    assert truth["deb:bzip2"] == "installed-only" and truth["pypi:certifi"] == "installed-only"
    doc = json.loads(snap.read_text())
    by_subject = {f["subject"]: f for f in doc["findings"]}
    libjq = by_subject["deb:libjq1"]
    assert any(p.endswith("libjq.so.1 -> /usr/lib/x86_64-linux-gnu/libjq.so.1.0.4")
               for p in libjq["attributes"][S.RISK_EVIDENCE_PATHS])
    assert libjq["evidence"] and libjq["first_seen"] and libjq["last_seen"]
    python = by_subject["deb:python3.11-minimal"]
    assert "/opt/venv/bin/python -> /usr/bin/python3.11" in \
        python["attributes"][S.RISK_EVIDENCE_PATHS]  # the absolute link, inside the root
    assert by_subject["deb:libjq1"]["attributes"][S.PACKAGE_VERSION] == versions["libjq1"]
    assert by_subject["pypi:idna"]["attributes"][S.PACKAGE_VERSION] == dists["idna"]

    # -- the evidence uids are records of this run ----------------------------------------------
    records = output_records(out)
    raw = {}
    for res, rec in records:
        attrs = {kv.key: kv for kv in rec.attributes}
        if S.LOG_RECORD_UID in attrs:
            raw[attrs[S.LOG_RECORD_UID].value.string_value] = (res, rec)
    for uid in libjq["evidence"]:
        res, rec = raw[uid]
        assert rec.event_name == S.EV_FILE_OPEN and res.get(S.CONTAINER_ID) == box.container_id

    # -- the report, labelled exactly ------------------------------------------------------------
    state_of = {**truth, "deb:openssl": "not-found"}
    want_labels = {(e.id, e.name): ("not-found" if e.name == "libonig5"
                                    else state_of[f"{e.ecosystem}:{e.name}"]) for e in entries}
    vulns = [f for f in doc["findings"] if f["kind"] == "vulnerability"]
    assert {(f["attributes"][S.VULNERABILITY_ID], f["attributes"][S.PACKAGE_NAME]): f["state"]
            for f in vulns} == want_labels
    assert [f["attributes"][S.VULNERABILITY_ID] for f in vulns] == [
        "CVE-2099-0001",  # critical, loaded
        "CVE-2099-0002",  # critical, installed-only
        "CVE-2099-0008",  # critical, not found
        "CVE-2099-0003",  # critical, in use but VEX not_affected
        "CVE-2099-0004",  # high, executed
        "CVE-2099-0005",  # high, installed-only
        "CVE-2099-0009",  # high, another version: not found
        "GHSA-0000-0000-0006", "GHSA-0000-0000-0007"]
    risk_records = [(res, rec) for res, rec in records if rec.event_name == S.EV_RISK_FINDING]
    assert risk_records and all(res.get(S.STREAM) == S.STREAM_RISK for res, _ in risk_records)
    critical_in_use = [rec for _, rec in risk_records
                       if any(kv.key == S.VULNERABILITY_ID and
                              kv.value.string_value == "CVE-2099-0001" for kv in rec.attributes)]
    assert critical_in_use and critical_in_use[0].severity_number == 21
    for name, path in reports.items():  # every format, through the CLI, offline
        shown = subprocess.run([*OTELGUARD, "risk", "show", workload, "-d", str(snapshots),
                                "--report", str(path), "--json"], env=ENV, capture_output=True,
                               text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        labelled = {(f["attributes"][S.VULNERABILITY_ID], f["attributes"][S.PACKAGE_NAME]):
                    f["state"] for f in json.loads(shown.stdout)["findings"]
                    if f["kind"] == "vulnerability"}
        assert labelled == want_labels, name
    text = subprocess.run([*OTELGUARD, "risk", "show", workload, "-d", str(snapshots)],
                          env=ENV, capture_output=True, text=True, timeout=60).stdout
    first = text.split("vulnerabilities")[1].splitlines()[1]
    assert "critical" in first and "loaded" in first and "CVE-2099-0001" in first
