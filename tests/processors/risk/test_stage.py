"""The risk stage over agent-shaped OTLP (docs/architecture.md#runtime-risk): records go to the
analysers by workload; reports become `otelguard.stream=risk` records (new or changed findings
only), per-workload gauges and snapshots; non-raw streams are not observed; workloads are
bounded; 1,000 workloads keep memory per workload bounded."""

from __future__ import annotations

import gc
import itertools
import json
import tracemalloc
from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp.messages import PyValue, attrs_dict, set_attrs
from otelguard.processors import registry
from otelguard.processors.risk import Config, RiskStage
from otelguard.risk.packages.config import PackagesConfig, ReportSource
from otelguard.telemetry import REGISTRY
from tests.support.risk_reports import Entry, cyclonedx
from tests.support.rootfs import debian_root

_uids = itertools.count(1)


def _batch(cid: str, events: list[tuple[str, dict[str, PyValue]]],
           stream: str = S.STREAM_EVENT) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.CONTAINER_ID: cid, S.HOST_NAME: "node-1",
                                       S.STREAM: stream})
    sl = rl.scope_logs.add()
    for name, attrs in events:
        rec = sl.log_records.add(event_name=name, time_unix_nano=1_700_000_000_000_000_000)
        set_attrs(rec.attributes, {**attrs, S.LOG_RECORD_UID: f"u{next(_uids)}",
                                   S.PROCESS_PID: 999_999, S.SYSCALL_RET: 0})
    return req


def _exec(path: str) -> tuple[str, dict[str, PyValue]]:
    return S.EV_PROCESS_EXEC, {S.PROCESS_EXECUTABLE_PATH: path}


def _open(path: str, flags: str = "O_RDONLY|O_CLOEXEC") -> tuple[str, dict[str, PyValue]]:
    return S.EV_FILE_OPEN, {S.FILE_PATH: path, S.FILE_OPEN_FLAGS: flags}


def _gauge(workload: str, kind: str, state: str, severity: str = "none") -> float:
    v = REGISTRY.get_sample_value(S.METRIC_RISK_FINDINGS, {
        "workload": workload, "analyser": "packages", "kind": kind, "state": state,
        "severity": severity})
    return v or 0.0


def _stage(root: Path, cids: list[str], **cfg: object) -> RiskStage:
    stage = registry.create("risk", Config(**cfg))  # type: ignore[arg-type]
    assert isinstance(stage, RiskStage)
    for cid in cids:
        stage.analyser("packages").use_root(cid, str(root))  # type: ignore[attr-defined]
    return stage


def test_findings_records_gauges_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    versions = debian_root(root, ["jq", "libjq1", "bzip2"])
    report = cyclonedx(tmp_path / "r.json", [
        Entry("CVE-9", "critical", "deb", "libjq1", versions["libjq1"])])
    stage = _stage(root, ["c1"], directory=str(tmp_path / "snap"),
                   packages=PackagesConfig(reports=(ReportSource(str(report)),)))
    wl = "container/c1"
    stage.process(_batch("c1", [
        _exec("/usr/bin/jq"), _open("/lib/x86_64-linux-gnu/libjq.so.1"),
        _open("/usr/lib/x86_64-linux-gnu/libjq.so.1", "O_WRONLY|O_CREAT"),  # a write: not use
        _open("/etc/passwd")]))  # not code
    stage.process(_batch("c1", [_open("/lib/x86_64-linux-gnu/libjq.so.1")],
                         stream=S.STREAM_DETECTION))  # not observed
    stage.analyser("packages").resolve_pending()  # type: ignore[attr-defined]
    stage.report()
    (batch,) = stage.drain(final=False)
    assert isinstance(batch, ExportLogsServiceRequest)
    (rl,) = batch.resource_logs
    assert attrs_dict(rl.resource.attributes)[S.STREAM] == S.STREAM_RISK
    recs = {attrs_dict(r.attributes)[S.RISK_SUBJECT]: r for r in rl.scope_logs[0].log_records}
    assert set(recs) == {"deb:jq", "deb:libjq1", f"CVE-9|deb:libjq1"}  # installed-only: no record
    vuln = attrs_dict(recs["CVE-9|deb:libjq1"].attributes)
    assert vuln[S.RISK_STATE] == "loaded" and recs["CVE-9|deb:libjq1"].severity_number == 21
    assert len(vuln[S.RISK_EVIDENCE]) == 1  # type: ignore[arg-type]
    assert _gauge(wl, "package", "executed") == 1 and _gauge(wl, "package", "loaded") == 1
    assert _gauge(wl, "package", "installed-only") == 1  # bzip2
    assert _gauge(wl, "vulnerability", "loaded", "critical") == 1
    doc = json.loads((tmp_path / "snap" / "container%2Fc1.json").read_text())
    assert {f["subject"]: f["state"] for f in doc["findings"] if f["kind"] == "package"} == {
        "deb:jq": "executed", "deb:libjq1": "loaded", "deb:bzip2": "installed-only"}
    # a later use of a path already resolved is counted at once, but changes no verdict: no
    # record; a package that goes from installed-only to executed is one record
    stage.process(_batch("c1", [_exec("/usr/bin/jq")]))
    stage.report()
    assert stage.drain(final=False) == []
    stage.process(_batch("c1", [_exec("/bin/bzip2")]))
    stage.analyser("packages").resolve_pending()  # type: ignore[attr-defined]
    stage.report()
    (again,) = stage.drain(final=False)
    assert isinstance(again, ExportLogsServiceRequest)
    assert [(attrs_dict(r.attributes)[S.RISK_SUBJECT], attrs_dict(r.attributes)[S.RISK_STATE])
            for r in again.resource_logs[0].scope_logs[0].log_records] == [("deb:bzip2", "executed")]
    stage.shutdown()


def test_workloads_are_bounded_and_forgotten_with_their_gauges(tmp_path: Path) -> None:
    root = tmp_path / "root"
    debian_root(root, ["jq", "libjq1"])
    stage = _stage(root, ["a", "b", "c"], max_workloads=2)
    for cid in ("a", "b", "c"):
        stage.process(_batch(cid, [_exec("/usr/bin/jq")]))
        stage.analyser("packages").resolve_pending()  # type: ignore[attr-defined]
        stage.report()
    assert stage.workloads() == ["container/b", "container/c"]
    assert _gauge("container/a", "package", "executed") == 0
    assert _gauge("container/c", "package", "executed") == 1
    assert stage.analyser("packages").workloads() == ["container/b", "container/c"]
    stage.shutdown()


def test_memory_per_workload_with_1000_workloads(tmp_path: Path) -> None:
    """1,000 container workloads of one image, each using every package of it: the inventory
    is shared, and what each workload holds is bounded by max_packages x max_evidence."""
    root = tmp_path / "root"
    debian_root(root, ["jq", "libjq1", "libonig5", "libc6", "bzip2", "libbz2-1.0"])
    n = 1000
    cids = [f"{i:064x}" for i in range(n)]
    stage = _stage(root, cids, max_workloads=n)
    uses = [_exec("/usr/bin/jq"), _exec("/usr/bin/bzip2"),
            _open("/lib/x86_64-linux-gnu/libjq.so.1"), _open("/lib/x86_64-linux-gnu/libc.so.6"),
            _open("/lib/x86_64-linux-gnu/libonig.so.5"), _open("/lib/x86_64-linux-gnu/libbz2.so.1.0")]
    analyser = stage.analyser("packages")
    stage.process(_batch(cids[0], uses))  # the shared inventory, outside the measurement
    analyser.resolve_pending()  # type: ignore[attr-defined]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for cid in cids[1:]:
        for _ in range(5):  # repeated uses add evidence up to the bound, nothing more
            stage.process(_batch(cid, uses))
        analyser.resolve_pending()  # type: ignore[attr-defined]
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_workload = grown / (n - 1)
    print(f"risk packages: {per_workload / 1024:.1f} KiB per workload over {n} workloads")
    assert len(stage.workloads()) == n
    states = analyser.states(f"container/{cids[-1]}")  # type: ignore[attr-defined]
    assert {p.name for p, (s, _) in states.items() if s != "installed-only"} == {
        "jq", "bzip2", "libjq1", "libc6", "libonig5", "libbz2-1.0"}
    assert all(len(u.evidence) <= 4 for _, u in states.values() if u is not None)
    assert per_workload < 24 * 1024
    stage.shutdown()
