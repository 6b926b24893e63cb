"""Attack chains on the real kernel in fake kubepods containers, through detection, noise
control and the incidents stage: each chain is exactly one incident whose story names the right
process, file and peer, whose techniques are ordered by tactic, and whose every cited uid is a
record of the output; unrelated detections stay separate incidents (docs/incidents.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv as S
from otelguard.ebpf.sensor import Sensor
from otelguard.otlp.messages import PyValue, attrs_dict, iter_log_records
from otelguard.processors import registry
from otelguard.processors.detection.processor import FalcoRulesProcessor
from otelguard.processors.pipeline import Pipeline
from otelguard.processors.stage import Batch
from tests.attacks.harness import PYTHON, Attack, python_attack, run_attack
from tests.attacks.payloads import MEMFD_EXEC, PTRACE_ATTACH, REVERSE_SHELL
from tests.support.incidents import latest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

SHADOW_THEN_OUT = "open('/etc/shadow', 'rb').read(1)\n" + REVERSE_SHELL


def told(*attacks: Attack) -> tuple[dict[str, tuple[dict[str, PyValue], Any]], list[Batch]]:
    """The attacks' batches through noise_control and incidents (as otelguard run runs them)."""
    pipeline = Pipeline([(n, registry.create(n)) for n in ("noise_control", "incidents")])
    pipeline.start()
    out = [pipeline.process(a.batch).batch for a in attacks]
    out += pipeline.shutdown()
    return latest(out), out


def check_evidence(attrs: dict[str, PyValue], out: list[Batch]) -> None:
    uids = {attrs_dict(r.attributes).get(S.LOG_RECORD_UID) for b in out
            for _, _, r in iter_log_records(b) if r.event_name != S.EV_INCIDENT}
    traces = {r.trace_id.hex() for b in out for _, _, r in iter_log_records(b)}
    evidence = attrs[S.INCIDENT_EVIDENCE]
    assert isinstance(evidence, list) and evidence
    for e in evidence:
        assert e in (traces if re.fullmatch(r"[0-9a-f]{32}", str(e)) else uids), e


def only(found: dict[str, tuple[dict[str, PyValue], Any]]) -> tuple[dict[str, PyValue], str]:
    assert len(found) == 1, [a[S.INCIDENT_TITLE] for a, _ in found.values()]
    attrs, rec = next(iter(found.values()))
    return attrs, rec.body.string_value


def test_shadow_read_then_reverse_shell_is_one_incident(sensor: Sensor,
                                                        stage: FalcoRulesProcessor) -> None:
    attack = python_attack(sensor, stage, SHADOW_THEN_OUT)
    assert attack.fired("Read sensitive file untrusted")
    found, out = told(attack)
    attrs, body = only(found)
    assert attack.container is not None
    assert attrs[S.INCIDENT_WORKLOAD] == f"container/{attack.container.container_id}"
    assert f"container {attack.container.container_id[:12]}" in body
    assert f"pod uid {attack.container.pod_uid}" in body
    assert "read /etc/shadow" in body and "redirected its standard input/output to a socket" in body
    assert re.search(r"connected to 127\.0\.0\.1:\d+", body), body
    assert attrs[S.INCIDENT_SEVERITY] == "CRITICAL"
    techniques = attrs[S.INCIDENT_TECHNIQUES]
    assert isinstance(techniques, list)
    assert techniques.index("T1059.004") < techniques.index("T1555")  # execution first
    check_evidence(attrs, out)


def test_drop_and_execute_then_reverse_shell_is_one_incident(
        sensor: Sensor, stage: FalcoRulesProcessor, tmp_path: Path) -> None:
    shm = f"/dev/shm/og-drop-{os.getpid()}-{os.urandom(3).hex()}"
    payload = tmp_path / "shell.py"
    payload.write_text(REVERSE_SHELL)
    os.chmod(tmp_path, 0o755)
    script = f"cp /bin/true {shm} && chmod +x {shm} && {shm} && exec {PYTHON} {payload}"
    try:
        attack = run_attack(sensor, stage, ["/bin/sh", "-c", script])
    finally:
        Path(shm).unlink(missing_ok=True)
    assert attack.returncode == 0, attack.stderr
    assert attack.fired("Execution from /dev/shm")
    assert attack.fired("Reverse shell (socket on stdio then shell exec)")
    found, out = told(attack)
    attrs, body = only(found)
    assert f"`{shm}`" in body or shm in body
    assert "Execution from /dev/shm" in body and "Reverse shell" in body
    assert attrs[S.INCIDENT_SEVERITY] == "CRITICAL"
    check_evidence(attrs, out)


def test_memfd_exec_and_ptrace_are_one_incident_each(sensor: Sensor,
                                                     stage: FalcoRulesProcessor) -> None:
    memfd = python_attack(sensor, stage, MEMFD_EXEC)
    ptrace = python_attack(sensor, stage, PTRACE_ATTACH)
    victim = int(ptrace.stdout)
    found, out = told(memfd, ptrace)
    assert len(found) == 2, [a[S.INCIDENT_TITLE] for a, _ in found.values()]
    by_rule = {("memfd" if "Fileless" in rec.body.string_value else "ptrace"): (a, rec)
               for a, rec in found.values()}
    m_attrs, m_rec = by_rule["memfd"]
    assert "was started from a memfd (in memory only)" in m_rec.body.string_value
    assert "/memfd:payload" in m_rec.body.string_value
    assert m_attrs[S.INCIDENT_SEVERITY] == "CRITICAL"
    p_attrs, p_rec = by_rule["ptrace"]
    assert f"called ptrace PTRACE_ATTACH on pid {victim}" in p_rec.body.string_value
    techniques = p_attrs[S.INCIDENT_TECHNIQUES]
    assert isinstance(techniques, list) and "T1055.008" in techniques
    for attrs, _ in found.values():
        check_evidence(attrs, out)
