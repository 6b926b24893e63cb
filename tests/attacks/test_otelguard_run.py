"""Acceptance through the product itself: `otelguard run` (its own process: sensor, exporter,
processor pipeline, JSON lines output) sees a reverse shell in a container and writes the
detection, linked to the raw exec record and its trace, and counts it in its exit summary;
the same detection leaves as a Falco JSON alert (falco-json output), and the start-up line
says what is watched and how long start-up took."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict, body_text
from tests.attacks.harness import PYTHON, SRC
from tests.attacks.payloads import PIPE_SHELL, REVERSE_SHELL
from tests.ebpf.containers import container
from tests.support.otelguard_run import OTELGUARD, output_records, wait_for_line

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

RULE = "Reverse shell (socket on stdio then shell exec)"


def test_otelguard_run_detects_a_reverse_shell(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    config = tmp_path / "otelguard.yaml"
    # only pods' cgroups (what a node agent on Kubernetes would watch): other work on this
    # machine cannot fill the ring buffer
    config.write_text("sensor:\n  cgroup_scope: [/kubepods.slice, /kubepods]\n")
    alerts = tmp_path / "alerts.json"
    argv = [OTELGUARD, "run", "--config", str(config), "--output",
            f"jsonl:{out}", "--output", f"falco-json:{alerts}?min_priority=critical",
            "--metrics", "127.0.0.1:0"]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}) as run:
        try:
            loaded = wait_for_line(run, "watching (", 180)
            assert "falco_rules" in loaded and " started in " in loaded, loaded
            with container() as attacked, container() as control:
                for c, code in ((attacked, REVERSE_SHELL), (control, PIPE_SHELL)):
                    with c.popen([PYTHON, "-c", code]) as p:
                        assert p.wait(timeout=30) == 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (not out.exists() or RULE not in out.read_text()):
                time.sleep(0.5)
        finally:
            run.send_signal(signal.SIGINT)
            _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    records = output_records(out)
    detections = [(res, rec) for res, rec in records if rec.event_name == S.EV_DETECTION
                  and attrs_dict(rec.attributes).get(S.SECURITY_RULE_NAME) == RULE]
    assert [res[S.CONTAINER_ID] for res, _ in detections] == [attacked.container_id]
    res, det = detections[0]
    a = attrs_dict(det.attributes)
    assert det.severity_text == "CRITICAL" and res[S.STREAM] == S.STREAM_DETECTION
    trigger = [rec for r, rec in records if r.get(S.CONTAINER_ID) == attacked.container_id
               and attrs_dict(rec.attributes).get(S.LOG_RECORD_UID) == a[S.TRIGGER_RECORD_UID]]
    assert len(trigger) == 1 and trigger[0].event_name == S.EV_PROCESS_EXEC
    assert (det.trace_id, det.span_id) == (trigger[0].trace_id, trigger[0].span_id)
    # the control container's shell (a pipe on stdin) was seen and not reported
    assert any(r.get(S.CONTAINER_ID) == control.container_id and rec.event_name ==
               S.EV_PROCESS_EXEC for r, rec in records)
    assert RULE in err  # the exit summary counts detections by rule
    falco = [json.loads(line) for line in alerts.read_text().splitlines()]
    shells = [f for f in falco if f["rule"] == RULE]
    assert len(shells) == 1 and shells[0]["priority"] == "Critical", falco
    assert all(f["priority"] in ("Critical", "Alert", "Emergency") for f in falco)
    assert shells[0]["source"] == "syscall" and shells[0]["output"].endswith(body_text(det))
    assert shells[0]["output_fields"]["evt.time"] == det.time_unix_nano
