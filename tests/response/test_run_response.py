"""End to end through `otelguard run` (its own process: real sensor, rules, incidents and the
response stage with the registry's real actions): a process in a (fake kubepods) container
reads /etc/shadow and keeps running; a freeze is proposed, waits for a person, is approved
with `otelguard respond approve`, freezes the container's cgroup (the process stops getting
CPU), and is reverted at its ttl; the run's output carries the audit records on their stream,
linked to the detection's trace, and `otelguard audit verify` accepts the chain. Prints the
detection -> proposal and approval -> effect latencies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict
from otelguard.response.request import State
from otelguard.response.store import LocalStore
from tests.ebpf.containers import container
from tests.support.polling import wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.path.realpath(sys.executable)
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
OTELGUARD = [sys.executable, "-m", "otelguard.cli"]
RULE = "Read sensitive file untrusted"
READ_THEN_SPIN = "open('/etc/shadow', 'rb').read(1)\nwhile True: pass\n"


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def _records(path: Path) -> list[tuple[dict, object]]:  # type: ignore[type-arg]
    from otelguard.otlp import jsoncodec
    out = []
    for line in path.read_text().splitlines():
        req = jsoncodec.decode_line(line)
        for rl in getattr(req, "resource_logs", ()):
            res = attrs_dict(rl.resource.attributes)
            out += [(res, rec) for sl in rl.scope_logs for rec in sl.log_records]
    return out


def test_shadow_read_freeze_approved_then_reverted_at_ttl(tmp_path: Path) -> None:
    store_dir, out = tmp_path / "store", tmp_path / "out.jsonl"
    policies = tmp_path / "policies.yaml"
    policies.write_text(textwrap.dedent(f"""\
        apiVersion: otelguard.dev/v1alpha1
        kind: ResponsePolicy
        metadata: {{name: freeze-shadow-readers}}
        spec:
          mode: approve
          ttl: 4s
          expire_after: 2m
          match: {{rules: ["{RULE}"]}}
          actions: [{{action: freeze_container}}]
        """))
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent(f"""\
        sensor:
          cgroup_scope: [/kubepods.slice, /kubepods]
        processors:
          - type: falco_rules
          - type: noise_control
          - type: response
            config:
              policies: [{policies}]
              store: {store_dir}
              tick_seconds: 0.2
        """))
    argv = [*OTELGUARD, "run", "--config", str(config), "--output", f"jsonl:{out}",
            "--metrics", "127.0.0.1:0"]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=ENV) as run:
        try:
            wait_for(lambda: store_dir.is_dir() and out.exists(), 240, "otelguard run to start")
            time.sleep(2)  # the sensor attaches after the pipeline opened its outputs
            with container() as box, box.popen([PYTHON, "-c", READ_THEN_SPIN]) as spin:
                try:
                    t_read = time.monotonic()
                    store = LocalStore(store_dir)
                    wait_for(lambda: store.requests(), 60, "a proposal")
                    t_proposed = time.monotonic()
                    (req,) = store.requests()
                    assert req.state == State.PROPOSED and req.mode == "approve"
                    assert req.target.container_id == box.container_id
                    assert req.steps[0].action == "freeze_container"
                    assert "+state: '1'" in req.steps[0].change.diff
                    time.sleep(1.0)  # nobody approved: nothing happens
                    assert (box.path / "cgroup.freeze").read_text().strip() == "0"
                    assert store.get(req.id).state == State.PROPOSED  # type: ignore[union-attr]

                    t_approve = time.monotonic()
                    done = subprocess.run(
                        [*OTELGUARD, "respond", "approve", req.id[:10], "--store",
                         str(store_dir), "--by", "alice", "--reason", "read shadow",
                         "--wait", "20"], env=ENV, capture_output=True, text=True, timeout=60)
                    assert done.returncode == 0, done.stderr
                    wait_for(lambda: (box.path / "cgroup.freeze").read_text().strip() == "1",
                             10, "the freeze")
                    t_effect = time.monotonic()
                    moved = {t.to: t.at for t in store.get(req.id).history}  # type: ignore[union-attr]
                    in_stage = moved["Done"] - moved["Approved"]
                    before = cpu_ticks(spin.pid)
                    time.sleep(0.5)
                    assert cpu_ticks(spin.pid) == before  # frozen

                    wait_for(lambda: store.get(req.id).state == State.REVERTED,  # type: ignore[union-attr]
                             30, "the ttl revert")
                    assert (box.path / "cgroup.freeze").read_text().strip() == "0"
                    wait_for(lambda: cpu_ticks(spin.pid) > before + 5, 10, "the thawed loop")
                finally:
                    spin.kill()
            print(f"\ndetection read -> proposal {t_proposed - t_read:.2f} s (incl. sensor and "
                  f"pipeline); approve command -> cgroup frozen {t_effect - t_approve:.2f} s (a new "
                  f"process: imports); Approved -> Done in the stage {in_stage:.3f} s")
            time.sleep(2.5)  # one more flush ships the last audit records
        finally:
            run.send_signal(signal.SIGINT)
            _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    final = store.get(req.id)
    assert final is not None and len(store.requests()) == 1  # one per container
    assert [(t.frm, t.to, t.by) for t in final.history] == [
        ("New", "Proposed", "policy:freeze-shadow-readers"),
        ("Proposed", "Approved", "alice"), ("Approved", "Executing", "otelguard"),
        ("Executing", "Done", "otelguard"), ("Done", "Reverted", "otelguard")]
    verify = subprocess.run([*OTELGUARD, "audit", "verify", str(store_dir / "audit.jsonl")],
                            env=ENV, capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr
    records = _records(out)
    detection = next(rec for res, rec in records if rec.event_name == S.EV_DETECTION  # type: ignore[attr-defined]
                     and attrs_dict(rec.attributes).get(S.SECURITY_RULE_NAME) == RULE)  # type: ignore[attr-defined]
    audit = [(res, rec) for res, rec in records if res.get(S.STREAM) == S.STREAM_AUDIT]
    assert [attrs_dict(rec.attributes)[S.RESPONSE_STATE_TO] for _, rec in audit] == [  # type: ignore[attr-defined]
        "Proposed", "Approved", "Executing", "Done", "Reverted"]
    assert {rec.trace_id for _, rec in audit} == {detection.trace_id}  # type: ignore[attr-defined]
