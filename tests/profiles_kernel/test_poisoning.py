"""Issue 12's poisoning attempts on the real kernel: what an attacker did inside the learning
windows (learning.py) is not in the approved profiles, and doing it again after approval is
detected within 2 s; a decoy deviation does not silence a different one; a tampered approved
file is reported and not enforced. Each test names the defence it exercises."""

from __future__ import annotations

import time

import pytest

from otelguard import semconv as S
from otelguard.processors.profiles.document import dump, load
from otelguard.processors.profiles.model import APPROVED, TAINTED_REASON
from otelguard.processors.profiles.observe import (
    CAPABILITY, DNS, EGRESS, FILE_READ, FILE_WRITE, PROCESS,
)
from otelguard.processors.profiles.records import PARTIAL, TAMPERED
from tests.profiles_kernel.learning import RISKY_STEPS
from tests.profiles_kernel.workloads import JUNK, Replica, Shop

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(900)]

LATENCY_S = 2.0


def _quarantined(shop: Shop, workload: str, kind: str, value: str) -> str:
    """The quarantine reason of (kind, value) in the workload's approved file ('' if absent)."""
    doc = load(shop.file_of(workload))
    return next((q.reason for q in doc.status.quarantine
                 if q.kind == kind and q.value == value), "")


def _allowed(shop: Shop, workload: str, kind: str) -> list[str]:
    p = shop.profiles.profile(workload)
    assert p is not None and p.state == APPROVED and p.enforcing
    return p.spec[kind]


def _poisoned(shop: Shop, i: int = 0) -> Replica:
    return shop.replicas["web-poisoned"][i]


def test_a_step_inside_one_replicas_window_stays_quarantined_and_alerts(shop: Shop) -> None:
    # k of n: replica a called its C2 in both buckets; replica b never did
    r = _poisoned(shop)
    c2 = f"127.0.0.66 {shop.config['db_port']}/tcp"
    assert _quarantined(shop, r.workload, EGRESS, c2) == "seen by 1 of 2 instances"
    assert c2 not in _allowed(shop, r.workload, EGRESS)
    for replica in (r, _poisoned(shop, 1)):
        _, _, latency = shop.expect_deviation(replica, EGRESS, lambda v: v == c2, ["c2_kofn"])
        assert latency <= LATENCY_S


def test_a_single_bucket_burst_stays_quarantined_and_alerts(shop: Shop) -> None:
    # both replicas looked the name up, in the first bucket only (a burst at rollout)
    r = _poisoned(shop)
    name = "staging.burst.example"
    assert _quarantined(shop, r.workload, DNS, name) == "seen in 1 of 2 buckets"
    _, _, latency = shop.expect_deviation(r, DNS, lambda v: v == name, ["dns_burst"])
    assert latency <= LATENCY_S


RISKY = [  # step done by both replicas in both buckets -> (kind, value predicate, reason)
    ("shell", PROCESS, lambda v: v.startswith("/usr/bin/dash|"),
     "risky: shell or interpreter spawned by a non-shell service"),
    ("network_tool", PROCESS, lambda v: v.startswith("/usr/bin/curl|"), "risky: network tool"),
    ("write_etc", FILE_WRITE, lambda v: v == "/etc/hosts",
     "risky: write under a system directory"),
    ("cap_sys_admin", CAPABILITY, lambda v: v == "CAP_SYS_ADMIN",
     "risky: privileged capability"),
    ("sa_token_read", FILE_READ, lambda v: v.endswith("/serviceaccount/token"),
     "risky: service-account token read"),
]
assert [step for step, *_ in RISKY] == list(RISKY_STEPS)


@pytest.mark.parametrize("step,kind,match,reason", RISKY, ids=[r[0] for r in RISKY])
def test_risky_behaviour_seen_everywhere_and_always_never_auto_learns(
        shop: Shop, step: str, kind: str, match: object, reason: str) -> None:
    r = _poisoned(shop)
    doc = load(shop.file_of(r.workload))
    hits = [q for q in doc.status.quarantine if q.kind == kind and match(q.value)]  # type: ignore[operator]
    assert hits and {q.reason for q in hits} == {reason}, [
        (q.kind, q.value, q.reason) for q in doc.status.quarantine]
    assert all(len(q.instances) == 2 and len(q.buckets) == 2 for q in hits)  # passed the bar
    assert not [v for v in _allowed(shop, r.workload, kind) if match(v)]  # type: ignore[operator]
    _, _, latency = shop.expect_deviation(r, kind, match, [step])  # type: ignore[arg-type]
    assert latency <= LATENCY_S


def test_a_rule_hit_while_learning_taints_the_window_and_the_attack_still_alerts(
        shop: Shop) -> None:
    r = shop.replicas["web-tainted"][0]
    doc = load(shop.file_of(r.workload))
    assert {t.rule for t in doc.status.tainted} == {"Read sensitive file untrusted"}
    assert "tainted by rule detections" in shop.refused[r.workload]  # approve said no first
    c2 = f"127.0.0.77 {shop.config['db_port']}/tcp"
    # the trigger process was not learned from: its C2 call is nowhere, not even quarantined
    assert _quarantined(shop, r.workload, EGRESS, c2) == ""
    promoted = _allowed(shop, r.workload, EGRESS)
    assert f"127.0.0.1 {shop.config['db_port']}/tcp" in promoted
    assert all(q.reason != TAINTED_REASON or q.value != c2 for q in doc.status.quarantine)
    run, _, latency = shop.expect_deviation(r, EGRESS, lambda v: v == c2, ["taint_then_c2"])
    assert latency <= LATENCY_S
    # the read alerts too (the rule's repeats of the window may be throttled by noise_control)
    assert [d for d in run.deviations() if d.attrs[S.ANOMALY_VALUE] == "/etc/shadow"]


def test_a_flood_of_junk_leaves_a_partial_profile_and_deviations_still_alert(shop: Shop) -> None:
    r = shop.replicas["web-flooded"][0]
    doc = load(shop.file_of(r.workload))
    assert doc.status.partial and doc.status.overflow > 0
    reports = shop.reports(PARTIAL, r.workload)
    assert len(reports) == 1 and reports[0].record.severity_text == "WARNING"
    junk = [q for q in doc.status.quarantine if q.kind == FILE_WRITE and "/junk/" in q.value]
    assert 0 < len(junk) < JUNK  # some admitted (and quarantined: one replica, one bucket)
    assert not [v for v in _allowed(shop, r.workload, FILE_WRITE) if "/junk/" in v]
    # the benign part was still learned: a benign run is quiet ...
    quiet = shop.run(shop.replicas["web-flooded"][1])
    shop.wait_detections(quiet, lambda rn: False, 1.0)
    assert [d.attrs[S.ANOMALY_VALUE] for d in quiet.deviations()] == []
    # ... and a real deviation after the flood alerts
    drop = f"{shop.config['data']}/web/drop/"
    _, _, latency = shop.expect_deviation(r, FILE_WRITE, lambda v: v.startswith(drop),
                                          ["write_new_dir"])
    assert latency <= LATENCY_S


def test_a_decoy_deviation_does_not_silence_a_different_one(shop: Shop) -> None:
    # noise_control (after profiles in the pipeline) keys deviations by workload and value:
    # twelve repeats of a decoy are throttled, the different C2 call right after is not
    r = _poisoned(shop, 1)
    c2 = f"127.0.0.68 {shop.config['db_port']}/tcp"
    run, _, latency = shop.expect_deviation(r, EGRESS, lambda v: v == c2,
                                            ["decoy", "c2_after_decoy"], timed="c2_after_decoy")
    assert 0 < latency <= LATENCY_S
    decoys = [d for d in run.deviations() if d.attrs[S.ANOMALY_VALUE] == "decoy.attacker.example"]
    assert 1 <= len(decoys) < 12, len(decoys)


def test_a_tampered_approved_file_is_reported_and_not_enforced_until_restored(
        shop: Shop) -> None:
    r = _poisoned(shop)
    path = shop.file_of(r.workload)
    original = path.read_text()
    doc = load(path)
    c2 = f"127.0.0.66 {shop.config['db_port']}/tcp"
    # the attacker allows their C2 in the approved file, without an approval
    tampered = doc.spec.__class__(**{**doc.spec.__dict__, "egress": (*doc.spec.egress, c2)})
    since = time.time()
    path.write_text(dump(doc.__class__(doc.apiVersion, doc.kind, doc.metadata, tampered,
                                       doc.status)))
    assert shop.live.wait(lambda: bool(shop.reports(TAMPERED, r.workload, since)), 5.0)
    report = shop.reports(TAMPERED, r.workload, since)[0]
    assert report.record.severity_text == "CRITICAL"
    assert report.at - since <= LATENCY_S + 1.0  # a sync pass (0.5 s here) + the flush timer
    p = shop.profiles.profile(r.workload)
    assert p is not None and p.tampered and not p.enforcing
    # the reviewer restores the approved content: enforced again, the C2 call alerts
    path.write_text(original)
    shop.wait_state([r.workload], (APPROVED,))
    deadline = time.monotonic() + 5
    while not getattr(shop.profiles.profile(r.workload), "enforcing", False):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _, _, latency = shop.expect_deviation(r, EGRESS, lambda v: v == c2, ["c2_kofn"])
    assert latency <= LATENCY_S
