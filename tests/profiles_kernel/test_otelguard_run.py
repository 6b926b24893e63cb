"""Through the product itself: `otelguard run --profiles DIR --learn-for 16s` (its own process:
sensor, exporter, pipeline, JSON lines output) learns a container without Kubernetes metadata
(workload ``container/<id>``, one instance: the bucket condition and the never-learned list
defend it), writes its profile file; `otelguard profile approve` approves it; the run reads it
on its next sync; then a new binary in the container is detected and a replay is quiet."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from otelguard.processors.profiles.document import file_name, load
from otelguard.processors.profiles.records import RULESET
from tests.attacks.harness import SRC
from tests.ebpf.containers import new_container_id
from tests.profiles_kernel.workloads import Premises, Replica
from tests.support.otelguard_run import OTELGUARD, output_records, wait_for_line

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(420)]


def _deviations(out: Path, cid: str) -> list[dict[str, Any]]:
    return [a for res, rec in output_records(out) if res.get(S.CONTAINER_ID) == cid
            and rec.event_name == S.EV_DETECTION
            for a in [attrs_dict(rec.attributes)]
            if a.get(S.SECURITY_RULE_RULESET_NAME) == RULESET and S.ANOMALY_KIND in a]


def test_otelguard_run_learns_a_container_then_detects_what_it_never_did(
        tmp_path: Path) -> None:
    premises = Premises(tmp_path / "premises")
    premises.base.mkdir()
    premises.open()
    cid = new_container_id()
    web = Replica(f"container/{cid}", "web", str(uuid.uuid4()), cid, "web")
    profiles, out = tmp_path / "profiles", tmp_path / "out.jsonl"
    config = tmp_path / "otelguard.yaml"
    config.write_text("sensor:\n  cgroup_scope: [/kubepods.slice, /kubepods]\n")
    argv = [OTELGUARD, "run", "--config", str(config), "--output", f"jsonl:{out}",
            "--metrics", "127.0.0.1:0", "--profiles", str(profiles), "--learn-for", "16s"]
    try:
        with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": SRC}) as run:
            try:
                wait_for_line(run, "watching (", 180)
                path = profiles / file_name(web.workload)
                # learning: the workload runs until the run wrote its profile as learned
                deadline = time.monotonic() + 60
                while not (path.exists() and load(path).status.state == "learned"):
                    assert time.monotonic() < deadline, "the profile was not learned in 60 s"
                    with premises.launched(web) as (p, *_):
                        assert p.returncode == 0
                    time.sleep(1.0)
                assert _deviations(out, cid) == []  # learning never reports
                subprocess.run([OTELGUARD, "profile", "approve", str(path), "--by", "ci"],
                               check=True, env={**os.environ, "PYTHONPATH": SRC},
                               stdout=subprocess.DEVNULL)
                # the run reads the approval on its next sync (5 s): until then nothing
                # alerts, after it the new binary does
                deadline = time.monotonic() + 30
                found: list[dict[str, Any]] = []
                while not found:
                    assert time.monotonic() < deadline, "no deviation within 30 s of approval"
                    with premises.launched(web, ["new_binary"]) as (p, *_):
                        assert p.returncode == 0
                    time.sleep(2.0)
                    found = _deviations(out, cid)
                assert [(a[S.SECURITY_RULE_NAME], a[S.ANOMALY_KIND]) for a in found] == [
                    ("Unexpected process launched", "process")]
                assert str(found[0][S.ANOMALY_VALUE]).startswith("/usr/bin/id|")
                assert found[0][S.PROFILE_WORKLOAD] == web.workload
                # the benign workload replayed: nothing more
                with premises.launched(web) as (p, *_):
                    assert p.returncode == 0
                time.sleep(2.0)
                assert len(_deviations(out, cid)) == len(found)
            finally:
                run.send_signal(signal.SIGINT)
                _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        doc = load(path)
        assert doc.status.state == "approved" and doc.status.approval is not None
        assert doc.status.approval.by == "ci"
    finally:
        premises.close()
