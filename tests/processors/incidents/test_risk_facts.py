"""Incident stories cite the risk facts that bear on them (docs/incidents.md#risk-facts): the
real risk stage (packages analyser over a root made of real Debian packages, a vulnerability
report file) runs before the real incidents stage in one pipeline; its finding records pass
through the batch. A story says the process that connected out had loaded the vulnerable
package (matched by its process tree) or runs from it (matched by its executable), citing the
risk record as R<n>; a workload whose package is installed but unused gets no such sentence;
the narrator's validator accepts answers citing R ids and rejects unknown ones."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from otelguard import semconv as S
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records
from otelguard.processors import registry
from otelguard.processors.incidents import IncidentsStage
from otelguard.processors.incidents.narrator import facts_of
from otelguard.processors.incidents.validator import validate
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.risk import Config as RiskConfig
from otelguard.processors.risk import RiskStage
from otelguard.risk.packages.config import PackagesConfig, ReportSource
from tests.support.incidents import batch, detection, event, latest, pod, trace
from tests.support.risk_reports import Entry, cyclonedx
from tests.support.rootfs import debian_root

LIBJQ = "/lib/x86_64-linux-gnu/libjq.so.1"


def _connect(pid: int, tr: bytes, exe: str, t: int) -> Any:
    return event(S.EV_NETWORK_CONNECT, pid, tr, ppid=1, t=t, attrs={
        S.PROCESS_EXECUTABLE_PATH: exe, S.PROCESS_COMMAND_LINE: f"{exe} 203.0.113.9",
        S.NETWORK_PEER_ADDRESS: "203.0.113.9", S.NETWORK_PEER_PORT: 4444,
        S.NETWORK_TRANSPORT: "tcp"})


def _story(out: list[Any], workload_pod: str) -> tuple[dict[str, PyValue], str]:
    for attrs, rec in latest(out).values():
        if workload_pod in str(attrs[S.INCIDENT_WORKLOAD]):
            return attrs, rec.body.string_value
    raise AssertionError(f"no incident of {workload_pod}")


def _risk_uids(out: list[Any]) -> dict[tuple[str, str], str]:
    """(workload, subject) -> log.record.uid of the risk records that left the pipeline."""
    found = {}
    for b in out:
        for _, _, rec in iter_log_records(b):
            if rec.event_name == S.EV_RISK_FINDING:
                a = attrs_dict(rec.attributes)
                found[(str(a[S.RISK_WORKLOAD]).rsplit("/", 2)[-2],
                       str(a[S.RISK_SUBJECT]))] = str(a[S.LOG_RECORD_UID])
    return found


def test_a_story_cites_the_vulnerable_package_its_process_uses(tmp_path: Path) -> None:
    root = tmp_path / "root"
    versions = debian_root(root, ["jq", "libjq1", "bzip2"])
    report = cyclonedx(tmp_path / "report.json", [
        Entry("CVE-2099-1", "critical", "deb", "libjq1", versions["libjq1"]),
        Entry("CVE-2099-2", "high", "deb", "bzip2", versions["bzip2"])])
    risk = registry.create("risk", RiskConfig(
        analysers=("packages",), packages=PackagesConfig(reports=(ReportSource(str(report)),))))
    assert isinstance(risk, RiskStage)
    web, batchjob = pod(cid="a"), pod(name="etl-5f6d7-k2j4l", cid="b", deployment="etl")
    for res in (web, batchjob):
        risk.analyser("packages").use_root(str(res[S.CONTAINER_ID]), str(root))  # type: ignore[attr-defined]
    incidents = registry.create("incidents")
    assert isinstance(incidents, IncidentsStage)
    pipeline = Pipeline([("risk", risk), ("incidents", incidents)])
    out: list[Any] = []
    # web: jq runs and loads libjq (symlinked name); etl: bzip2 runs; libjq is installed there
    # but never used, so its CVE is not in use there
    jq_tree, bz_tree = trace("jq"), trace("bz")
    out.append(pipeline.process(batch(web, [
        event(S.EV_PROCESS_EXEC, 300, jq_tree, attrs={S.PROCESS_EXECUTABLE_PATH: "/usr/bin/jq"}),
        event(S.EV_FILE_OPEN, 300, jq_tree, t=1, attrs={
            S.PROCESS_EXECUTABLE_PATH: "/usr/bin/jq", S.FILE_PATH: LIBJQ,
            S.FILE_OPEN_FLAGS: "O_RDONLY|O_CLOEXEC", S.SYSCALL_RET: 3})])).batch)
    out.append(pipeline.process(batch(batchjob, [
        event(S.EV_PROCESS_EXEC, 400, bz_tree, attrs={S.PROCESS_EXECUTABLE_PATH: "/bin/bzip2"})])
    ).batch)
    risk.analyser("packages").resolve_pending()  # type: ignore[attr-defined]
    risk.report()
    out += pipeline.flush()  # the risk records pass the incidents stage on their way out
    uids = _risk_uids(out)
    libjq_vuln = ("web", "CVE-2099-1|deb:libjq1")
    assert libjq_vuln in uids and ("etl", "CVE-2099-2|deb:bzip2") in uids
    assert ("etl", "CVE-2099-1|deb:libjq1") in uids  # told as installed-only there
    # jq (the tree that loaded libjq) connects out and is flagged; so is an unrelated tree in etl
    nc = _connect(301, jq_tree, "/usr/bin/jq", t=10)
    out.append(pipeline.process(batch(web, [nc], [
        detection(nc, "Outbound connection to C2", 17, "command_and_control", "T1071")])).batch)
    other = _connect(401, trace("sh"), "/bin/sh", t=11)
    out.append(pipeline.process(batch(batchjob, [other], [
        detection(other, "Outbound connection to C2", 17, "command_and_control", "T1071")])
    ).batch)
    out += pipeline.flush()
    attrs, text = _story(out, "Deployment/web/")
    line = next(x for x in text.splitlines() if "Risk:" in x)
    assert re.search(rf"/usr/bin/jq had loaded deb package libjq1 {re.escape(versions['libjq1'])}"
                     r", which has CVE-2099-1 \(critical\), in use \(loaded\) \[E1, R1\]\.$", line)
    assert f"R1 log.record.uid={uids[libjq_vuln]} (risk finding: CVE-2099-1" in text
    assert uids[libjq_vuln] in attrs[S.INCIDENT_EVIDENCE]  # type: ignore[operator]
    # etl's process has no bearing risk fact (its CVE-2099-2 package is bzip2, not /bin/sh's;
    # libjq1 is installed-only there): no risk sentence, no R evidence
    _, etl_text = _story(out, "Deployment/etl/")
    assert "Risk:" not in etl_text and "\n  R1 " not in etl_text

    # the executable itself from the vulnerable package: a bzip2 detection in etl, in the
    # tree that ran it, is told as running from it (the risk fact came before the detection)
    bz = event(S.EV_FILE_OPEN, 400, bz_tree, t=12, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/usr/bin/bzip2", S.FILE_PATH: "/etc/shadow",
        S.FILE_OPEN_FLAGS: "O_RDONLY"})
    out.append(pipeline.process(batch(batchjob, [bz], [
        detection(bz, "Read sensitive file untrusted", 13, "credential_access", "T1555")])
    ).batch)
    out += pipeline.flush()
    stories = [rec.body.string_value for a, rec in latest(out).values()
               if "Deployment/etl/" in str(a[S.INCIDENT_WORKLOAD]) and "bzip2" in rec.body.string_value]
    assert stories and any(
        re.search(r"Risk: /usr/bin/bzip2 runs from deb package bzip2 .*CVE-2099-2 \(high\), "
                  r"in use \(executed\) \[E\d, R1\]\.", s) for s in stories), stories

    # the narrator's validator: R ids are evidence ids of that incident; others are not
    (inc,) = [i for i in incidents.open_incidents() if "Deployment/web/" in i.workload]
    facts = facts_of(inc, None)
    assert "R1" in facts["evidence_ids"]
    good = {"title": "jq connected out", "bullets": [
        "`/usr/bin/jq` connected to 203.0.113.9 [E1].",
        "It had loaded libjq1, which has CVE-2099-1, in use [E1, R1]."], "next_steps": []}
    assert validate(good, facts) == []
    bad = dict(good, bullets=["It had loaded a vulnerable library [R7]."])
    assert validate(bad, facts) == ["cites R7, not in the evidence"]
    pipeline.shutdown()
