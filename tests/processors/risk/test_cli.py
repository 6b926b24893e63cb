"""`otelguard risk list|show` over snapshots the stage wrote (docs/risk.md#surfaces): the
workload by key or a unique part of it, vulnerabilities critical-and-in-use first, a report
labelled offline, installed-only packages only with --all, the exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.otlp.messages import set_attrs
from otelguard.processors.risk import Config, RiskStage
from tests.support.risk_reports import Entry, trivy
from tests.support.rootfs import debian_root


def _snapshot(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "root"
    versions = debian_root(root, ["jq", "libjq1", "bzip2"])
    snaps = tmp_path / "snaps"
    stage = RiskStage(Config(directory=str(snaps)))
    stage.analyser("packages").use_root("abc123", str(root))  # type: ignore[attr-defined]
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.CONTAINER_ID: "abc123", S.HOST_NAME: "n",
                                       S.STREAM: S.STREAM_EVENT})
    for name, attrs in ((S.EV_PROCESS_EXEC, {S.PROCESS_EXECUTABLE_PATH: "/usr/bin/jq"}),
                        (S.EV_FILE_OPEN, {S.FILE_PATH: "/lib/x86_64-linux-gnu/libjq.so.1",
                                          S.FILE_OPEN_FLAGS: "O_RDONLY"})):
        rec = rl.scope_logs.add().log_records.add(event_name=name, time_unix_nano=10**18)
        set_attrs(rec.attributes, {**attrs, S.SYSCALL_RET: 0, S.LOG_RECORD_UID: name})
    stage.process(req)
    stage.analyser("packages").resolve_pending()  # type: ignore[attr-defined]
    stage.report()
    stage.shutdown()
    return snaps, versions


def test_show_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snaps, versions = _snapshot(tmp_path)
    report = trivy(tmp_path / "t.json", [
        Entry("CVE-A", "high", "deb", "jq", versions["jq"]),
        Entry("CVE-B", "critical", "deb", "bzip2", versions["bzip2"]),
        Entry("CVE-C", "critical", "deb", "libjq1", versions["libjq1"])])
    assert main(["risk", "show", "abc1", "-d", str(snaps), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    vulns = out.split("vulnerabilities")[1].split("packages:")[0].strip().splitlines()[1:]
    assert [line.split()[:3] for line in vulns] == [
        ["critical", "loaded", "CVE-C"], ["critical", "installed-only", "CVE-B"],
        ["high", "executed", "CVE-A"]]
    assert "bzip2" not in out.split("packages:")[1].split("(")[0]  # installed-only hidden
    assert "(1 installed-only packages; --all lists them)" in out
    assert main(["risk", "show", "container/abc123", "-d", str(snaps), "--all"]) == 0
    assert "installed-only deb    bzip2" in capsys.readouterr().out
    assert main(["risk", "list", "-d", str(snaps)]) == 0
    assert capsys.readouterr().out.strip() == \
        "container/abc123  1 executed, 1 installed-only, 1 loaded"
    assert main(["risk", "show", "nope", "-d", str(snaps)]) == 1
    assert main(["risk", "show", "abc", "-d", str(tmp_path / "missing")]) == 2
    (tmp_path / "bad.json").write_text("{")
    assert main(["risk", "show", "abc", "-d", str(snaps), "--report",
                 str(tmp_path / "bad.json")]) == 2
