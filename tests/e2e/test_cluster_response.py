"""Response with a human in the loop on the real one-node cluster (docs/response.md#in-the-chart).

The session's chart install (tests/support/cluster_release.py: response enabled, two `approve`
policies on the reverse shell's socket redirect) and its attacking pod: ``nc -e /bin/sh`` to a
listener of this test, then a connection to that listener every 0.3 s. Asserted:

- two ResponseRequest objects appear Proposed, citing the detection (its uid, found in Loki):
  block the reverse shell's peer (node action, the agent's) and isolate the pod (the processor's);
- nothing changes before approval: the pod still connects, no NetworkPolicy, no label;
- ``otelguard respond approve ID --kube`` -> the nft block holds in the pod's network namespace
  (the listener sees no connection; a connection from the pod is refused, measured) and the
  NetworkPolicy exists selecting only that pod (the bridge CNI does not enforce it: the object
  is what is checked);
- at the ttl both are reverted: connections resume, the NetworkPolicy and the label are gone;
- ``otelguard audit verify --loki`` verifies the chains (the processor's and the agent's).

Prints detection -> proposal and approval -> effect (docs/benchmarks.md#response-on-the-cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from otelguard import semconv as sc
from tests.support.cluster_release import (
    PROBE_SECONDS, REDIRECT_RULE, RESPONSE_TTL_SECONDS, ReverseShellListener, describe, label,
)
from tests.support.node import Node
from tests.support.polling import wait_until
from tests.support.stack import Jaeger, Loki

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.kernel, pytest.mark.timeout(900)]

OTELGUARD = str(Path(sys.executable).parent / "otelguard")
SRC = str(Path(__file__).resolve().parents[2] / "src")
POLICIES = ("block-reverse-shell-peer", "isolate-reverse-shell-pod")


def otelguard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([OTELGUARD, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def requests_for(node: Node, namespace: str, pod: str) -> dict[str, dict[str, Any]]:
    """policy -> the request (status.request) whose target is ``pod``."""
    out = node.kubectl("-n", namespace, "get", "responserequests", "-o", "json").stdout
    found = {}
    for obj in json.loads(out)["items"]:
        raw = (obj.get("status") or {}).get("request")
        req = json.loads(raw) if isinstance(raw, str) else raw
        if req and req["target"].get("pod") == pod:
            found[req["policy"]] = req
    return found


def transition_at(req: dict[str, Any], state: str) -> float:
    return float(next(t["at"] for t in req["history"] if t["to"] == state))


def netpols(node: Node, namespace: str) -> list[dict[str, Any]]:
    out = node.kubectl("-n", namespace, "get", "networkpolicies", "-o", "json").stdout
    return list(json.loads(out)["items"])


def pod_labels(node: Node, namespace: str, pod: str) -> dict[str, str]:
    out = node.kubectl("-n", namespace, "get", "pod", pod, "-o", "json").stdout
    return dict(json.loads(out)["metadata"].get("labels") or {})


def connect_from_pod(node: Node, attack: dict[str, Any]) -> tuple[int, float]:
    """(exit code of nc to the listener from inside the pod, seconds it took)."""
    listener: ReverseShellListener = attack["listener"]
    t = time.monotonic()
    res = node.kubectl("-n", attack["namespace"], "exec", attack["pod"], "--", "/bin/nc", "-w",
                       "3", node.host_ip, str(listener.port), check=False, input="")
    return res.returncode, time.monotonic() - t


@pytest.fixture(scope="module")
def proposed(node: Node, release: str, attack: dict[str, Any],
             cluster_backends: tuple[Loki, Jaeger]) -> dict[str, dict[str, Any]]:
    def both() -> bool:
        return set(requests_for(node, release, attack["pod"])) >= set(POLICIES)
    if not wait_until(both, 120):
        loki, _ = cluster_backends
        q = f'{{k8s_namespace_name="{attack["namespace"]}", otelguard_stream="detection"}}'
        rules = sorted({" ".join(f"{k}={s['stream'].get(label(k), '-')}" for k in (
            sc.SECURITY_RULE_NAME, sc.NETWORK_PEER_ADDRESS, sc.K8S_NODE_NAME, sc.SENDER_NODE,
            sc.SENDER_VERIFIED)) for s in loki.query_range(q, since_s=900)["result"]})
        logs = node.kubectl("-n", release, "logs", "--tail=400", "-l",
                            "app.kubernetes.io/component=processor", check=False).stdout
        pytest.fail(f"no proposals for {attack['pod']}: "
                    f"{node.kubectl('-n', release, 'get', 'rr', check=False).stdout}\n"
                    f"detections in Loki: {rules}\nprocessor: "
                    + "\n".join(ln for ln in logs.splitlines() if "respon" in ln))
    return requests_for(node, release, attack["pod"])


def test_proposals_cite_the_detection_and_change_nothing(
        node: Node, release: str, attack: dict[str, Any], proposed: dict[str, dict[str, Any]],
        cluster_backends: tuple[Loki, Jaeger]) -> None:
    listener: ReverseShellListener = attack["listener"]
    block, isolate = (proposed[p] for p in POLICIES)
    for req in (block, isolate):
        assert req["state"] == "Proposed" and req["mode"] == "approve", req["state"]
        assert req["trigger"]["source"] == "detection"
        assert req["trigger"]["summary"] == REDIRECT_RULE
        assert req["target"]["namespace"] == attack["namespace"]
        assert req["target"]["container_id"] == attack["container_id"]
    assert (block["target"]["peer_address"], block["target"]["peer_port"]) == (
        node.host_ip, listener.port)
    assert block["node"] == node.name
    assert f"ip daddr {node.host_ip} tcp dport {listener.port} reject with tcp reset" in \
        block["steps"][0]["change"]["diff"]
    assert "otelguard.dev/isolate" in isolate["steps"][0]["change"]["diff"]
    assert attack["uid"] in isolate["steps"][0]["change"]["diff"]
    # the detection it cites is the one in Loki
    loki, _ = cluster_backends
    uid = block["trigger"]["uid"]
    q = f'{{otelguard_stream="detection"}} | {label(sc.LOG_RECORD_UID)}="{uid}"'
    assert wait_until(lambda: bool(loki.query_range(q, since_s=900)["result"]), 60), uid
    (stream, *_) = loki.query_range(q, since_s=900)["result"]
    created = transition_at(block, "Proposed")
    # observed_timestamp: when the processor's falco_rules stage made the detection (ns)
    made = int(stream["stream"].get("observed_timestamp", "0")) / 1e9
    print(f"detection -> proposal: the reverse shell's connection -> proposal "
          f"{created - listener.first_at:.2f} s; detection made -> proposal "
          f"{created - made:.2f} s" if made else "(no observed_timestamp in Loki)")
    # nothing changed: the pod still connects, no NetworkPolicy, no label
    now = time.time()
    assert wait_until(lambda: listener.accepted_between(now, time.time()) >= 2, 10)
    assert netpols(node, attack["namespace"]) == []
    assert "otelguard.dev/isolate" not in pod_labels(node, attack["namespace"], attack["pod"])


def test_approval_blocks_and_isolates_until_the_ttl_reverts(
        node: Node, release: str, attack: dict[str, Any], proposed: dict[str, dict[str, Any]]) -> None:
    listener: ReverseShellListener = attack["listener"]
    ns, pod = attack["namespace"], attack["pod"]
    kube = ["--kube", "--kubeconfig", str(node.kubeconfig), "--namespace", release]
    approved_at = {}
    for policy in POLICIES:
        approved_at[policy] = time.time()
        res = otelguard("respond", "approve", proposed[policy]["id"], *kube, "--by", "e2e",
                        "--reason", "reverse shell confirmed", "--wait", "20")
        assert res.returncode == 0, res.stdout + res.stderr

    def done() -> dict[str, dict[str, Any]]:
        got = requests_for(node, release, pod)
        return got if all(got[p]["state"] == "Done" for p in POLICIES) else {}
    assert wait_until(lambda: bool(done()), 30), (
        f"{ {p: r['state'] for p, r in requests_for(node, release, pod).items()} }\n"
        f"{node.kubectl('-n', release, 'logs', '--tail=40', '-l', 'app.kubernetes.io/component=agent', check=False).stdout}")
    reqs = done()
    for p in POLICIES:
        approved, done_at = transition_at(reqs[p], "Approved"), transition_at(reqs[p], "Done")
        print(f"approval -> effect, {p}: command started -> Done {done_at - approved_at[p]:.2f} s "
              f"(-> Approved {approved - approved_at[p]:.2f} s, Approved -> Done "
              f"{done_at - approved:.2f} s)")
    blocked_at = transition_at(reqs[POLICIES[0]], "Done")

    # the block holds: no connection reaches the listener, one from the pod is refused at once
    time.sleep(3)
    assert listener.accepted_between(blocked_at + PROBE_SECONDS + 1.0, time.time()) == 0
    code, took = connect_from_pod(node, attack)
    assert code != 0, "the pod still connects to the blocked peer"
    print(f"blocked: nc from the pod failed (exit {code}) in {took:.2f} s (kubectl exec included)")
    # the NetworkPolicy selects exactly this pod, which carries the label
    (pol,) = netpols(node, ns)
    assert pol["spec"]["podSelector"] == {"matchLabels": {"otelguard.dev/isolate": attack["uid"]}}
    assert sorted(pol["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert pod_labels(node, ns, pod)["otelguard.dev/isolate"] == attack["uid"]

    # the ttl reverts both
    def reverted() -> dict[str, dict[str, Any]]:
        got = requests_for(node, release, pod)
        return got if all(got[p]["state"] == "Reverted" for p in POLICIES) else {}
    assert wait_until(lambda: bool(reverted()), RESPONSE_TTL_SECONDS + 30), (
        {p: r["state"] for p, r in requests_for(node, release, pod).items()})
    reqs = reverted()
    for p in POLICIES:
        late = transition_at(reqs[p], "Reverted") - transition_at(reqs[p], "Done")
        assert RESPONSE_TTL_SECONDS <= late < RESPONSE_TTL_SECONDS + 10, (p, late)
        assert [t["by"] for t in reqs[p]["history"] if t["to"] == "Reverted"] == ["otelguard"]
    unblocked_at = transition_at(reqs[POLICIES[0]], "Reverted")
    assert wait_until(lambda: listener.accepted_between(unblocked_at, time.time()) >= 2, 10), (
        "connections did not resume after the revert")
    assert netpols(node, ns) == []
    assert "otelguard.dev/isolate" not in pod_labels(node, ns, pod)


def test_audit_chain_in_loki_verifies(
        release: str, attack: dict[str, Any], proposed: dict[str, dict[str, Any]],
        cluster_backends: tuple[Loki, Jaeger]) -> None:
    loki, _ = cluster_backends
    ids = {proposed[p]["id"] for p in POLICIES}
    q = f'{{otelguard_stream="audit"}} | {label(sc.RESPONSE_STATE_TO)}="Reverted"'

    def reverted_ids() -> set[str]:
        return {s["stream"].get(label(sc.RESPONSE_REQUEST_ID), "")
                for s in loki.query_range(q, since_s=900)["result"]}
    assert wait_until(lambda: ids <= reverted_ids(), 60), reverted_ids()
    res = otelguard("audit", "verify", "--loki", loki.url, "--since", "1h")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK: every record matches its hash" in res.stdout, res.stdout
    # the processor's chain and the agent's
    assert int(res.stdout.split(" record(s), ", 1)[1].split(" chain(s)", 1)[0]) >= 2, res.stdout
