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
from otelguard.processors.incidents.incident import Incident
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
    assert Incident.from_json(inc.to_json()).risks == inc.risks  # journaled as they are
    facts = facts_of(inc, None)
    assert "R1" in facts["evidence_ids"]
    good = {"title": "jq connected out", "bullets": [
        "`/usr/bin/jq` connected to 203.0.113.9 [E1].",
        "It had loaded libjq1, which has CVE-2099-1, in use [E1, R1]."], "next_steps": []}
    assert validate(good, facts) == []
    bad = dict(good, bullets=["It had loaded a vulnerable library [R7]."])
    assert validate(bad, facts) == ["cites R7, not in the evidence"]
    pipeline.shutdown()


class Clock:
    def __init__(self) -> None:
        self.now = 1_763_900_000.0

    def __call__(self) -> float:
        return self.now


TOKEN_MOUNT = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~projected/kube-api-access-x:" \
              "/var/run/secrets/kubernetes.io/serviceaccount:ro:false:rprivate"


def test_a_story_cites_an_unused_grant_it_exercised_or_widened_and_a_sensitive_edge() -> None:
    """The grants and reach analysers (in-memory tier source, as tests/risk/test_access.py)
    before incidents: after the learning window CAP_SYS_TIME and the token are unused; then the
    process uses CAP_SYS_TIME (told as exercised), the token stays unread (told as widening
    its reach) and it connects to a Service labelled sensitive (the edge record rides in the
    same batch as the detection)."""
    from otelguard.kube.reflector import InMemorySource, Kind
    from otelguard.risk.grants.config import GrantsConfig

    world = InMemorySource()
    world.put(Kind.NAMESPACE, {"metadata": {"name": "shop"}})
    world.put(Kind.SERVICE, {"metadata": {"namespace": "shop", "name": "payments-db", "labels": {
        "otelguard.dev/tier": "sensitive"}}, "spec": {"clusterIP": "10.96.7.7"}})
    clock = Clock()
    risk = RiskStage(RiskConfig(analysers=("grants", "reach"),
                                grants=GrantsConfig(learning_seconds=600)), clock=clock)
    risk.analyser("grants").clock = clock  # type: ignore[attr-defined]
    risk.analyser("reach").source = world  # type: ignore[attr-defined]
    incidents = registry.create("incidents")
    pipeline = Pipeline([("risk", risk), ("incidents", incidents)])
    pipeline.start()
    res = {**pod(cid="g"), S.K8S_POD_IP: "10.244.0.5", S.K8S_POD_PRIVILEGED: False,
           S.K8S_POD_ADDED_CAPABILITIES: ["CAP_SYS_TIME"], S.K8S_CONTAINER_MOUNTS: [TOKEN_MOUNT],
           S.K8S_POD_SERVICE_ACCOUNT: "web-sa"}
    tr = trace("server")
    server = {S.PROCESS_EXECUTABLE_PATH: "/app/server", S.SYSCALL_RET: 0}
    out: list[Any] = [pipeline.process(batch(res, [event(S.EV_PROCESS_EXEC, 500, tr, attrs={
        **server, S.PROCESS_CAP_EFFECTIVE: ["CAP_CHOWN", "CAP_SYS_TIME"]})])).batch]
    clock.now += 601
    risk.report()
    out += pipeline.flush()
    unused = {(str(a[S.RISK_KIND]), str(a[S.RISK_SUBJECT])) for b in out
              for _, _, rec in iter_log_records(b) if rec.event_name == S.EV_RISK_FINDING
              for a in [attrs_dict(rec.attributes)] if a[S.RISK_STATE] == "unused"}
    assert ("capability", "CAP_SYS_TIME") in unused and ("token", "/var/run/secrets/"
                                                         "kubernetes.io/serviceaccount") in unused
    cap = event(S.EV_PRIV_CAPABLE, 500, tr, t=10, attrs={**server, S.CAPABILITY: "CAP_SYS_TIME"})
    conn = event(S.EV_NETWORK_CONNECT, 500, tr, t=11, attrs={
        **server, S.NETWORK_PEER_ADDRESS: "10.96.7.7", S.NETWORK_PEER_PORT: 5432})
    out.append(pipeline.process(batch(res, [cap, conn], [
        detection(cap, "Set system clock", 13, "defense_evasion", "T1070"),
        detection(conn, "Unexpected database connection", 13, "discovery", "T1046")])).batch)
    out += pipeline.flush()
    _, text = _story(out, "Deployment/web/")
    risks = [x.strip() for x in text.splitlines() if "Risk:" in x]
    assert any(re.fullmatch(r"- Risk: /app/server used CAP_SYS_TIME, a capability the workload "
                            r"is granted and was not seen using before \[E1, R\d\]\.", r)
               for r in risks), risks
    assert any(r.startswith("- Risk: the mounted service-account token is unused: /app/server "
                            "could act as the pod's service account") and
               re.search(r"\[E1, R\d\]\.$", r) for r in risks), risks
    assert any(r.startswith("- Risk: the connection of /app/server reaches "
                            "service:shop/payments-db (tier sensitive;") and
               re.search(r"\[E2, R\d\]\.$", r) for r in risks), risks
    # the runtime's default capabilities it never used (low) are not told
    assert len(risks) == 3 and "CAP_CHOWN" not in text and "\n  R3 log.record.uid=" in text
    pipeline.shutdown()
