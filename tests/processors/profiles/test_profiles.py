"""profiles: learning over several replicas and time buckets, then enforcing an approved
profile; poisoning attempts that fail; the deviation record's attributes. Real stage objects,
agent-shaped records, deterministic time (tests/support/fake_time.py)."""

from __future__ import annotations

from typing import Callable, Optional

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp.messages import attrs_dict, iter_log_records
from otelguard.processors.profiles import Config, ProfilesStage
from otelguard.processors.profiles.model import (
    APPROVED, LEARNED, LEARNING, TAINTED, TAINTED_REASON,
)

from tests.support.fake_time import FakeTime
from tests.support.metrics import sample

from . import events as ev

WORKLOAD = "k8s/shop/Deployment/cart/web"
CONFIG = Config(learn_seconds=800, bucket_seconds=100, min_buckets=2, min_replicas=2)
PODS = ("a", "b", "c")


def benign(uid: str, n: int = 0) -> ExportLogsServiceRequest:
    """One pass of the benign workload in pod ``uid``: an HTTP service with a worker child,
    log and upload writes, a database peer, DNS, its port and its capability."""
    return ev.batch(
        ev.pod(uid),
        ev.execve("/usr/bin/python3", "/usr/bin/tini", "python3", "/app/server.py", "--port",
                  "8080"),
        ev.execve("/usr/bin/gzip", "/usr/bin/python3", "gzip", "-9", f"/var/log/app/{n}.log",
                  pid=101),
        ev.fork(),
        ev.open_("/var/log/app/app.log"),
        ev.open_(f"/tmp/upload-{uid}-{n}"),
        ev.connect("10.96.5.5", 5432, service="db"),
        ev.dns("db.shop.svc.cluster.local"),
        ev.listen(8080),
        ev.capability("CAP_NET_BIND_SERVICE"),
    )


def learned_stage(clock: FakeTime, config: Config = CONFIG) -> ProfilesStage:
    """A stage that learned the benign workload from 3 pods over 2 buckets."""
    stage = ProfilesStage(config, clock.clock)
    for bucket in range(2):
        for i in range(5):
            for uid in PODS:
                stage.process(benign(uid, i))
        clock.now += config.bucket_seconds
    clock.now = ev.T0 + config.learn_seconds + 1
    stage.sync()
    return stage


def learned_with(extra: Callable[[str, int], Optional[ExportLogsServiceRequest]],
                 buckets: int = 2) -> ProfilesStage:
    """A stage that learned the benign workload from 3 pods over ``buckets`` buckets, each pod
    also sending ``extra(pod, bucket)`` (when not None) after its benign pass."""
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(CONFIG, clock.clock)
    for bucket in range(buckets):
        for uid in PODS:
            stage.process(benign(uid, bucket))
            req = extra(uid, bucket)
            if req is not None:
                stage.process(req)
        clock.now += CONFIG.bucket_seconds
    clock.now = ev.T0 + CONFIG.learn_seconds
    stage.sync()
    return stage


def dets(stage: ProfilesStage, req: ExportLogsServiceRequest) -> list[dict[str, object]]:
    return [a for a, _ in ev.detections(stage.process(req))]


def test_benign_learned_then_replayed_quietly_and_every_deviation_detected() -> None:
    clock = FakeTime(ev.T0)
    stage = learned_stage(clock)
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == LEARNED and p.revision == 1
    assert "/tmp/*" in p.spec["file_write"]  # 30 upload names collapsed into one glob
    assert p.spec["egress"] == ["service:shop/db 5432/tcp"]
    assert p.spec["dns"] == ["db.shop.svc.cluster.local"]
    # Learned is not enforced: only a human's approval makes deviations detections.
    assert dets(stage, ev.batch(ev.pod("a"), ev.execve("/bin/nc", "/usr/bin/python3"))) == []
    stage.approve(WORKLOAD, "alice")
    # held-out benign replay, a new replica included: nothing
    for uid in (*PODS, "d"):
        assert dets(stage, benign(uid, 99)) == []
    near_misses = ev.batch(ev.pod("e"), ev.open_("/tmp/upload-zz-1234"),
                           ev.dns("DB.shop.svc.cluster.local."),
                           ev.execve("/usr/bin/gzip", "/usr/bin/python3", "gzip", "-9",
                                     "/var/log/app/other.log"))
    assert dets(stage, near_misses) == []
    deviations = [
        (ev.execve("/usr/local/bin/miner", "/usr/bin/python3", "miner"),
         "Unexpected process launched", "process"),
        (ev.execve("/bin/sh", "/usr/bin/python3", "sh", "-c", "id"),
         "Unexpected process launched", "process"),
        (ev.execve("/usr/bin/gzip", "/bin/bash", "gzip", "-9", "/x"),
         "Unexpected process launched", "process"),
        (ev.execve("/usr/bin/gzip", "/usr/bin/python3", "gzip", "-d", "/x"),
         "Unexpected process launched", "process"),
        (ev.execve("/tmp/.x/payload", "/usr/bin/python3", upper=True),
         "Unexpected process launched", "untrusted_exec"),
        (ev.execve("/memfd:x", "/usr/bin/python3", memfd=True),
         "Unexpected process launched", "untrusted_exec"),
        (ev.connect("203.0.113.9", 443), "Unexpected outbound connection", "egress"),
        (ev.connect("10.96.5.5", 22, service="db"), "Unexpected outbound connection", "egress"),
        (ev.connect("10.1.2.3", 53, proto="udp"), "Unexpected outbound connection", "egress"),
        (ev.connect("169.254.169.254", 80), "Unexpected outbound connection", "egress"),
        (ev.dns("evil.example.com"), "Unexpected DNS query", "dns"),
        (ev.listen(4444), "Unexpected listening port", "listen"),
        (ev.capability("CAP_SYS_PTRACE"), "Unexpected capability used", "capability"),
        (ev.open_("/etc/cron.d/backdoor"), "Unexpected file write", "file_write"),
        (ev.open_("/root/.bashrc"), "Unexpected file write", "file_write"),
        (ev.open_("/var/run/secrets/kubernetes.io/serviceaccount/token", "O_RDONLY"),
         "Unexpected sensitive file read", "file_read"),
    ]
    for event, rule, kind in deviations:
        found = dets(stage, ev.batch(ev.pod("b"), event))
        assert [(d[S.SECURITY_RULE_NAME], d[S.ANOMALY_KIND]) for d in found] == [(rule, kind)], \
            event


def test_deviation_record_has_the_rule_detection_shape_and_the_profile_evidence() -> None:
    clock = FakeTime(ev.T0)
    stage = learned_stage(clock)
    stage.approve(WORKLOAD, "alice")
    req = ev.batch(ev.pod("c"), ev.dns("exfil.attacker.example"))
    trigger_uid = attrs_dict(req.resource_logs[0].scope_logs[0].log_records[0].attributes)[
        S.LOG_RECORD_UID]
    out = stage.process(req)
    ((d, rec),) = ev.detections(out)
    res = attrs_dict(out.resource_logs[-1].resource.attributes)
    assert res[S.STREAM] == S.STREAM_DETECTION and res[S.K8S_POD_UID] == "pod-c"
    assert out.resource_logs[-1].scope_logs[0].scope.name == S.SCOPE_PROCESSORS
    assert rec.severity_text == "WARNING" and rec.severity_number == 13
    assert d[S.SECURITY_RULE_NAME] == "Unexpected DNS query"
    assert d[S.SECURITY_RULE_RULESET_NAME] == "otelguard_profiles"
    assert d[S.THREAT_TECHNIQUE_ID] == ["T1071.004"]
    assert d[S.THREAT_TACTIC_NAME] == ["command_and_control"]
    assert d[S.ANOMALY_KIND] == "dns" and d[S.ANOMALY_VALUE] == "exfil.attacker.example"
    assert d[S.ANOMALY_NEAREST] == ["db.shop.svc.cluster.local"]
    assert d[S.PROFILE_WORKLOAD] == WORKLOAD and d[S.PROFILE_STATE] == APPROVED
    assert d[S.PROFILE_REVISION] == 1 and d[S.PROFILE_APPROVED_BY] == "alice"
    assert d[S.PROFILE_OBSERVATIONS] == 2 * 5 * 3 * 8  # 8 observations per benign pass
    assert d[S.PROFILE_LEARNING_ENDED] == "2025-11-23T12:26:41Z"
    assert str(d[S.PROFILE_CONTENT_HASH]).startswith("sha256:")
    assert d[S.TRIGGER_RECORD_UID] == trigger_uid
    assert d[S.TRIGGER_EVENT_NAME] == S.EV_DNS_QUERY
    assert d[S.DNS_QUESTION_NAME] == "exfil.attacker.example"  # the trigger's evidence
    # a retried request makes the same record (same uid), as rule detections do
    again = stage.process(ev.batch(ev.pod("c"), ev.dns("exfil.attacker.example")))
    assert ev.detections(again)[0][0][S.LOG_RECORD_UID] != d[S.LOG_RECORD_UID]
    retried = ExportLogsServiceRequest()
    retried.CopyFrom(req)
    del retried.resource_logs[1:]
    assert ev.detections(stage.process(retried))[0][0][S.LOG_RECORD_UID] == d[S.LOG_RECORD_UID]


def test_one_pod_doing_something_during_learning_is_quarantined_and_still_alerts() -> None:
    # the compromised replica does its thing in every bucket, the others never do
    stage = learned_with(lambda uid, _: ev.batch(
        ev.pod("b"), ev.connect("10.9.9.9", 4444),
        ev.execve("/usr/bin/python3", "/usr/bin/python3", "python3", "/tmp/stage2.py"))
        if uid == "b" else None, buckets=3)
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == LEARNED
    quarantined = {(k, v): why for k, v, _, why in p.quarantine}
    assert quarantined[("egress", "10.9.9.9 4444/tcp")] == "seen by 1 of 2 instances"
    assert "10.9.9.9 4444/tcp" not in p.spec["egress"]
    stage.approve(WORKLOAD, "alice")
    found = dets(stage, ev.batch(ev.pod("a"), ev.connect("10.9.9.9", 4444)))
    assert [d[S.ANOMALY_VALUE] for d in found] == ["10.9.9.9 4444/tcp"]


def test_behaviour_of_a_single_time_bucket_is_not_learned() -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(CONFIG, clock.clock)
    for uid in PODS:  # every replica, but only in the first bucket (a burst at rollout)
        stage.process(ev.batch(ev.pod(uid), ev.dns("burst.example.org")))
    for bucket in range(2):
        for uid in PODS:
            stage.process(benign(uid, bucket))
        clock.now += CONFIG.bucket_seconds
    clock.now = ev.T0 + CONFIG.learn_seconds
    stage.sync()
    p = stage.profile(WORKLOAD)
    assert p is not None
    assert ("dns", "burst.example.org", "seen in 1 of 2 buckets") in {
        (k, v, why) for k, v, _, why in p.quarantine}


def test_risky_behaviour_never_auto_learns_even_everywhere_and_always() -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(CONFIG, clock.clock)
    risky = [ev.execve("/bin/sh", "/usr/bin/python3", "sh", "-c", "date"),
             ev.execve("/usr/bin/curl", "/usr/bin/python3", "curl", "http://x"),
             ev.execve("/usr/bin/apt-get", "/usr/bin/tini", "apt-get", "install"),
             ev.open_("/etc/resolv.conf"), ev.capability("CAP_NET_RAW"),
             ev.unshare("CLONE_NEWUTS"),
             ev.open_("/var/run/secrets/kubernetes.io/serviceaccount/token", "O_RDONLY"),
             ev.connect("169.254.169.254", 80), ev.connect("8.8.8.8", 443),
             ev.execve("/tmp/x", "/usr/bin/python3", upper=True),
             # the sensitive systems of the risk reach analyser: API server, etcd, a kubelet
             (S.EV_NETWORK_CONNECT, {**ev.connect("10.96.0.1", 443)[1],
                                     S.PEER_K8S_SERVICE_NAME: "kubernetes",
                                     S.PEER_K8S_NAMESPACE_NAME: "default"}),
             ev.connect("10.0.0.4", 10250), ev.connect("10.0.0.5", 2379)]
    for bucket in range(4):
        for uid in PODS:
            stage.process(benign(uid, bucket))
            stage.process(ev.batch(ev.pod(uid), *risky))
        clock.now += CONFIG.bucket_seconds
    clock.now = ev.T0 + CONFIG.learn_seconds
    stage.sync()
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == LEARNED
    reasons = sorted({why for _, _, _, why in p.quarantine})
    assert reasons == [
        "risky: cloud metadata address", "risky: egress outside the cluster",
        "risky: exec from the writable layer or memory", "risky: network tool",
        "risky: package manager", "risky: privileged capability",
        "risky: sensitive system (the API server, etcd, a kubelet)",
        "risky: service-account token read",
        "risky: shell or interpreter spawned by a non-shell service",
        "risky: write under a system directory"]
    stage.approve(WORKLOAD, "alice")
    found = dets(stage, ev.batch(ev.pod("a"), *risky))
    assert len(found) == len(risky)


def test_capability_use_is_a_granted_check_and_sys_admin_comes_from_the_syscalls() -> None:
    # The kernel checks CAP_SYS_ADMIN (noaudit) in the memory accounting of every root
    # process, and non-root processes fail checks all the time: neither is a use. Seen on the
    # real kernel (tests/profiles_kernel): every root process of every workload "used" it.
    clock = FakeTime(ev.T0)
    stage = learned_stage(clock)
    stage.approve(WORKLOAD, "alice")
    quiet = ev.batch(ev.pod("a"), ev.capability("CAP_SYS_ADMIN"),
                     ev.capability("CAP_NET_RAW", ret=-1), ev.unshare("CLONE_NEWUSER"),
                     ev.unshare("CLONE_NEWNET", ret=-1))
    assert dets(stage, quiet) == []
    found = dets(stage, ev.batch(ev.pod("a"), ev.unshare("CLONE_NEWNS|CLONE_NEWUSER"),
                                 ev.capability("CAP_NET_RAW")))
    assert [(d[S.ANOMALY_KIND], d[S.ANOMALY_VALUE], d[S.SECURITY_RULE_NAME]) for d in found] == [
        ("capability", "CAP_SYS_ADMIN", "Unexpected capability used"),
        ("capability", "CAP_NET_RAW", "Unexpected capability used")]


def test_a_rule_hit_while_learning_taints_the_window() -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(CONFIG, clock.clock)
    for bucket in range(2):
        for uid in PODS:
            req = benign(uid, bucket)
            if uid == "c" and bucket == 1:
                ev.rule_detection(req, "Terminal shell in container")
            stage.process(req)
        clock.now += CONFIG.bucket_seconds
    clock.now = ev.T0 + CONFIG.learn_seconds
    stage.sync()
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == TAINTED
    assert [t[0] for t in p.taints] == ["Terminal shell in container"]
    assert all(not v for v in p.spec.values())  # nothing allowed without a human
    # ... but what passed the bar is listed for the reviewer to promote
    promotable = {(k, v) for k, v, _, why in p.quarantine if why == TAINTED_REASON}
    assert ("egress", "service:shop/db 5432/tcp") in promotable
    assert ("dns", "db.shop.svc.cluster.local") in promotable


def test_the_trigger_process_is_not_learned_from_when_the_detection_has_no_pid() -> None:
    # Falco rules copy only the fields their output names: "Read sensitive file untrusted"
    # carries no process.pid, so the stage reads it from the trigger record (seen on the real
    # kernel: the attacker's C2 call after the read passed the bar in the tainted window).
    def attack(uid: str, _: int) -> ExportLogsServiceRequest:
        req = ev.batch(ev.pod(uid), ev.open_("/etc/shadow", "O_RDONLY", pid=200),
                       ev.connect("10.9.9.9", 4444, pid=200))
        ev.rule_detection(req, "Read sensitive file untrusted", with_pid=False)
        return req
    stage = learned_with(attack)
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == TAINTED
    seen = {v for k, v, _, _ in p.quarantine} | {v for vs in p.spec.values() for v in vs}
    assert "service:shop/db 5432/tcp" in seen  # the benign part is there for the reviewer
    assert not {"10.9.9.9 4444/tcp", "/etc/shadow"} & seen


def test_a_rule_hit_below_warning_does_not_taint() -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(CONFIG, clock.clock)
    req = benign("a")
    ev.rule_detection(req, "Some notice", severity=10)
    stage.process(req)
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == LEARNING and p.taints == []


def test_a_flood_of_junk_marks_the_profile_partial_and_real_deviations_still_alert() -> None:
    clock = FakeTime(ev.T0)
    cfg = Config(learn_seconds=800, bucket_seconds=100, max_new_per_bucket=50, max_entries=64)
    stage = ProfilesStage(cfg, clock.clock)
    before = sample("otelguard_profile_overflow_total", reason="bucket_growth")
    for bucket in range(2):
        for uid in PODS:
            stage.process(benign(uid, bucket))
        junk = [ev.open_(f"/data/d{i}/f{bucket}") for i in range(400)]  # distinct dirs
        stage.process(ev.batch(ev.pod("a"), *junk))
        clock.now += cfg.bucket_seconds
    reports = [a for b in stage.drain(False) for a, _ in ev.detections(b)]
    assert [r[S.SECURITY_RULE_NAME] for r in reports] == ["Behaviour profile partial"]
    assert stage.drain(False) == []  # reported once, counted always
    p = stage.profile(WORKLOAD)
    assert p is not None and p.partial
    assert p.overflow > 600
    assert sample("otelguard_profile_overflow_total", reason="bucket_growth") - before \
        == p.overflow
    clock.now = ev.T0 + cfg.learn_seconds
    stage.sync()
    stage.approve(WORKLOAD, "alice")
    assert dets(stage, benign("a", 7)) == []
    found = dets(stage, ev.batch(ev.pod("a"), ev.open_("/data/d399/f9"), ev.dns("c2.example")))
    assert [d[S.ANOMALY_KIND] for d in found] == ["file_write", "dns"]


def test_learning_ends_early_when_nothing_new_for_a_quarter_of_the_window() -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(CONFIG, clock.clock)
    for bucket in range(3):
        for uid in PODS:
            stage.process(benign(uid, 0))  # the same names: nothing new after the first pass
        clock.now += CONFIG.bucket_seconds
    clock.now = ev.T0 + CONFIG.learn_seconds / 2 - 1
    stage.sync()
    p = stage.profile(WORKLOAD)
    assert p is not None and p.state == LEARNING
    clock.now = ev.T0 + CONFIG.learn_seconds / 2 + 1
    stage.sync()
    assert p.state == LEARNED and p.ended == clock.now


def test_max_profiles_bounds_the_workloads_profiled() -> None:
    clock = FakeTime(ev.T0)
    stage = ProfilesStage(Config(max_profiles=2), clock.clock)
    before = sample("otelguard_profile_overflow_total", reason="profiles")
    for name in ("a1", "a2", "a3"):
        stage.process(ev.batch(ev.pod("a", deployment=name), ev.dns("x.example")))
    assert len(stage.workloads()) == 2
    assert sample("otelguard_profile_overflow_total", reason="profiles") - before == 1


def test_span_batches_and_unread_events_pass_untouched() -> None:
    stage = ProfilesStage(CONFIG, FakeTime(ev.T0).clock)
    req = ev.batch(ev.pod("a"), ev.fork(), ev.fork())
    before = req.SerializeToString()
    assert stage.process(req).SerializeToString() == before
    assert stage.workloads() == []
    assert len(list(iter_log_records(req))) == 2
