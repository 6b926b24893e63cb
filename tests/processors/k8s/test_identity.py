"""k8s_attributes and verified senders (processors/k8s/identity.py), with the in-memory source:
the pod's attributes replace a verified sender's claims, an unverified sender keeps "never
overwrite", and a verified Resource claiming another node's pod is kept and detected."""

from __future__ import annotations

import uuid
from typing import Any

from otelguard import semconv
from otelguard.otlp.messages import PyValue, attrs_dict
from otelguard.processors.k8s import Config, K8sEnricher
from otelguard.processors.k8s.identity import PRIORITY, RULE, TECHNIQUE
from otelguard.processors.k8s.source import InMemorySource, Kind
from otelguard.processors.stage import Batch

from tests.support.metrics import sample
from tests.processors.k8s import objects as o

NS = "shop"
CID_A = "a" * 64  # a container of a pod on node-a
CID_B = "b" * 64  # a container of a pod on node-b


def _world() -> tuple[InMemorySource, dict[str, str]]:
    src = InMemorySource()
    uids = {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())}
    src.put(Kind.POD, o.running(o.pod(NS, "web-a", uid=uids["a"], node="node-a"), "10.1.0.5",
                                {"main": CID_A}))
    src.put(Kind.POD, o.running(o.pod("payments", "db-b", uid=uids["b"], node="node-b",
                                      service_account="db"), "10.1.0.6", {"main": CID_B}))
    return src, uids


def _enricher(src: InMemorySource) -> K8sEnricher:
    e = K8sEnricher(Config(wait_for_sync_seconds=0, hold_seconds=0), src)
    e.start()
    return e


def _resource(claims: dict[str, PyValue], sender: str = "", verified: bool = False
              ) -> dict[str, PyValue]:
    attrs = dict(claims)
    if sender:
        attrs[semconv.SENDER_NODE] = sender
        attrs[semconv.SENDER_VERIFIED] = verified
    return attrs


def _detections(batch: Batch) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(attrs_dict(rl.resource.attributes), attrs_dict(rec.attributes))
            for rl in batch.resource_logs  # type: ignore[union-attr]
            for sl in rl.scope_logs for rec in sl.log_records
            if rec.event_name == semconv.EV_DETECTION]


FORGED_CLAIMS: dict[str, PyValue] = {
    semconv.K8S_NAMESPACE_NAME: "kube-system", semconv.K8S_POD_NAME: "fake",
    semconv.K8S_DEPLOYMENT_NAME: "coredns", semconv.CONTAINER_IMAGE_NAME: "evil",
    semconv.K8S_NODE_NAME: "node-z",
}


def test_verified_sender_claims_are_replaced_by_the_pod() -> None:
    src, uids = _world()
    e = _enricher(src)
    res = _resource({semconv.CONTAINER_ID: CID_A, **FORGED_CLAIMS}, "node-a", verified=True)
    batch = e.process(o.logs((res, [{semconv.PROCESS_PID: 1}])))
    a = attrs_dict(batch.resource_logs[0].resource.attributes)  # type: ignore[union-attr]
    assert a[semconv.K8S_NAMESPACE_NAME] == NS
    assert a[semconv.K8S_POD_NAME] == "web-a"
    assert a[semconv.K8S_POD_UID] == uids["a"]
    assert a[semconv.K8S_NODE_NAME] == "node-a"
    assert semconv.K8S_DEPLOYMENT_NAME not in a  # a claim the pod does not back is removed
    assert a[semconv.CONTAINER_IMAGE_NAME] == "nginx"
    assert a[semconv.CONTAINER_ID] == CID_A
    assert not _detections(batch)  # its own node's pod


def test_unverified_sender_claims_stand() -> None:
    src, _ = _world()
    e = _enricher(src)
    for res in (_resource({semconv.CONTAINER_ID: CID_A, **FORGED_CLAIMS}),
                _resource({semconv.CONTAINER_ID: CID_B, **FORGED_CLAIMS}, "node-a",
                          verified=False)):
        batch = e.process(o.logs((res, [{semconv.PROCESS_PID: 1}])))
        a = attrs_dict(batch.resource_logs[0].resource.attributes)  # type: ignore[union-attr]
        assert a[semconv.K8S_NAMESPACE_NAME] == "kube-system"
        assert a[semconv.K8S_DEPLOYMENT_NAME] == "coredns"
        assert not _detections(batch)  # no verified node to compare with


def test_verified_claim_of_another_nodes_pod_is_kept_and_detected() -> None:
    src, uids = _world()
    e = _enricher(src)
    before = sample("otelguard_detections_total", rule=RULE, priority=PRIORITY,
                    tactic="defense_evasion", k8s_namespace_name="payments", workload="")
    seen: set[str] = set()
    for claim in ({semconv.CONTAINER_ID: CID_B}, {semconv.K8S_POD_UID: uids["b"]}):
        res = _resource({**claim, **FORGED_CLAIMS}, "node-a", verified=True)
        batch = e.process(o.logs((res, [{semconv.PROCESS_PID: 1,
                                        semconv.LOG_RECORD_UID: "u-1"}])))
        kept = attrs_dict(batch.resource_logs[0].resource.attributes)  # type: ignore[union-attr]
        assert kept[semconv.K8S_POD_NAME] == "db-b" and kept[semconv.K8S_NODE_NAME] == "node-b"
        found = _detections(batch)
        assert len(found) == 1
        res_attrs, rec = found[0]
        assert res_attrs[semconv.STREAM] == semconv.STREAM_DETECTION
        assert res_attrs[semconv.K8S_NODE_NAME] == "node-b"
        assert rec[semconv.SECURITY_RULE_NAME] == RULE
        assert rec[semconv.SECURITY_RULE_PRIORITY] == "CRITICAL"
        assert rec[semconv.THREAT_TECHNIQUE_ID] == [TECHNIQUE]
        assert rec[semconv.THREAT_TACTIC_NAME] == ["defense_evasion"]
        assert rec[semconv.SENDER_NODE] == "node-a"
        assert rec[semconv.TRIGGER_RECORD_UID] == "u-1"
        seen.add(rec[semconv.LOG_RECORD_UID])
    assert len(seen) == 1  # same trigger uid, same sender: the same detection (a retry)
    assert sample("otelguard_detections_total", rule=RULE, priority=PRIORITY,
                  tactic="defense_evasion", k8s_namespace_name="payments",
                  workload="") == before + 2


def test_a_detection_from_a_spans_batch_leaves_with_drain() -> None:
    src, _ = _world()
    e = _enricher(src)
    res = _resource({semconv.CONTAINER_ID: CID_B}, "node-a", verified=True)
    e.process(o.spans((res, [{semconv.PROCESS_PID: 1}])))
    out = e.drain(final=False)
    assert [len(_detections(b)) for b in out] == [1]
    assert e.drain(final=False) == []


def test_pod_ip_match_is_not_a_node_claim() -> None:
    src, _ = _world()
    e = _enricher(src)
    res = _resource({semconv.K8S_POD_IP: "10.1.0.6"}, "node-a", verified=True)
    batch = e.process(o.logs((res, [{semconv.PROCESS_PID: 1}])))
    assert not _detections(batch)
