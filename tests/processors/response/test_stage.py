"""The response stage in process, after the real incidents stage: detections and incident
records matched to policies; approve waits, auto executes, advise never does; protected
namespaces and max_per_hour refuse; the batch passes unchanged; the audit records leave
through drain() with the trigger's trace and the shipped offset survives a restart."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from otelguard import semconv as S
from otelguard.cli import main
from otelguard.otlp.messages import attrs_dict, count_records
from otelguard.processors.incidents import Config as IncidentsConfig
from otelguard.processors.incidents import IncidentsStage
from otelguard.processors.response import Config, ResponseStage
from otelguard.response.request import State
from otelguard.telemetry import counter_values
from otelguard.response import metrics
from tests.support.incidents import batch, detection, event, pod, trace
from tests.support.polling import wait_for
from tests.support.response import MarkerAction

POLICIES = textwrap.dedent("""\
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: ask-shadow}
    spec:
      mode: approve
      max_per_hour: 2
      match: {rules: ["Read sensitive file*"], priority: WARNING}
      actions: [{action: mark, params: {text: asked}}]
    ---
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: tell-shells}
    spec:
      match: {rules: ["Terminal shell*"]}
      actions: [{action: mark}]
    ---
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: auto-critical}
    spec:
      mode: auto
      match: {source: incident, incident_severity: CRITICAL}
      actions: [{action: mark, params: {text: auto}}]
    """)


def _shadow(name: str, ns: str = "shop", rule: str = "Read sensitive file untrusted",
            severity: int = 13, technique: str = "T1555") -> tuple[object, bytes]:
    tr = trace(name)
    ev = event(S.EV_FILE_OPEN, 4242, tr, attrs={S.FILE_PATH: "/etc/shadow"})
    det = detection(ev, rule, severity, "credential_access", technique)
    return batch(pod(name, ns=ns, cid=name[:2]), [ev], [det]), tr


def _stage(tmp: Path, action: MarkerAction) -> ResponseStage:
    (tmp / "p.yaml").write_text(POLICIES)
    stage = ResponseStage(Config(policies=(str(tmp / "p.yaml"),), store=str(tmp / "store"),
                                 tick_seconds=0.05), actions={"mark": action})
    stage.start()
    return stage


def test_detections_and_incidents_through_the_stage(tmp_path: Path) -> None:
    action = MarkerAction(tmp_path / "marks")
    stage = _stage(tmp_path, action)
    incidents = IncidentsStage(IncidentsConfig())
    try:
        b, tr = _shadow("web-1")
        before = b.SerializeToString()  # type: ignore[attr-defined]
        assert stage.process(b) is b and b.SerializeToString() == before  # type: ignore[attr-defined]
        assert stage.wait_idle()
        assert stage.store is not None
        (req,) = stage.store.requests()
        assert (req.policy, req.state, req.target.pod, req.target.pid) == (
            "ask-shadow", State.PROPOSED, "web-1", 4242)
        time.sleep(0.2)
        assert action.runs() == []  # nobody approved

        (out,) = stage.drain(False)
        (rl,) = out.resource_logs  # type: ignore[union-attr]
        assert attrs_dict(rl.resource.attributes)[S.STREAM] == S.STREAM_AUDIT
        (rec,) = rl.scope_logs[0].log_records
        assert rec.trace_id == tr and attrs_dict(rec.attributes)[S.RESPONSE_STATE_TO] == "Proposed"
        assert stage.drain(False) == []

        suppressed = counter_values(metrics.suppressed)
        stage.process(_shadow("dns-1", ns="kube-system")[0])
        stage.process(_shadow("web-1")[0])  # the same pod again: one open request is enough
        stage.process(_shadow("web-2")[0])
        stage.process(_shadow("web-3")[0])  # a third in the hour: max_per_hour 2
        assert stage.wait_idle()
        now = counter_values(metrics.suppressed)
        for reason in ("protected_namespace", "duplicate", "rate_limit"):
            key = ("ask-shadow", reason)
            assert now.get(key, 0) - suppressed.get(key, 0) == 1, reason
        assert sorted(r.target.pod for r in stage.store.requests()) == ["web-1", "web-2"]

        shell, _ = _shadow("sh-1", rule="Terminal shell in container", technique="T1059")
        stage.process(shell)
        assert stage.wait_idle()
        told = next(r for r in stage.store.requests() if r.policy == "tell-shells")
        store = str(tmp_path / "store")
        assert main(["respond", "approve", told.id, "--store", store, "--by", "a"]) == 1
        assert main(["respond", "approve", req.id, "--store", store, "--by", "alice",
                     "--wait", "5"]) == 0
        assert stage.store.get(req.id).state == State.DONE  # type: ignore[union-attr]
        assert [r["target"]["pod"] for r in action.runs()] == ["web-1"]

        # a critical chain becomes a CRITICAL incident record; the auto policy acts on it
        crit, _ = _shadow("db-0", rule="Read sensitive file untrusted", severity=21)
        incidents.process(crit)
        (inc_batch,) = incidents.drain(False)
        n = count_records(inc_batch)
        stage.process(inc_batch)
        assert count_records(inc_batch) == n
        wait_for(lambda: any(r.policy == "auto-critical" and r.state == State.DONE
                             for r in stage.store.requests()), 10, "the auto request")
        auto = next(r for r in stage.store.requests() if r.policy == "auto-critical")
        assert auto.trigger.source == "incident" and auto.target.pod == "db-0"
        assert [t.by for t in auto.history][:2] == ["policy:auto-critical"] * 2
        assert main(["audit", "verify", str(tmp_path / "store" / "audit.jsonl")]) == 0
    finally:
        stage.shutdown()

    shipped = sum(count_records(b) for b in stage.drain(True))
    assert shipped == 9  # every record since the first drain
    stage.settle(2)  # the first two drains were forwarded, the last one not
    again = _stage(tmp_path, action)  # a restart ships from the settled offset: at least once
    try:
        assert sum(count_records(b) for b in again.drain(False)) == 9
        again.settle(1)
    finally:
        again.shutdown()
    third = _stage(tmp_path, action)
    try:
        assert third.drain(False) == []
    finally:
        third.shutdown()


def test_a_policy_trees_responses_stamp_the_trees_revision(tmp_path: Path) -> None:
    """``policy_dir`` (``--policy DIR``): the tree's responses/ are the policies, and a
    request and its audit records carry the tree's revision, the one its detections carry."""
    from otelguard.processors.policy.tree import load_tree

    root = tmp_path / "tree"
    for kind in ("rules", "responses"):
        (root / kind).mkdir(parents=True)
    (root / "rules" / "r.yaml").write_text(
        "- rule: Read sensitive file untrusted\n  desc: d\n  condition: fd.name = /etc/shadow\n"
        "  output: o\n  priority: WARNING\n")
    (root / "responses" / "p.yaml").write_text(POLICIES)
    stage = ResponseStage(Config(policy_dir=str(root), store=str(tmp_path / "store"),
                                 tick_seconds=0.05), actions={"mark": MarkerAction(tmp_path)})
    stage.start()
    try:
        revision = load_tree(root).revision
        assert {p.revision for p in stage.policies.policies} == {revision}
        stage.process(_shadow("web-1")[0])
        assert stage.wait_idle() and stage.store is not None
        (req,) = stage.store.requests()
        assert (req.policy, req.policy_revision) == ("ask-shadow", revision)
        (out,) = stage.drain(False)
        (rec,) = out.resource_logs[0].scope_logs[0].log_records  # type: ignore[union-attr]
        assert attrs_dict(rec.attributes)[S.RESPONSE_POLICY_REVISION] == revision
    finally:
        stage.shutdown()
    (root / "responses" / "bad.yaml").write_text(POLICIES.replace("action: mark}", "action: x}"))
    import pytest

    from otelguard.config import ConfigError

    with pytest.raises(ConfigError, match="bad.yaml:"):
        ResponseStage(Config(policy_dir=str(root), store=str(tmp_path / "s2")),
                      actions={"mark": MarkerAction(tmp_path)})
