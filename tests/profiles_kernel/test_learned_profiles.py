"""Issue 12's acceptance on the real kernel: the shop's benign workloads, learned over two
buckets from two replicas each and approved (conftest.py, learning.py), replayed for a held-out
period raise no deviation; each of the deviations below is detected within 2 s of its action
(measured from the moment the workload printed before acting to the moment the detection left
the pipeline, the agent's batching included) with the right rule name and anomaly kind; near
misses stay quiet. What the Falco rules alone fired on each deviation is printed (run with -s)
for docs/profiles.md#falco-rules-and-profiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pytest

from otelguard import semconv as S
from otelguard.processors.profiles.model import APPROVED
from otelguard.processors.profiles.observe import (
    CAPABILITY, DNS, EGRESS, FILE_READ, FILE_WRITE, LISTEN, PROCESS, UNTRUSTED_EXEC,
)
from tests.profiles_kernel.workloads import Shop

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(900)]

LATENCY_S = 2.0
BENIGN = ("web", "report", "resolver")


@dataclass(frozen=True)
class Deviation:
    name: str
    workload: str  # the owner's name in the shop
    kind: str
    value: Callable[[Shop], Callable[[str], bool]]  # shop -> predicate on the anomaly value
    steps: Sequence[str] = ()
    launch: Sequence[str] = ()  # another command through the container's launcher
    shell: str = ""  # appended to the report job's script

    def __str__(self) -> str:
        return self.name


def exact(text: str) -> Callable[[Shop], Callable[[str], bool]]:
    return lambda shop: lambda v: v == text.format(**shop.config)


def prefix(text: str) -> Callable[[Shop], Callable[[str], bool]]:
    return lambda shop: lambda v: v.startswith(text.format(**shop.config))


DEVIATIONS = [
    Deviation("new binary", "web", PROCESS, prefix("/usr/bin/id|"), ["new_binary"]),
    Deviation("shell in a never-shell container", "web", PROCESS, prefix("/usr/bin/dash|"),
              ["shell"]),
    Deviation("new egress IP", "web", EGRESS, exact("127.0.0.9 {db_port}/tcp"),
              ["egress_new_ip"]),
    Deviation("new egress port", "web", EGRESS, exact("127.0.0.1 {alt_port}/tcp"),
              ["egress_new_port"]),
    Deviation("egress outside the cluster", "web", EGRESS, exact("203.0.113.7 443/udp"),
              ["egress_outside"]),
    Deviation("new listen port", "web", LISTEN, exact("{new_port}/tcp"), ["listen_new_port"]),
    Deviation("new capability CAP_NET_RAW", "web", CAPABILITY, exact("CAP_NET_RAW"),
              ["cap_net_raw"]),
    Deviation("new capability CAP_SYS_ADMIN", "web", CAPABILITY, exact("CAP_SYS_ADMIN"),
              ["cap_sys_admin"]),
    Deviation("write under /etc", "web", FILE_WRITE, exact("/etc/hosts"), ["write_etc"]),
    Deviation("write in a new directory", "web", FILE_WRITE, prefix("{data}/web/drop/"),
              ["write_new_dir"]),
    Deviation("exec from memory (memfd)", "web", UNTRUSTED_EXEC, lambda shop: lambda v: True,
              ["memfd_exec"]),
    Deviation("exec from the writable layer", "web", UNTRUSTED_EXEC, exact("/payload"),
              ["overlay_exec"]),
    Deviation("network tool", "web", PROCESS, prefix("/usr/bin/curl|"), ["network_tool"]),
    Deviation("package manager", "web", PROCESS, prefix("/usr/bin/dpkg|"),
              ["package_manager"]),
    Deviation("service-account token read", "web", FILE_READ,
              lambda shop: lambda v: v.endswith("/kubernetes.io/serviceaccount/token"),
              ["sa_token_read"]),
    Deviation("/etc/shadow read", "web", FILE_READ, exact("/etc/shadow"), ["shadow_read"]),
    Deviation("new DNS name", "resolver", DNS, exact("exfil.attacker.example"),
              ["dns_new_name"]),
    Deviation("new DNS name under a learned domain", "resolver", DNS,
              exact("vault.shop.svc.cluster.local"), ["dns_new_sibling"]),
    Deviation("known binary with a new parent", "report", PROCESS,
              lambda shop: lambda v: v.startswith("/usr/bin/gzip|") and "/tini|" in v,
              launch=["/usr/bin/gzip", "-c", "/etc/hostname"]),
    Deviation("new binary in the cron job", "report", PROCESS, prefix("/usr/bin/id|/usr/bin/dash|"),
              shell="id"),
]


def test_learning_saw_everything_and_the_benign_profiles_were_approved_clean(
        shop: Shop) -> None:
    assert shop.learning_losses == 0, "the sensor lost records while the shop learned"
    for name in BENIGN:
        w = shop.replicas[name][0].workload
        p = shop.profiles.profile(w)
        assert p is not None and p.state == APPROVED and p.enforcing, w
        assert not p.taints and not p.partial, (w, p.taints, p.overflow)
    web = shop.profiles.profile(shop.replicas["web"][0].workload)
    assert web is not None
    c = shop.config
    assert f"{c['web_port']}/tcp" in web.spec[LISTEN]
    assert f"127.0.0.1 {c['db_port']}/tcp" in web.spec[EGRESS]
    assert f"{c['data']}/web/uploads/*" in web.spec[FILE_WRITE]  # 12 random names collapsed
    assert any(v.startswith("/usr/bin/gzip|") for v in web.spec[PROCESS])
    resolver = shop.profiles.profile(shop.replicas["resolver"][0].workload)
    assert resolver is not None
    assert sorted(resolver.spec[DNS]) == ["api.payments.example", "db.shop.svc.cluster.local"]
    # no rule fired on the benign workloads while they learned
    hits = [(r.replica.name, d.attrs[S.SECURITY_RULE_NAME]) for r in shop.learning_runs
            if r.replica.name in BENIGN for d in r.rule_hits()]
    assert hits == []


def test_held_out_replay_of_the_benign_workloads_raises_nothing(shop: Shop) -> None:
    runs = [shop.run(r) for name in BENIGN for r in shop.replicas[name]]
    runs.append(shop.run(shop.new_replica("web")))  # a scale-up after approval
    for run in runs:
        assert run.returncode == 0, run.stderr
        shop.wait_detections(run, lambda r: False, 1.0)  # late detections, if any
    found = [(run.replica.name, d.attrs[S.ANOMALY_KIND], d.attrs[S.ANOMALY_VALUE])
             for run in runs for d in run.deviations()]
    assert found == [], learned_evidence(shop, {name for name, _, _ in found})


def learned_evidence(shop: Shop, names: set[str]) -> dict[str, object]:
    """What the learning window kept of each workload in ``names``: its allowed entries and its
    quarantine with each entry's reason, buckets and instances (why a value is not allowed)."""
    out: dict[str, object] = {}
    for name in sorted(names):
        p = shop.profiles.profile(shop.replicas[name][0].workload)
        if p is None:
            out[name] = None
            continue
        out[name] = {"spec": p.spec, "quarantine": [
            (kind, value, reason, list(e.buckets), list(e.instances))
            for kind, value, e, reason in p.quarantine]}
    return out


def test_near_misses_stay_quiet(shop: Shop) -> None:
    web = shop.run(shop.replicas["web"][1], ["gzip_other_path", "db_again"])
    resolver = shop.run(shop.replicas["resolver"][1], ["dns_learned_spelling"])
    for run in (web, resolver):
        assert run.returncode == 0, run.stderr
        shop.wait_detections(run, lambda r: False, 1.0)
    assert [d.attrs[S.ANOMALY_VALUE] for d in web.deviations() + resolver.deviations()] == []


@pytest.mark.parametrize("case", DEVIATIONS, ids=str)
def test_deviation_is_detected_within_2s(shop: Shop, case: Deviation) -> None:
    run, d, latency = shop.expect_deviation(shop.replicas[case.workload][0], case.kind,
                                            case.value(shop), case.steps, case.launch,
                                            case.shell)
    assert 0 < latency <= LATENCY_S, latency
    falco = sorted({str(h.attrs[S.SECURITY_RULE_NAME]) for h in run.rule_hits()})
    print(f"\nDEVIATION {case.name!r}: {case.kind} {d.attrs[S.ANOMALY_VALUE]!r} in "
          f"{latency * 1000:.0f} ms; rules alone: {falco}")
